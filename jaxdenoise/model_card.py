"""The model card of a workdir: ``MODEL_CARD.md`` for a person, ``model_card.json`` with the same facts.

What the model is and how good it is: the model and its size, the data (folders, image counts, size mode),
the noise it was trained on and how (target, fixed or re-noised), the steps, time and hardware, the last
validation scores, and every ``evaluate.py`` table run on it since. ``train.py`` writes it at the end of
training; ``evaluate.py`` adds its tables (a table for the same data, noise and checkpoint replaces the older
one). Both files are written atomically, and only over files this module wrote (its marker): a card a
person wrote there is left as it is, with a warning.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from jaxdenoise import config as config_lib, fsutil, layout, marks

MARKER = marks.CARD_MARKER
WRITER = marks.WRITER


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def read(workdir: str) -> Optional[Dict[str, Any]]:
    """The card's JSON facts, or None when there is none (or it is not one of ours)."""
    try:
        with open(os.path.join(workdir, layout.MODEL_CARD_JSON)) as f:
            card = json.load(f)
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("written_by") == WRITER else None


def hardware() -> str:
    """``1 x cpu (AMD EPYC, 2 cores)``, ``1 x gpu (NVIDIA H200)``: what this process trains on."""
    import jax
    d = jax.devices()
    kind = d[0].device_kind
    if d[0].platform == "cpu":
        name = platform.processor() or ""
        try:
            with open("/proc/cpuinfo") as f:
                name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
        except OSError:
            pass
        kind = f"{name or 'cpu'}, {os.cpu_count()} cores"
    procs = f", {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{len(d)} x {d[0].platform} ({kind}){procs}"


def stage(card: Dict[str, Any]) -> Dict[str, Any]:
    """One line of a lineage: how the run a card describes was trained (what it started from, its data, noise,
    recipe, steps, wall time, hardware) and its last validation."""
    d, n, t = card["data"], card["noise"], card["training"]
    last = (card.get("validation") or [{}])[-1]
    return {"init": card.get("init_from") or "scratch", "data": d.get("folders"), "noise": n.get("train"),
            "loss": n.get("loss"), "optimizer": t.get("optimizer"), "batch": t.get("batch"), "patch": d.get("patch"),
            "steps": t.get("steps"), "wall_minutes": t.get("wall_minutes"), "hardware": t.get("hardware"),
            "eval_noise": n.get("eval"), "val_step": last.get("step"), "val_psnr": last.get("psnr"),
            "date": card.get("date")}


def facts(workdir: str, config, n_params: int, model, images: Tuple[Optional[int], Optional[int]] = (None, None),
          stores: Sequence[str] = (), later_at: Optional[int] = None,
          parent: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The card's facts from a run's config, its model and metrics.jsonl. images: (training, validation)
    image counts. later_at: None when this process ran the training (its hardware is the run's, its steps the
    last logged step); for a card made after training, the checkpoint's step (the card then says the hardware
    was not recorded). parent: the card of the model ``config.init_from`` started from (an exported file's):
    its lineage, then this run, make this card's ``lineage`` (every stage of the weights, first to last)."""
    trained_here, (n_train, n_val) = later_at is None, images
    from jaxdenoise import run_io
    try:
        rows = run_io.read_rows(workdir)
    except (FileNotFoundError, ValueError):
        rows = []
    evals = [r for r in rows if r.get("kind") == "eval"]
    d = config.data
    card = {
        "written_by": WRITER,
        "workdir": os.path.abspath(workdir),
        "init_from": config.get("init_from", ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "model": {"name": config.model.name, "fields": config.model.to_dict(), "parameters": n_params,
                  "dtype": config.dtype, "stride": model.stride, "receptive_field": model.receptive_field,
                  "blind": model.in_channels == 3},
        "data": {"source": d.source, "folders": d.dir or "built-in photos", "train_images": n_train,
                 "val_images": n_val, "val_dir": d.get("val_dir", ""), "size_mode": d.resize_mode, "size": d.size,
                 "patch": d.patch, "flips": d.flips, "rot90": d.rot90, "channels": d.channels,
                 "stores": list(stores)},
        "noise": {"train": config.noise, "eval": config.eval_noise or config.noise,
                  "setting": config_lib.noise_setting(config),
                  "target": config.get("target", "clean"), "loss": config.loss},
        "training": {"steps": later_at if later_at is not None else (rows[-1].get("step") if rows else None),
                     "epochs": config.num_epochs, "batch": config.batch_size,
                     "optimizer": f"{config.optimizer} lr {config.learning_rate:g} ({config.schedule})",
                     "ema_decay": config.ema_decay, "wall_minutes": round(max(
                         [float(r.get("wall_s", 0)) for r in rows], default=0.0) / 60, 1),
                     "hardware": hardware() if trained_here else "not recorded (card made after training)",
                     "jax": _jax_version() if trained_here else "not recorded"},
        "validation": [{k: r[k] for k in ("step", "epoch", "psnr", "ssim", "noisy_psnr", "noisy_ssim") if k in r}
                       for r in evals[-5:]],
        "evaluations": [],
    }
    before = (parent.get("lineage") or [stage(parent)]) if parent else []
    card["lineage"] = before + [stage(card)]
    return card


def _jax_version() -> str:
    import jax
    return jax.__version__


def write_after_training(workdir: str, card: Dict[str, Any]) -> None:
    """Write the card at the end of training, keeping the evaluations an earlier card holds."""
    old = read(workdir)
    if old:
        card["evaluations"] = old.get("evaluations", [])
    _write(workdir, card)


def add_evaluation(workdir: str, rows: List[Dict], *, data: str, checkpoint: str, noise: Sequence[str],
                   baselines: Sequence[str]) -> None:
    """Add an ``evaluate.py`` table to the workdir's card (a card is made from config.json and metrics.jsonl
    when the run has none). Never fails the evaluation: problems are warnings."""
    try:
        card = read(workdir) or _card_from_workdir(workdir)
        entry = {"data": data, "checkpoint": str(checkpoint), "noise": list(noise), "baselines": list(baselines),
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "hardware": hardware(), "rows": rows}
        key = lambda e: (e["data"], e["checkpoint"], tuple(e["noise"]))
        card["evaluations"] = [e for e in card.get("evaluations", []) if key(e) != key(entry)] + [entry]
        _write(workdir, card)
    except (OSError, ValueError) as e:
        _warn(f"model card of {workdir} not updated: {e}")


def _card_from_workdir(workdir: str) -> Dict[str, Any]:
    import jax
    from jaxdenoise import checkpointing, models
    config = checkpointing.read_run_config(workdir)
    model = models.create(config.model, config.dtype)
    _, params, step = checkpointing.load_params(workdir, "latest")
    return facts(workdir, config, sum(int(x.size) for x in jax.tree.leaves(params)), model, later_at=step)


def _ours(path: str, is_markdown: bool) -> bool:
    if not os.path.lexists(path):
        return True
    try:
        with open(path) as f:
            if is_markdown:
                return f.readline().strip() == MARKER
            return json.load(f).get("written_by") == WRITER
    except (OSError, ValueError, AttributeError):
        return False


def _write(workdir: str, card: Dict[str, Any]) -> None:
    for name, text, md in ((layout.MODEL_CARD_JSON, json.dumps(card, indent=1, default=str) + "\n", False),
                           (layout.MODEL_CARD_FILE, markdown(card), True)):
        path = os.path.join(workdir, name)
        if not _ours(path, md):
            _warn(f"{path} exists and jaxdenoise did not write it: left as it is")
            continue
        fsutil.atomic_write(path, text)


def _f(v, fmt="{:.2f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def markdown(card: Dict[str, Any]) -> str:
    """``MODEL_CARD.md`` from the card's facts."""
    m, d, n, t = card["model"], card["data"], card["noise"], card["training"]
    counts = (f"{d['train_images']} training / {d['val_images']} validation images"
              if d.get("train_images") is not None else "image counts not recorded")
    zoo = card.get("zoo")  # a model shipped in jaxdenoise/zoo (scripts/build_zoo.py): its name, terms and recipe
    title = f"jaxdenoise zoo model `{zoo['name']}`" if zoo else os.path.basename(card['workdir'].rstrip(os.sep))
    lines = [MARKER, f"# Model card: {title}", "", "| | |", "|---|---|"]
    if zoo:
        lines += [f"| what | {zoo['summary']} |", f"| recipe | `{zoo['command']}` |",
                  f"| data terms | {zoo['terms']} |"]
    lines += [f"| model | {m['name']}, {m['parameters']:,} parameters ({m['dtype']}), stride {m['stride']}, "
              f"receptive field {m['receptive_field']} px, {'blind' if m['blind'] else 'non-blind (noise-level map)'} |",
              f"| model fields | `{json.dumps(m['fields'], default=str)}` |",
              f"| data | {d['folders']}: {counts}; {d['size_mode']} {d['size']}"
              + (f", {d['patch']}x{d['patch']} patches" if d.get("patch") else "")
              + (", flips" if d.get("flips") else "") + (", rotations" if d.get("rot90") else "")
              + (", channel orders" if d.get("channels") else "")
              + (f"; validated on {d['val_dir']}" if d.get("val_dir") else "") + " |",
              f"| noise | `{n['train']}` ({n['setting']}), target `{n['target']}`, loss `{n['loss']}`; validated "
              f"at `{n['eval']}` |",
              f"| training | {t['steps']} steps ({t['epochs']} epochs), batch {t['batch']}, {t['optimizer']}, "
              f"EMA {t['ema_decay']:g} |",
              f"| time, hardware | {t['wall_minutes']} min wall on {t['hardware']}, jax {t['jax']} |", ""]
    if len(card.get("lineage") or []) > 1:
        lines += ["## Lineage: every stage of these weights", "",
                  "| stage | started from | data | noise, loss | optimizer, batch x patch | steps | wall min | hardware | "
                  "validation PSNR |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {i + 1} | {g.get('init')} | {g.get('data')} | `{g.get('noise')}`, {g.get('loss')} | "
                  f"{g.get('optimizer')}, {g.get('batch')} x {g.get('patch') or 'whole'} | {g.get('steps')} | "
                  f"{g.get('wall_minutes')} | {g.get('hardware')} | {_f(g.get('val_psnr'))} at `{g.get('eval_noise')}` |"
                  for i, g in enumerate(card["lineage"])]
        lines.append("")
    if card.get("validation"):
        lines += [f"## Validation (`{n['eval']}`)", "", "| step | epoch | PSNR | SSIM | noisy PSNR | noisy SSIM |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r.get('step')} | {r.get('epoch')} | {_f(r.get('psnr'))} | {_f(r.get('ssim'), '{:.4f}')} | "
                  f"{_f(r.get('noisy_psnr'))} | {_f(r.get('noisy_ssim'), '{:.4f}')} |" for r in card["validation"]]
        lines.append("")
    for e in card.get("evaluations", []):
        lines += [f"## Evaluation: {e['data']} (checkpoint {e['checkpoint']}, {e['date']}, {e['hardware']})", "",
                  "| noise | method | PSNR | SSIM | worst gain | s/MP | images |", "|---|---|---|---|---|---|---|"]
        lines += [f"| `{r.get('noise')}` | {r.get('method')} | {_f(r.get('psnr'))} | {_f(r.get('ssim'), '{:.4f}')} | "
                  f"{_f(r.get('min_gain'))} | {_f(r.get('sec_per_mp'), '{:.3f}')} | {r.get('images')} |"
                  for r in e["rows"]]
        lines.append("")
    load = (f"jaxdenoise.load({zoo['name']!r})" if zoo else
            f"jaxdenoise.load({card['workdir']!r})   # or an exported file: scripts/export.py")
    lines += ["## Use", "", "```python", "import jaxdenoise", f"den = {load}",
              "clean = den(noisy)                 # H x W x 3, uint8 or float in [0, 1]" if m["blind"] else
              "clean = den(noisy, noise_level=\"poisson:30\")   # non-blind: the photo's noise",
              "```", ""]
    return "\n".join(lines)
