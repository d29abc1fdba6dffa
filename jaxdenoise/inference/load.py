"""``load``: a ``Denoiser`` from a training workdir, an exported ``.jaxdn`` file or a zoo name; the one place
that reads checkpoints, exported files and the zoo together.

    den = jaxdenoise.load("runs/unet_faces")            # a workdir: its best checkpoint (EMA weights if kept)
    den = jaxdenoise.load("runs/unet_faces", "latest")  # or "best", or a step number
    den = jaxdenoise.load("model.jaxdn")                # an exported model (scripts/export.py)
    den = jaxdenoise.load("photos")                     # a zoo model ("zoo:photos" whatever lies in the folder)
"""
from __future__ import annotations

import os

from jaxdenoise import checkpointing, models, run_io, zoo
from jaxdenoise.inference import exported
from jaxdenoise.inference.denoiser import Denoiser, Geometry, make_apply
from jaxdenoise.inference.export import model_info


def load(source: str | os.PathLike, checkpoint: str | int = "best", **kw) -> Denoiser:
    """A ``Denoiser`` from a training workdir (``checkpoint``: "best", "latest" or a step; the EMA weights when
    the run kept them), from an exported model file (``scripts/export.py``: ``.jaxdn``), or a model of the zoo
    shipped with the package by name (``jaxdenoise.zoo``: "faces", "photos", "real"; a path of that name, when
    one exists, wins). Keyword arguments go to ``Denoiser`` (``max_pixels``, ``tile``, ``overlap``). Raises
    ValueError (one line; a ``checkpointing.CheckpointError`` for workdirs) when there is no such workdir,
    checkpoint, file or zoo model."""
    path = os.fspath(source)
    if path.startswith("zoo:"):  # a zoo name, whatever lies in the working folder
        return load_zoo(path[len("zoo:"):], **kw)
    if os.path.isfile(path):
        return exported.load_exported(path, **kw)
    if path in zoo.MODELS and os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"a folder named {path} (not a training workdir) is in the way of the zoo model {path!r}: "
                         f"use 'zoo:{path}'")
    if not os.path.lexists(path):
        if path in zoo.MODELS:
            return load_zoo(path, **kw)
        raise checkpointing.CheckpointError(f"{path} does not exist: not a training workdir, an exported .jaxdn file or a zoo "
                              f"model ({', '.join(zoo.MODELS)})")
    return load_run(path, checkpoint, **kw)


def load_run(workdir: str, checkpoint: str | int = "best", **kw) -> Denoiser:
    """``load`` for a training workdir only (what ``--workdir`` flags take): a file is a one-line
    ``CheckpointError`` ("is a file, not a training workdir"), not read as an exported model."""
    path = os.fspath(workdir)
    config, params, step, weights = checkpointing.load_params(path, checkpoint, with_kind=True)
    model = models.create(config.model, config.dtype)
    info = model_info(config, params, model, step=step, weights=weights, source=path)
    info["validation"] = run_io.last_validation(path)
    return Denoiser(make_apply(model, params), Geometry.of(model), info=info, **kw)


def load_zoo(name: str, **kw) -> Denoiser:
    """A ``Denoiser`` running zoo model ``name`` (keyword arguments: ``Denoiser``'s)."""
    den = exported.load_exported(zoo.path(name), **kw)
    den.info["zoo"] = name
    return den
