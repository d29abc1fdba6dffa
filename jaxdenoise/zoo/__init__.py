"""Trained denoisers shipped inside the package: ``jaxdenoise.load("photos")`` works offline after ``pip install``.

Each entry is an exported model (``jaxdenoise.inference.export``: ``NAME.jaxdn``, the function and its weights, with
its model card inside) and its card for a person to read (``NAME.md``: data and its terms, noise, steps,
hardware, the measured tables), both in this folder. ``python scripts/build_zoo.py --name NAME --workdir W``
(``scripts/tools/zoo_build.py``) writes them from a trained run; ``docs/quality.md`` ("Model zoo") has the commands and numbers.

    import jaxdenoise
    den = jaxdenoise.load("photos")      # a name of MODELS (a path of that name, when one exists, wins)
    clean = den(noisy)                   # H x W x 3, uint8 or float in [0, 1]; the same dtype back
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List

from jaxdenoise import model_card
from jaxdenoise.inference import exported

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
    facts = exported.read_card(path(name))
    if facts is None:
        raise ValueError(f"zoo model {name!r} carries no model card: rebuild it with scripts/build_zoo.py")
    return model_card.markdown(facts)
