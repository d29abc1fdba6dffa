"""JPEG compression as the last stage of camera noise: pure JAX, on the device, no I/O.

Most real noisy photos reach a user as in-camera JPEGs (Nam et al.'s pairs, real_nam25, are): the encoder's
8x8 block DCT quantisation smears the demosaiced noise into blocks and correlates it further, which no
pixelwise model makes. CBDNet (Guo et al. 2019) ends its noise synthesis with JPEG compression at a
quality factor drawn from [60, 100]; this is that stage, as baseline JPEG does it (JFIF / ITU-T T.81):

    sRGB in [0, 1] -> Y'CbCr (JFIF, 0-255) -> chroma 4:2:0 (2x2 means; a camera's usual sampling)
    -> 8x8 DCT-II of each block, level-shifted by 128 -> quantised by the Annex K tables scaled to the quality
    (libjpeg's ``jpeg_quality_scaling``) -> dequantised, inverse DCT -> chroma upsampled (libjpeg's "fancy"
    triangle filter, as a separable [1, 3] / 4 interpolation) -> RGB, clipped and rounded to 8 bits.

Sides need not be multiples of 16: the image is edge-padded and cropped back (as an encoder pads its MCUs).
Rounding makes this stage non-differentiable; it is only ever applied to the input, never to what the loss
differentiates.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# ITU-T T.81 Annex K, Tables K.1 and K.2 (quality 50)
LUMA_Q = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
CHROMA_Q = np.array([
    [17, 18, 24, 47, 99, 99, 99, 99], [18, 21, 26, 66, 99, 99, 99, 99], [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99]] + [[99] * 8] * 4, np.float32)
QUALITY_RANGE = (1.0, 100.0)


def _dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II matrix ``D``: block coefficients are ``D X D^T``."""
    k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    d = np.cos((2 * n + 1) * k * math.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d.astype(np.float32)


DCT = _dct_matrix()


def quant_tables(quality: jax.Array) -> jax.Array:
    """``[B, 2, 8, 8]`` luma and chroma tables for per-image ``quality`` ``[B]`` in [1, 100] (libjpeg's scaling:
    5000 / q below 50, 200 - 2 q above; entries floor((Q s + 50) / 100), clamped to [1, 255])."""
    q = jnp.clip(quality, 1.0, 100.0)
    scale = jnp.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None, None]
    base = jnp.asarray(np.stack([LUMA_Q, CHROMA_Q]))[None]
    return jnp.clip(jnp.floor((base * scale + 50.0) / 100.0), 1.0, 255.0)


def rgb_to_ycbcr(x: jax.Array) -> jax.Array:
    """JFIF Y'CbCr in 0-255 of sRGB ``x`` in [0, 1] (``[..., 3]``)."""
    m = jnp.asarray([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    return 255.0 * x @ m.T + jnp.asarray([0.0, 128.0, 128.0])


def ycbcr_to_rgb(y: jax.Array) -> jax.Array:
    """The inverse of ``rgb_to_ycbcr``: sRGB in [0, 1] (unclipped)."""
    m = jnp.asarray([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])
    return ((y - jnp.asarray([0.0, 128.0, 128.0])) @ m.T) / 255.0


def block_quantise(plane: jax.Array, table: jax.Array) -> jax.Array:
    """One channel ``[B, H, W]`` (H, W multiples of 8, values 0-255) through the 8x8 DCT, quantised by ``table``
    (``[B, 8, 8]``) and back: what a decoder reads."""
    b, h, w = plane.shape
    blocks = (plane - 128.0).reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
    d = jnp.asarray(DCT)
    coef = jnp.einsum("ij,bxyjk,lk->bxyil", d, blocks, d)
    t = table[:, None, None]
    coef = jnp.round(coef / t) * t
    back = jnp.einsum("ji,bxyjk,kl->bxyil", d, coef, d)
    return back.transpose(0, 1, 3, 2, 4).reshape(b, h, w) + 128.0


def _upsample2(c: jax.Array) -> jax.Array:
    """``[B, h, w]`` -> ``[B, 2h, 2w]``: each output sample 3/4 its own input sample and 1/4 the nearer
    neighbour, per axis (libjpeg's fancy upsampling; edges repeat)."""
    def axis(a, ax):
        prev = jnp.concatenate([jax.lax.slice_in_dim(a, 0, 1, axis=ax), jax.lax.slice_in_dim(a, 0, -1, axis=ax)], ax)
        nxt = jnp.concatenate([jax.lax.slice_in_dim(a, 1, None, axis=ax), jax.lax.slice_in_dim(a, -1, None, axis=ax)],
                              ax)
        even, odd = 0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt
        out = jnp.stack([even, odd], axis=ax + 1)
        shape = list(a.shape)
        shape[ax] *= 2
        return out.reshape(shape)
    return axis(axis(c, 1), 2)


def compress(x: jax.Array, quality: jax.Array) -> jax.Array:
    """sRGB ``x`` (``float32 [B, H, W, 3]`` in [0, 1]) as a baseline 4:2:0 JPEG of per-image ``quality``
    (``[B]``, 1-100) decodes it: same shape, in [0, 1], 8-bit values."""
    b, h, w, _ = x.shape
    ph, pw = -h % 16, -w % 16
    xp = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    ycc = rgb_to_ycbcr(xp)
    tables = quant_tables(quality)
    hh, ww = xp.shape[1], xp.shape[2]
    luma = block_quantise(ycc[..., 0], tables[:, 0])
    chroma = []
    for c in (1, 2):
        small = ycc[..., c].reshape(b, hh // 2, 2, ww // 2, 2).mean(axis=(2, 4))
        sh, sw = small.shape[1:]
        small = jnp.pad(small, ((0, 0), (0, -sh % 8), (0, -sw % 8)), mode="edge")
        small = block_quantise(small, tables[:, 1])[:, :sh, :sw]
        chroma.append(_upsample2(small))
    out = ycbcr_to_rgb(jnp.stack([luma] + chroma, axis=-1))[:, :h, :w]
    return jnp.round(jnp.clip(out, 0.0, 1.0) * 255.0) / 255.0


def random_quality(key: jax.Array, quality: tuple, batch: int) -> jax.Array:
    """Per-image quality factors ``[B]``, uniform in ``quality`` (low, high)."""
    return jax.random.uniform(key, (batch,), jnp.float32, quality[0], quality[1])
