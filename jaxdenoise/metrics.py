"""Image-quality metrics: pure JAX, per image, vectorised over the batch with ``jax.vmap``.

Conventions (printed beside every number we report): data range 1 (images in [0, 1]), RGB, no border crop.
PSNR is 10 log10(1 / MSE) per image, averaged over images. SSIM is the standard Gaussian-window SSIM
(11x11, sigma 1.5, K1 0.01, K2 0.03) per channel, averaged over channels and pixels (dm-pix's ``ssim``,
checked against scikit-image in the tests).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

CONVENTION = "data range 1, RGB, no border crop"
_MSE_FLOOR = 1e-10  # PSNR of identical images: 100 dB, not inf


def mse_per_image(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` x2 -> ``[B]`` mean squared error (float32)."""
    def one(x, y):
        d = x.astype(jnp.float32) - y.astype(jnp.float32)
        return jnp.mean(d * d)
    return jax.vmap(one)(a, b)


def psnr_from_mse(mse: jax.Array) -> jax.Array:
    return -10.0 * jnp.log10(jnp.maximum(mse, _MSE_FLOOR))


def psnr_per_image(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` in [0, 1] x2 -> ``[B]`` PSNR in dB (data range 1)."""
    return psnr_from_mse(mse_per_image(a, b))


def ssim_per_image(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` in [0, 1] x2 -> ``[B]`` SSIM (Gaussian 11x11 window, sigma 1.5, data range 1)."""
    import dm_pix
    one = lambda x, y: dm_pix.ssim(x.astype(jnp.float32), y.astype(jnp.float32), max_val=1.0)
    return jax.vmap(one)(a, b)
