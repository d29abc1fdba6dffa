"""Export a trained denoiser as a file that runs with ``jax`` and ``numpy`` alone (``scripts/export.py``);
the format, and reading it back: ``inference.exported``."""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from jaxdenoise import checkpointing, model_card, models, outputs, run_io
from jaxdenoise.inference.exported import CARD_JSON, CARD_MD, FORMAT, FUNCTION, INFO, PARAMS
from jaxdenoise.native import onednn

PLATFORMS = ("cpu", "cuda")  # lowered for both: the same file runs on a CPU machine and on an NVIDIA GPU


def export_bytes(config, params, model, info: Dict[str, Any], platforms: Sequence[str] = PLATFORMS,
                 card: Optional[Dict[str, Any]] = None) -> bytes:
    """The ``.jaxdn`` file's bytes for ``model`` with ``params`` (lowered once, for ``platforms``), with the
    model ``card`` (``model_card`` facts) when given. The header is ``info`` plus what a reader relies on,
    taken from the model itself (stride, input channels, receptive field)."""
    s, c = model.stride, model.in_channels
    fn = jax.jit(lambda x: jnp.clip(model.apply({"params": params}, x), 0.0, 1.0))
    spec = jax.ShapeDtypeStruct(jax_export.symbolic_shape(f"b, {s}*h, {s}*w, {c}"), jnp.float32)
    with onednn.xla_only():  # the file must run in any process: no handler of this one in it
        exported = jax_export.export(fn, platforms=tuple(platforms))(spec)
    header = dict(info, stride=s, in_channels=c, receptive_field=model.receptive_field, format=FORMAT, platforms=list(exported.platforms), jax_version=jax.__version__,
                  input=f"float32 [B, {s}*h, {s}*w, {c}] in [0, 1]", output=f"float32 [B, {s}*h, {s}*w, 3] in [0, 1]")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(INFO, json.dumps(header, indent=1, default=str))
        z.writestr(FUNCTION, bytes(exported.serialize()))
        z.writestr(PARAMS, params_bytes(params))
        if card:
            z.writestr(CARD_JSON, json.dumps(card, indent=1, default=str))
            z.writestr(CARD_MD, model_card.markdown(card))
    return buf.getvalue()


def export_workdir(workdir: str, out: str, checkpoint: str | int = "best", platforms: Sequence[str] = PLATFORMS,
                   overwrite: bool = False, card_extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``out`` from a run's checkpoint (its EMA weights when kept); returns the header written. The
    run's model card goes with it (updated with ``card_extra``, e.g. a zoo entry's name and data terms).

    The output is checked before any work (``outputs.claim``: never an input, never one of a run's own files,
    an existing file only with ``overwrite``) and written atomically. Raises ValueError (one line)."""
    bad = sorted(set(platforms) - {"cpu", "cuda", "rocm", "tpu"})
    if bad or not platforms:
        raise ValueError(f"--platforms: choose among cpu, cuda, rocm, tpu, got {','.join(platforms) or 'none'}")
    target = outputs.claim(out, "--out", inputs=[("--workdir", workdir)], overwrite=overwrite)
    data = workdir_bytes(workdir, checkpoint, platforms, card_extra)
    target.write(data)
    return json.loads(zipfile.ZipFile(io.BytesIO(data)).read(INFO))


def workdir_bytes(workdir: str, checkpoint: str | int = "best", platforms: Sequence[str] = PLATFORMS,
                  card_extra: Optional[Dict[str, Any]] = None) -> bytes:
    """The ``.jaxdn`` bytes of a run's checkpoint (its EMA weights when kept) with the run's model card
    (updated with ``card_extra``); what ``export_workdir`` writes, and the zoo builder writes into the package
    folder (``scripts/tools/zoo_build.py``: the one writer allowed there)."""
    config, params, step, weights = checkpointing.load_params(workdir, checkpoint, with_kind=True)
    model = models.create(config.model, config.dtype)
    info = model_info(config, params, model, step=step, weights=weights,
                      source=os.path.abspath(workdir), validation=run_io.last_validation(workdir))
    card = model_card.read(workdir)
    if card is not None and card_extra:
        card = dict(card, **card_extra)
    return export_bytes(config, params, model, info, platforms, card)


def params_bytes(params) -> bytes:
    """``params`` (a nested dict of arrays) as flax msgpack bytes (the ``PARAMS`` member)."""
    from flax import serialization
    return serialization.msgpack_serialize(jax.tree.map(np.asarray, dict(params)))


def model_info(config, params, model, **extra) -> Dict[str, Any]:
    """The facts a user asks of a model: JSON-ready (also an exported file's header)."""
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return {"model": config.model.name, "model_config": config.model.to_dict(), "parameters": n,
            "dtype": config.dtype, "stride": model.stride, "in_channels": model.in_channels,
            "receptive_field": model.receptive_field, "blind": model.in_channels == 3,
            "noise": config.noise, "eval_noise": config.eval_noise or config.noise,
            "target": config.get("target", "clean"), "noise_fixed": bool(config.get("noise_fixed", False)),
            "data": config.data.dir or config.data.source, **extra}
