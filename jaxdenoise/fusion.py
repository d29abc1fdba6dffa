"""Fusion boundaries that XLA:CPU keeps.

XLA fuses a cheap elementwise producer into each of its consumers, recomputing it per consumer. For the
noise samplers' long unrolled chains (``noise.poisson_sample``) that multiplies the cost, and the copy fused
into a consumer of image shape ``[B, H, W, C]`` vectorises along the 3 channels instead of the pixels.
``jax.lax.optimization_barrier`` does not stop it on CPU (it is removed before fusion); a conditional is a
fusion boundary. Measures: docs/benchmarks.md, "Noise sampler".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def materialise(tree, always: jax.Array):
    """``tree`` itself, computed once: a conditional on ``always`` (a traced predicate that is always true,
    which XLA cannot prove, e.g. ``step >= 0`` or ``uniform[0] >= 0``) is a fusion boundary on CPU, so XLA
    cannot fuse the computation of ``tree`` into each of its consumers. Costs one branch per call."""
    return jax.lax.cond(always, lambda a: a, lambda a: jax.tree.map(jnp.zeros_like, a), tree)
