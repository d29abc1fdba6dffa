"""Export a trained denoiser as a file that runs with ``jax`` and ``numpy`` alone (``scripts/export.py``).

The file (``.jaxdn``) is a zip archive of three members, and of the run's model card when it has one:

- ``info.json``: ``format`` (``FORMAT``), the model's facts (``denoiser.model_info``: model, parameters,
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

import io
import json
import os
import zipfile
from typing import Any, Dict, Optional, Sequence

import numpy as np

FORMAT = "jaxdenoise-export-1"
INFO, FUNCTION, CARD_MD, CARD_JSON = "info.json", "function.bin", "MODEL_CARD.md", "model_card.json"
PARAMS = "params.msgpack"
PLATFORMS = ("cpu", "cuda")  # lowered for both: the same file runs on a CPU machine and on an NVIDIA GPU


def export_bytes(config, params, model, info: Dict[str, Any], platforms: Sequence[str] = PLATFORMS,
                 card: Optional[Dict[str, Any]] = None) -> bytes:
    """The ``.jaxdn`` file's bytes for ``model`` with ``params`` (lowered once, for ``platforms``), with the
    model ``card`` (``model_card`` facts) when given. The header is ``info`` plus what a reader relies on,
    taken from the model itself (stride, input channels, receptive field)."""
    import jax
    import jax.numpy as jnp
    from jax import export

    from jaxdenoise.native import onednn

    s, c = model.stride, model.in_channels
    fn = jax.jit(lambda x: jnp.clip(model.apply({"params": params}, x), 0.0, 1.0))
    spec = jax.ShapeDtypeStruct(export.symbolic_shape(f"b, {s}*h, {s}*w, {c}"), jnp.float32)
    with onednn.xla_only():  # the file must run in any process: no handler of this one in it
        exported = export.export(fn, platforms=tuple(platforms))(spec)
    header = dict(info, stride=s, in_channels=c, receptive_field=model.receptive_field, format=FORMAT, platforms=list(exported.platforms), jax_version=jax.__version__,
                  input=f"float32 [B, {s}*h, {s}*w, {c}] in [0, 1]", output=f"float32 [B, {s}*h, {s}*w, 3] in [0, 1]")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(INFO, json.dumps(header, indent=1, default=str))
        z.writestr(FUNCTION, bytes(exported.serialize()))
        z.writestr(PARAMS, params_bytes(params))
        if card:
            from jaxdenoise import model_card
            z.writestr(CARD_JSON, json.dumps(card, indent=1, default=str))
            z.writestr(CARD_MD, model_card.markdown(card))
    return buf.getvalue()


def export_workdir(workdir: str, out: str, checkpoint: str | int = "best", platforms: Sequence[str] = PLATFORMS,
                   overwrite: bool = False, card_extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``out`` from a run's checkpoint (its EMA weights when kept); returns the header written. The
    run's model card goes with it (updated with ``card_extra``, e.g. a zoo entry's name and data terms).

    The output is checked before any work (``outputs.claim``: never an input, never one of a run's own files,
    an existing file only with ``overwrite``) and written atomically. Raises ValueError (one line)."""
    from jaxdenoise import checkpointing, denoiser, model_card, models, outputs
    bad = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
    if bad or not platforms:
        raise ValueError(f"--platforms: choose among cpu, cuda, rocm, tpu, got {','.join(platforms) or 'none'}")
    target = outputs.claim(out, "--out", inputs=[("--workdir", workdir)], overwrite=overwrite)
    config, params, step, weights = checkpointing.load_params(workdir, checkpoint, with_kind=True)
    model = models.create(config.model, config.dtype)
    info = denoiser.model_info(config, params, model, step=step, weights=weights,
                               source=os.path.abspath(workdir), validation=denoiser.last_validation(workdir))
    card = model_card.read(workdir)
    if card is not None and card_extra:
        card = dict(card, **card_extra)
    data = export_bytes(config, params, model, info, platforms, card)
    target.write(data)
    return json.loads(zipfile.ZipFile(io.BytesIO(data)).read(INFO))


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


def params_bytes(params) -> bytes:
    """``params`` (a nested dict of arrays) as flax msgpack bytes (the ``PARAMS`` member)."""
    from flax import serialization
    import jax
    return serialization.msgpack_serialize(jax.tree.map(np.asarray, dict(params)))


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
    """A ``denoiser.Denoiser`` running an exported file (no flax, no checkpoint)."""
    import jax
    from jaxdenoise.denoiser import Denoiser
    from jaxdenoise import denoise as engine
    header, exported = read(path)
    call = jax.jit(exported.call)
    header = dict(header, source=os.path.abspath(path))
    forward = lambda x: call(np.asarray(x, np.float32))
    forward.temp_bytes = lambda shape: engine.temp_bytes(exported.call, shape)
    return Denoiser(forward, stride=header["stride"],
                    in_channels=header["in_channels"], receptive_field=header["receptive_field"], info=header, **kw)
