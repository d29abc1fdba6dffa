"""Training losses: pure functions of (output, target), each a per-image value ``[B]``, from their papers.

``config.loss`` names one; the train step averages the per-image values over the batch (and over its
micro-batches, which therefore add up exactly to the whole batch's loss):

- ``mse``: mean squared error (the paper's loss; DnCNN's, up to a factor 1/2).
- ``l1``: mean absolute error (Restormer, Zamir et al. 2022; Lim et al. 2017 for super-resolution).
- ``charbonnier``: ``mean(sqrt((x - y)^2 + eps^2))``, eps = 1e-3, a differentiable L1 (MPRNet, Zamir et al.
  2021; Lai et al. 2017), as BasicSR's ``CharbonnierLoss``.
- ``psnr``: ``-PSNR`` of each image, ``-10 log10(1 / (mse + 1e-8))`` (NAFNet, Chen et al. 2022; BasicSR's
  ``PSNRLoss`` at loss_weight 1, data range 1): the mean over the batch of the log of each image's MSE,
  which weighs a clean image's error as much as a noisy one's.

output, target: ``float [B, H, W, C]``, target in [0, 1].
"""
from __future__ import annotations

from typing import Callable, Dict

import jax
import jax.numpy as jnp

CHARBONNIER_EPS = 1e-3
PSNR_EPS = 1e-8  # BasicSR's PSNRLoss: keeps log finite where an image is matched exactly


def _per_image(x: jax.Array) -> jax.Array:
    return jnp.mean(x.reshape(x.shape[0], -1).astype(jnp.float32), axis=1)


def mse(output: jax.Array, target: jax.Array) -> jax.Array:
    return _per_image(jnp.square(output - target))


def l1(output: jax.Array, target: jax.Array) -> jax.Array:
    return _per_image(jnp.abs(output - target))


def charbonnier(output: jax.Array, target: jax.Array) -> jax.Array:
    return _per_image(jnp.sqrt(jnp.square(output - target) + CHARBONNIER_EPS ** 2))


def psnr(output: jax.Array, target: jax.Array) -> jax.Array:
    return (10.0 / jnp.log(10.0)) * jnp.log(mse(output, target) + PSNR_EPS)


LOSSES: Dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mse": mse, "l1": l1, "charbonnier": charbonnier, "psnr": psnr}


def get(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The per-image loss ``name``; a one-line ValueError naming the choices otherwise."""
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is not one of {', '.join(LOSSES)}")
    return LOSSES[name]
