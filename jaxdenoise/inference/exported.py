"""The exported-model format (``.jaxdn``): what a file holds, and reading it (``inference.export`` writes it).

The file (``.jaxdn``) is a zip archive of three members, and of the run's model card when it has one:

- ``info.json``: ``format`` (``FORMAT``), the model's facts (``export.model_info``: model, parameters,
  stride, input channels, training noise, ...), the platforms it was lowered for and its validation scores;
- ``function.bin``: the denoiser serialised by ``jax.export``, its weights inside as constants:
  ``float32 [B, H, W, C] -> float32 [B, H, W, 3]`` in [0, 1] with B, H and W symbolic (H and W multiples of
  the stride; C = 3, or 4 for a non-blind model whose last channel is the noise-level map);
- ``params.msgpack``: the same weights as flax's msgpack (``flax.serialization``), the nested dict of the
  model's ``params``: what ``--config.init_from=FILE.jaxdn`` (or ``zoo:NAME``) starts a training run from;
- ``MODEL_CARD.md`` and ``model_card.json`` (``model_card``): the run's data, noise, steps, hardware and
  evaluation tables, so that the card travels with the model.

Without this project, flax or orbax installed::

    import json, zipfile
    import numpy as np
    from jax import export
    with zipfile.ZipFile("model.jaxdn") as z:
        info = json.loads(z.read("info.json"))
        fn = export.deserialize(bytearray(z.read("function.bin")))
    out = np.asarray(fn.call(x[None]))[0]   # x: float32 [H, W, 3] in [0, 1], H and W multiples of info["stride"]

``jaxdenoise.load("model.jaxdn")`` reads it into a ``Denoiser`` (padding, tiles, noise-level map).
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, Optional

import numpy as np

from jaxdenoise import marks
from jaxdenoise.inference.denoiser import Denoiser, Geometry, temp_bytes

FORMAT = marks.EXPORT_FORMAT
INFO, FUNCTION, CARD_MD, CARD_JSON = marks.EXPORT_HEADER, "function.bin", "MODEL_CARD.md", "model_card.json"
PARAMS = "params.msgpack"


# header fields a reader relies on: name -> (type, smallest value)
_REQUIRED = {"stride": (int, 1), "in_channels": (int, 3), "receptive_field": (int, 1)}


def _check_header(path: str, header) -> Dict[str, Any]:
    """The header, or a one-line ValueError naming the first field that is missing or out of range."""
    if not isinstance(header, dict):
        raise ValueError(f"{path}: {INFO} is not a JSON object (damaged file)")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown export format {header.get('format')!r} (this version reads {FORMAT})")
    for name, (kind, least) in _REQUIRED.items():
        v = header.get(name)
        if not isinstance(v, kind) or isinstance(v, bool) or v < least:
            raise ValueError(f"{path}: {INFO} field {name!r} is {v!r}, not an integer >= {least} (damaged file)")
    if header["in_channels"] not in (3, 4):
        raise ValueError(f"{path}: {INFO} field 'in_channels' is {header['in_channels']}, not 3 or 4 (damaged file)")
    return header


def read(path: str):
    """(header dict, ``jax.export.Exported``) of a ``.jaxdn`` file; one-line ValueError when it is not one, or
    is damaged (a header field missing or out of range, a function that does not deserialise or does not
    take ``[B, H, W, in_channels]``)."""
    from jax import export
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read(INFO))
            blob = z.read(FUNCTION)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path} is not an exported jaxdenoise model ({type(e).__name__}: {e})") from None
    header = _check_header(path, header)
    try:
        fn = export.deserialize(bytearray(blob))
        shape = fn.in_avals[0].shape
        fn.mlir_module()  # the StableHLO itself: damaged bytes fail here, not at the first call
    except Exception as e:  # flatbuffers / XLA errors of every kind for damaged bytes
        raise ValueError(f"{path}: {FUNCTION} cannot be read ({type(e).__name__}; damaged file)") from None
    if len(fn.in_avals) != 1 or len(shape) != 4 or shape[-1] != header["in_channels"]:
        raise ValueError(f"{path}: {FUNCTION} does not take [B, H, W, {header['in_channels']}] images (damaged file)")
    return header, fn


def read_params(path: str) -> Dict[str, Any]:
    """The weights a ``.jaxdn`` file carries (the ``PARAMS`` member: a nested dict of numpy arrays); one-line
    ValueError when the file is not one, or carries none (an export written before weights were kept)."""
    from flax import serialization
    try:
        with zipfile.ZipFile(path) as z:
            if PARAMS not in z.namelist():
                raise ValueError(f"{path} carries no weights ({PARAMS}): export it again with this version")
            return serialization.msgpack_restore(z.read(PARAMS))
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not an exported jaxdenoise model ({type(e).__name__}: {e})") from None
    except Exception as e:  # msgpack's own errors for damaged bytes
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        raise ValueError(f"{path}: its weights ({PARAMS}) cannot be read ({type(e).__name__})") from None


def read_card(path: str) -> Optional[Dict[str, Any]]:
    """The model card facts a ``.jaxdn`` file carries (``model_card`` JSON), or None when it has none."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(CARD_JSON)) if CARD_JSON in z.namelist() else None
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not an exported jaxdenoise model ({type(e).__name__}: {e})") from None


def load_exported(path: str, **kw):
    """A ``Denoiser`` running an exported file (no flax, no checkpoint)."""
    import jax
    header, exported = read(path)
    call = jax.jit(exported.call)
    header = dict(header, source=os.path.abspath(path))
    forward = lambda x: call(np.asarray(x, np.float32))
    forward.temp_bytes = lambda shape: temp_bytes(exported.call, shape)
    geometry = Geometry(header["stride"], header["in_channels"], header["receptive_field"])
    return Denoiser(forward, geometry, info=header, **kw)
