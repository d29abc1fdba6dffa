"""Model registry: architectures by name (configs say ``model.name``). Adding a model is adding one file and
one entry in ``REGISTRY``.

Every model is a flax module mapping ``float [B, H, W, 3]`` in [0, 1] to ``float32 [B, H, W, 3]`` and
declares:
- ``stride``: input sides must be multiples of it (its down-sampling factor; padding and tiles read it);
- ``in_channels``: 3, or 4 for a non-blind model (field ``noise_level``: the image, then its noise-level
  map from ``noise.NoiseModel.sample`` / ``noise.level_map``; ``steps.model_input`` builds it);
- ``receptive_field``: the side in pixels of the input window one output pixel depends on (tile overlaps);
- ``check(fields)`` (static): one-line ValueErrors for bad values of its own config fields.
``config.model``'s fields other than ``name`` are passed to the module's constructor; a field the module
does not have is a one-line error.
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxdenoise.models.dncnn import DnCNN
from jaxdenoise.models.drunet import DRUNet
from jaxdenoise.models.nafnet import NAFNet
from jaxdenoise.models.paper import PaperAutoencoder
from jaxdenoise.models.unet import UNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

REGISTRY: Dict[str, type] = {"paper": PaperAutoencoder, "unet": UNet, "dncnn": DnCNN, "nafnet": NAFNet,
                             "drunet": DRUNet}

_NOT_FIELDS = ("parent", "name", "dtype")


def fields_of(name: str) -> Dict[str, object]:
    """The config fields of model ``name`` with their defaults (tuples for sequences)."""
    return {f.name: f.default for f in dataclasses.fields(REGISTRY[name])
            if f.name not in _NOT_FIELDS and f.default is not dataclasses.MISSING}


def default_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """``config.model`` for model ``name``: its name and every field at its default, then ``overrides``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model.name {name!r}: choose one of {sorted(REGISTRY)}")
    c = dict(name=name, **fields_of(name))
    unknown = set(overrides) - set(c)
    if unknown:
        raise ValueError(f"model {name!r} has no field {sorted(unknown)[0]!r}: its fields are {sorted(fields_of(name))}")
    c.update(overrides)
    return ml_collections.ConfigDict(c)


def _fields(model_config) -> Dict[str, object]:
    name = model_config.name
    if name not in REGISTRY:
        raise ValueError(f"unknown model.name {name!r}: choose one of {sorted(REGISTRY)}")
    known = fields_of(name)
    given = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in model_config.items() if k != "name"}
    for k in given:
        if k not in known:
            raise ValueError(f"model.{k} is not a field of model {name!r} (its fields: {', '.join(sorted(known))}); "
                             f"start from models.default_config({name!r}) in the config file")
    return {**known, **given}


def check(model_config) -> None:
    """Raise a one-line ValueError for an unknown model name, a field the model lacks, or a bad value."""
    fields = _fields(model_config)
    REGISTRY[model_config.name].check(fields)


def create(model_config, dtype: str = "float32") -> nn.Module:
    """The model named ``model_config.name`` with its fields; a one-line ValueError for unknown names or dtypes."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    check(model_config)
    return REGISTRY[model_config.name](**_fields(model_config), dtype=DTYPES[dtype])


def param_count(model, side: int = 64) -> int:
    """Number of parameters of ``model`` (computed abstractly, nothing allocated)."""
    import jax
    import numpy as np
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, side, side, model.in_channels), jnp.float32))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
