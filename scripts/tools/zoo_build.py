"""Maintainers: write a zoo entry (``jaxdenoise/zoo/NAME.jaxdn`` and ``NAME.md``) from a trained run
(``scripts/build_zoo.py``). The only code that writes into the package folder; the library only reads the
zoo (``jaxdenoise.zoo``)."""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Optional

from jaxdenoise import evaluate, fsutil, model_card, zoo
from jaxdenoise.inference import export, exported


def _portable(card: Dict[str, Any]) -> Dict[str, Any]:
    """The card with this machine's absolute paths cut to their last two parts (``/home/u/data/bsds400`` ->
    ``data/bsds400``): a shipped card names folders, not someone's home directory."""
    text = json.dumps(card)
    return json.loads(re.sub(r'/(?:[^/\s,()"]+/)*([^/\s,()"]+/[^/\s,()"]+)', r"\1", text))


def leftovers(name: str) -> List[str]:
    """Files an interrupted ``build`` of ``name`` left in ``zoo.folder()`` (its ``.new`` files and temporaries)."""
    pat = re.compile(rf"^(?:{re.escape(name)}\.(?:jaxdn|md)\.new|\.{re.escape(name)}\.(?:jaxdn|md)(?:\.new)?\..*\.tmp)$")
    return sorted(os.path.join(zoo.folder(), f) for f in os.listdir(zoo.folder()) if pat.match(f))


def build(name: str, workdir: str, checkpoint: str | int = "best", force: bool = False,
          score: Optional[Callable[[str, str], Dict[str, float]]] = None) -> Dict[str, Any]:
    """Write zoo model ``name`` (``NAME.jaxdn`` and ``NAME.md`` in ``zoo.folder()``) from a trained run: its
    checkpoint exported for CPU and CUDA, with a model card made from the run (its config, data, noise, steps,
    validation, lineage and evaluation tables; the entry adds only its name, summary and data terms).

    Before anything is replaced the new model is scored (``score``: default ``_score``, the run's validation
    split at its validation noise, PSNR of the noisy input, the new model and the entry it replaces) and
    refused, unless ``force``, when it does not beat its noisy input or scores below the shipped entry. The
    file and its card are written beside the old ones and swapped in (file first; the card beside it is a
    copy of the one inside, ``card``); a rerun first removes what an interrupted one left (``leftovers``).
    Raises ValueError (one line) for an unknown name, a run without a model card, a worse model, or a file
    over ``zoo.MAX_BYTES``."""
    if name not in zoo.MODELS:
        raise ValueError(f"--name {name!r}: the zoo has {', '.join(zoo.MODELS)} (add an entry to zoo.MODELS first)")
    if model_card.read(workdir) is None:
        raise ValueError(f"--workdir {workdir} has no model card: train it to its end first (train.py writes it)")
    for stale in leftovers(name):
        os.remove(stale)
    out = os.path.join(zoo.folder(), f"{name}.jaxdn")
    scores = (score or _score)(workdir, out if os.path.isfile(out) else "")
    if not force:
        if scores["model"] <= scores["noisy"]:
            raise ValueError(f"{workdir} scores {scores['model']:.2f} dB on its validation split, not above its noisy "
                             f"input ({scores['noisy']:.2f} dB): not shipped (--force to ship it anyway)")
        if scores.get("shipped") is not None and scores["model"] < scores["shipped"]:
            raise ValueError(f"{workdir} scores {scores['model']:.2f} dB on its validation split, below the shipped "
                             f"{name!r} ({scores['shipped']:.2f} dB on the same images): not shipped (--force)")
    card = _portable(model_card.read(workdir))
    entry = zoo.MODELS[name]
    extra = {"zoo": {"name": name, "summary": entry.summary, "terms": entry.terms,
                     "command": f"scripts/train.py with the config recorded in this card ({card['model']['name']}, "
                                f"{card['noise']['train']}, {card['training']['steps']} steps)",
                     "shipped_over": scores},
             "workdir": f"runs/{name}", "data": card["data"], "evaluations": card["evaluations"],
             "lineage": card.get("lineage", [])}
    new = out + ".new"
    try:
        data = export.workdir_bytes(workdir, checkpoint, card_extra=extra)  # not outputs.claim: it guards the
        fsutil.atomic_write(new, data)                                      # package folder from every other writer
        header, _ = exported.read(new)  # the file reads back whole before it replaces the shipped one
        size = os.path.getsize(new)
        if size > zoo.MAX_BYTES:
            raise ValueError(f"{name}: the exported model is {size / 2**20:.1f} MiB, over the zoo's "
                             f"{zoo.MAX_BYTES / 2**20:.0f} MiB: ship a smaller model")
        md = model_card.markdown(exported.read_card(new))
        fsutil.atomic_write(os.path.join(zoo.folder(), f"{name}.md.new"), md)
        os.replace(new, out)
        os.replace(os.path.join(zoo.folder(), f"{name}.md.new"), os.path.join(zoo.folder(), f"{name}.md"))
    finally:
        for f in (new, os.path.join(zoo.folder(), f"{name}.md.new")):
            if os.path.exists(f):
                os.remove(f)
    return dict(header, bytes=size, scores=scores)


def _score(workdir: str, shipped: str) -> Dict[str, float]:
    """PSNR on ``workdir``'s validation split at its validation noise: its noisy input, its model, and the
    shipped file ``shipped`` (when given) on the same noisy images."""
    rows = evaluate.run(workdir, "best", models=[shipped] if shipped else ())
    out = {"noisy": rows[0]["psnr"], "model": rows[1]["psnr"], "images": rows[0]["images"],
           "noise": rows[0]["noise"]}
    if shipped:
        out["shipped"] = rows[2]["psnr"]
    return out
