"""Model registry: architectures by name (configs say ``model.name``). Add a model by adding an entry."""
from __future__ import annotations

from typing import Callable, Dict

import flax.linen as nn
import jax.numpy as jnp

from jaxdenoise.models.paper import PaperAutoencoder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _paper(model_config, dtype) -> nn.Module:
    return PaperAutoencoder(widths=tuple(model_config.widths), latent=int(model_config.latent), dtype=dtype)


REGISTRY: Dict[str, Callable[..., nn.Module]] = {"paper": _paper}


def create(model_config, dtype: str = "float32") -> nn.Module:
    """The model named ``model_config.name``; a one-line ValueError for unknown names or dtypes."""
    if model_config.name not in REGISTRY:
        raise ValueError(f"unknown model.name {model_config.name!r}: choose one of {sorted(REGISTRY)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    return REGISTRY[model_config.name](model_config, DTYPES[dtype])
