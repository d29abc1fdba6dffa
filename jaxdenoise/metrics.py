"""Image-quality metrics: pure JAX, per image, vectorised over the batch with ``jax.vmap``.

Conventions (printed beside every number we report): data range 1 (images in [0, 1]), RGB, no border crop.
PSNR is 10 log10(1 / MSE) per image, averaged over images. SSIM is the standard Gaussian-window SSIM
(11x11, sigma 1.5, K1 0.01, K2 0.03, population covariances) per channel over the positions where the
window lies inside the image, averaged over channels and positions; it equals scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``
(tested). An image with a side under 11 px (the smallest we read is 8) is scored with the largest odd window
that fits it (9 or 7, the same Gaussian truncated and renormalised), where the 11x11 window has no position.

The ``masked`` variants score images padded into a larger array (``mask`` marks the real pixels), so that a
folder of mixed sizes runs in a few bucketed shapes instead of one compilation per size.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CONVENTION = "data range 1, RGB, no border crop"
_MSE_FLOOR = 1e-10  # PSNR of identical images: 100 dB, not inf
_WIN, _SIGMA, _C1, _C2 = 11, 1.5, 0.01**2, 0.03**2


def window(h: int, w: int) -> int:
    """The SSIM window side for an ``h`` x ``w`` image: 11, or the largest odd side that fits a smaller one."""
    return max(1, min(_WIN, (min(h, w) - 1) | 1))


def _gauss_1d(win: int = _WIN) -> np.ndarray:
    x = np.arange(win, dtype=np.float64) - (win - 1) / 2
    g = np.exp(-0.5 * (x / _SIGMA) ** 2)
    return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, win: int = _WIN) -> jax.Array:
    """Separable Gaussian filter of ``[H, W, C]``, 'valid' positions only -> ``[H-win+1, W-win+1, C]``."""
    g = jnp.asarray(_gauss_1d(win))
    c = x.shape[-1]
    img = x.transpose(2, 0, 1)[:, None]  # [C, 1, H, W]
    img = jax.lax.conv_general_dilated(img, g.reshape(1, 1, win, 1), (1, 1), "VALID")
    img = jax.lax.conv_general_dilated(img, g.reshape(1, 1, 1, win), (1, 1), "VALID")
    return img[:, 0].transpose(1, 2, 0).reshape(img.shape[2], img.shape[3], c)


def _ssim_map(x: jax.Array, y: jax.Array, win: int = _WIN) -> jax.Array:
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    f = lambda a: _filter_valid(a, win)
    mx, my = f(x), f(y)
    sxx = f(x * x) - mx * mx
    syy = f(y * y) - my * my
    sxy = f(x * y) - mx * my
    return ((2 * mx * my + _C1) * (2 * sxy + _C2)) / ((mx * mx + my * my + _C1) * (sxx + syy + _C2))


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
    """``[B, H, W, C]`` in [0, 1] x2 -> ``[B]`` SSIM (Gaussian 11x11 window, sigma 1.5, data range 1; a smaller
    odd window for images with a side under 11 px, ``window``)."""
    win = window(*a.shape[1:3])
    return jax.vmap(lambda x, y: jnp.mean(_ssim_map(x, y, win)))(a, b)


def masked_mse_per_image(a: jax.Array, b: jax.Array, hw: jax.Array) -> jax.Array:
    """MSE over the top-left ``hw[i] = (h, w)`` region of each padded image: ``[B, H, W, C]`` x2, ``[B, 2]`` -> ``[B]``."""
    def one(x, y, size):
        m = _region(x.shape[:2], size[0], size[1])[..., None]
        d = (x.astype(jnp.float32) - y.astype(jnp.float32)) * m
        return jnp.sum(d * d) / (jnp.sum(m) * x.shape[-1])
    return jax.vmap(one)(a, b, hw)


def masked_ssim_per_image(a: jax.Array, b: jax.Array, hw: jax.Array, win: int = _WIN) -> jax.Array:
    """SSIM over the top-left ``hw[i]`` region of each padded image (windows wholly inside it); ``win``
    (static): the window side, ``window(h, w)`` of the images scored together."""
    def one(x, y, size):
        smap = _ssim_map(x, y, win)
        m = _region(smap.shape[:2], size[0] - (win - 1), size[1] - (win - 1))[..., None]
        return jnp.sum(smap * m) / (jnp.sum(m) * smap.shape[-1])
    return jax.vmap(one)(a, b, hw)


def _region(shape, h, w) -> jax.Array:
    ys = jnp.arange(shape[0])[:, None] < h
    xs = jnp.arange(shape[1])[None, :] < w
    return (ys & xs).astype(jnp.float32)
