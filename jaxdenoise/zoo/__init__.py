"""Trained denoisers shipped inside the package: ``jaxdenoise.load("photos")`` works offline after ``pip install``.

Each entry is an exported model (``jaxdenoise.export``: ``NAME.jaxdn``, the function and its weights, with
its model card inside) and its card for a person to read (``NAME.md``: data and its terms, noise, steps,
hardware, the measured tables), both in this folder. ``python scripts/build_zoo.py --name NAME --workdir W``
writes them from a trained run; ``docs/quality.md`` ("Model zoo") has the commands and numbers.

    import jaxdenoise
    den = jaxdenoise.load("photos")      # a name of MODELS (a path of that name, when one exists, wins)
    clean = den(noisy)                   # H x W x 3, uint8 or float in [0, 1]; the same dtype back
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Dict, List, Optional

from jaxdenoise import fsutil

MAX_BYTES = 4 * 2**20  # each shipped file stays small enough for the wheel


@dataclasses.dataclass(frozen=True)
class Entry:
    """A zoo model: what it is for, the recipe it was trained with, and the terms of its training data."""
    summary: str
    command: str
    terms: str


MODELS: Dict[str, Entry] = {
    "faces": Entry(
        summary="blind denoiser for face photos (shot noise peak 5-60, Gaussian sigma 5-50)",
        command="python scripts/train.py --config configs/unet_faces.py --workdir runs/unet_faces "
                "--config.data.dir=faces_utk --config.num_epochs=6 --config.eval_every_epochs=6 "
                "--config.data.val_fraction=0.05",
        terms="UTKFace face photos: non-commercial research use only"),
    "photos": Entry(
        summary="blind denoiser for generic photos (shot noise peak 5-60, Gaussian sigma 5-50, clipped or not)",
        command="python scripts/train.py --config configs/unet_photos.py --workdir runs/unet_photos "
                "--config.data.dir=bsds400",
        terms="BSDS500 train+test photos (Berkeley): research and educational use"),
    "real": Entry(
        summary="blind denoiser for real camera photos (sensor noise through a camera pipeline, JPEG, and "
                "Gaussian noise)",
        command="python scripts/train.py --config configs/unet_real.py --workdir runs/unet_real "
                "--config.data.dir=bsds400,sun80",
        terms="BSDS500 (Berkeley) and Sun-Hays 80 photos: research and educational use"),
}


def names() -> List[str]:
    """The zoo's model names."""
    return list(MODELS)


def folder() -> str:
    """The folder holding the shipped files (inside the installed package)."""
    return os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
    """The ``.jaxdn`` file of zoo model ``name``; one-line ValueError for an unknown or missing one."""
    if name not in MODELS:
        raise ValueError(f"no zoo model {name!r}: the zoo has {', '.join(MODELS)}")
    p = os.path.join(folder(), f"{name}.jaxdn")
    if not os.path.isfile(p):
        raise ValueError(f"zoo model {name!r} is not in this installation ({p} is missing): "
                         f"reinstall jaxdenoise, or build it with scripts/build_zoo.py")
    return p


def card(name: str) -> str:
    """Zoo model ``name``'s model card (markdown), made from the card inside its file (``NAME.md`` beside it is
    a copy for people browsing the folder: after an interrupted ``build`` it may lag the file)."""
    from jaxdenoise import export, model_card
    facts = export.read_card(path(name))
    if facts is None:
        raise ValueError(f"zoo model {name!r} carries no model card: rebuild it with scripts/build_zoo.py")
    return model_card.markdown(facts)


def load(name: str, **kw):
    """A ``Denoiser`` running zoo model ``name`` (keyword arguments: ``Denoiser``'s)."""
    from jaxdenoise import export
    den = export.load_exported(path(name), **kw)
    den.info["zoo"] = name
    return den


def _portable(card: Dict[str, Any]) -> Dict[str, Any]:
    """The card with this machine's absolute paths cut to their last two parts (``/home/u/data/bsds400`` ->
    ``data/bsds400``): a shipped card names folders, not someone's home directory."""
    text = json.dumps(card)
    return json.loads(re.sub(r'/(?:[^/\s,()"]+/)*([^/\s,()"]+/[^/\s,()"]+)', r"\1", text))


def leftovers(name: str) -> List[str]:
    """Files an interrupted ``build`` of ``name`` left in ``folder()`` (its ``.new`` files and temporaries)."""
    pat = re.compile(rf"^(?:{re.escape(name)}\.(?:jaxdn|md)\.new|\.{re.escape(name)}\.(?:jaxdn|md)(?:\.new)?\..*\.tmp)$")
    return sorted(os.path.join(folder(), f) for f in os.listdir(folder()) if pat.match(f))


def build(name: str, workdir: str, checkpoint: str | int = "best", force: bool = False,
          score: Optional[Callable[[str, str], Dict[str, float]]] = None) -> Dict[str, Any]:
    """Write zoo model ``name`` (``NAME.jaxdn`` and ``NAME.md`` in ``folder()``) from a trained run: its
    checkpoint exported for CPU and CUDA, with a model card made from the run (its config, data, noise, steps,
    validation, lineage and evaluation tables; the entry adds only its name, summary and data terms).

    Before anything is replaced the new model is scored (``score``: default ``_score``, the run's validation
    split at its validation noise, PSNR of the noisy input, the new model and the entry it replaces) and
    refused, unless ``force``, when it does not beat its noisy input or scores below the shipped entry. The
    file and its card are written beside the old ones and swapped in (file first; the card beside it is a
    copy of the one inside, ``card``); a rerun first removes what an interrupted one left (``leftovers``).
    Raises ValueError (one line) for an unknown name, a run without a model card, a worse model, or a file
    over ``MAX_BYTES``."""
    from jaxdenoise import export, model_card
    if name not in MODELS:
        raise ValueError(f"--name {name!r}: the zoo has {', '.join(MODELS)} (add an entry to MODELS first)")
    if model_card.read(workdir) is None:
        raise ValueError(f"--workdir {workdir} has no model card: train it to its end first (train.py writes it)")
    for stale in leftovers(name):
        os.remove(stale)
    out = os.path.join(folder(), f"{name}.jaxdn")
    scores = (score or _score)(workdir, out if os.path.isfile(out) else "")
    if not force:
        if scores["model"] <= scores["noisy"]:
            raise ValueError(f"{workdir} scores {scores['model']:.2f} dB on its validation split, not above its noisy "
                             f"input ({scores['noisy']:.2f} dB): not shipped (--force to ship it anyway)")
        if scores.get("shipped") is not None and scores["model"] < scores["shipped"]:
            raise ValueError(f"{workdir} scores {scores['model']:.2f} dB on its validation split, below the shipped "
                             f"{name!r} ({scores['shipped']:.2f} dB on the same images): not shipped (--force)")
    card = _portable(model_card.read(workdir))
    entry = MODELS[name]
    extra = {"zoo": {"name": name, "summary": entry.summary, "terms": entry.terms,
                     "command": f"scripts/train.py with the config recorded in this card ({card['model']['name']}, "
                                f"{card['noise']['train']}, {card['training']['steps']} steps)",
                     "shipped_over": scores},
             "workdir": f"runs/{name}", "data": card["data"], "evaluations": card["evaluations"],
             "lineage": card.get("lineage", [])}
    new = out + ".new"
    try:
        header = export.export_workdir(workdir, new, checkpoint, overwrite=True, card_extra=extra)
        size = os.path.getsize(new)
        if size > MAX_BYTES:
            raise ValueError(f"{name}: the exported model is {size / 2**20:.1f} MiB, over the zoo's "
                             f"{MAX_BYTES / 2**20:.0f} MiB: ship a smaller model")
        md = model_card.markdown(export.read_card(new))
        fsutil.atomic_write(os.path.join(folder(), f"{name}.md.new"), md)
        os.replace(new, out)
        os.replace(os.path.join(folder(), f"{name}.md.new"), os.path.join(folder(), f"{name}.md"))
    finally:
        for f in (new, os.path.join(folder(), f"{name}.md.new")):
            if os.path.exists(f):
                os.remove(f)
    return dict(header, bytes=size, scores=scores)


def _score(workdir: str, shipped: str) -> Dict[str, float]:
    """PSNR on ``workdir``'s validation split at its validation noise: its noisy input, its model, and the
    shipped file ``shipped`` (when given) on the same noisy images."""
    from jaxdenoise import evaluate
    rows = evaluate.run(workdir, "best", models=[shipped] if shipped else ())
    out = {"noisy": rows[0]["psnr"], "model": rows[1]["psnr"], "images": rows[0]["images"],
           "noise": rows[0]["noise"]}
    if shipped:
        out["shipped"] = rows[2]["psnr"]
    return out
