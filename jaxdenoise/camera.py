"""A camera pipeline for synthetic real-photo noise: each stage a small pure JAX function. No I/O.

Real noise in an sRGB photo is shot and read noise in the camera's linear raw signal, carried through the
camera's processing: demosaicing correlates it across neighbouring pixels and channels, white balance and
colour correction scale and mix it per channel, the tone curve makes it signal dependent in a way that sRGB
Poisson noise is not, and the result is quantised to 8 bits. ``camera_noise`` follows Brooks et al. 2019,
"Unprocessing Images for Learned Raw Denoising" (their google-research/unprocessing code: the same CCMs,
gain ranges, tone curve and shot/read-noise relation), with the pipeline order of Guo et al. 2019 (CBDNet)::

    sRGB -> inverse tone curve (smoothstep) -> inverse gamma (2.2) -> inverse colour correction (rgb2cam)
         -> inverse white balance and brightening (highlights kept) -> RGGB Bayer mosaic
         -> + N(0, shot * raw + read)  (heteroscedastic Gaussian: Brooks et al.'s model of Poisson-Gaussian
                                       sensor noise; shot and read drawn on their log-linear relation)
         -> white balance, brightening -> bilinear demosaic -> colour correction (cam2rgb) -> gamma -> tone curve
         -> + the original image, less the same pipeline without noise (below) -> clip, 8-bit quantisation

The last step keeps the training target exact: the clean image the model must return is the image itself,
not its unprocessed-and-reprocessed copy (which a bilinear demosaic blurs and zippers at edges, and whose
highlights the inversion clips). So the noise is what the pipeline adds, ``F(D(M + n)) - F(D(M))``, added to
the image: its correlation, channel mixing and signal dependence are the camera's; the scene is untouched.

Shapes: images ``float32 [B, H, W, 3]`` in [0, 1] (any H, W: the mosaic is defined pixel by pixel, with
reflected borders that keep the Bayer phase); per-image parameters ``[B]`` or ``[B, 3, 3]``.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import jax
import jax.numpy as jnp

# XYZ -> camera matrices of four cameras (Brooks et al.'s unprocess.py); a random convex combination per image
XYZ2CAMS = ((( 1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
            (( 0.4913, -0.0541, -0.0202), (-0.6130, 1.3513,  0.2906), (-0.1564, 0.2151, 0.7183)),
            (( 0.8380, -0.2630, -0.0639), (-0.2887, 1.0725,  0.2496), (-0.0627, 0.1427, 0.5438)),
            (( 0.6596, -0.2079, -0.0562), (-0.4782, 1.3016,  0.1933), (-0.0970, 0.1581, 0.5181)))
RGB2XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
GAMMA = 2.2
# the ISO-like level: shot-noise variance factor = SHOT_AT_ISO100 * iso / 100; Brooks et al.'s shot range
# [1e-4, 1.2e-2] is ISO 100-12,000 on this scale
SHOT_AT_ISO100 = 1e-4
ISO_RANGE = (50.0, 25600.0)  # what a spec may ask for
DEFAULT_ISO = (100.0, 12800.0)
READ_LINE = (2.18, 1.20, 0.26)
NOMINAL_GAIN = 1.25 * (2.15 + 1.0 + 1.7) / 3  # the mean of random_gains' brightening x white balance  # log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2) (Brooks et al., fitted on raw)


# ----------------------------------------------------------------------------------------------------------
# Tone curve and gamma
# ----------------------------------------------------------------------------------------------------------
def smoothstep(x: jax.Array) -> jax.Array:
    """The global tone curve ``3x^2 - 2x^3`` on [0, 1] (a stand-in for a camera's S-curve)."""
    x = jnp.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(y: jax.Array) -> jax.Array:
    """The inverse of ``smoothstep`` on [0, 1]: ``0.5 - sin(asin(1 - 2y) / 3)``."""
    y = jnp.clip(y, 0.0, 1.0)
    return 0.5 - jnp.sin(jnp.arcsin(1.0 - 2.0 * y) / 3.0)


def gamma_expand(x: jax.Array) -> jax.Array:
    """Gamma-encoded -> linear: ``x^2.2`` (clamped at 1e-8, whose gradient stays finite)."""
    return jnp.maximum(x, 1e-8) ** GAMMA


def gamma_compress(x: jax.Array) -> jax.Array:
    """Linear -> gamma-encoded: ``x^(1/2.2)``."""
    return jnp.maximum(x, 1e-8) ** (1.0 / GAMMA)


# ----------------------------------------------------------------------------------------------------------
# Colour: per-image colour correction and white balance
# ----------------------------------------------------------------------------------------------------------
def random_rgb2cam(key: jax.Array, batch: int) -> jax.Array:
    """``[B, 3, 3]`` sRGB -> camera matrices: a random convex combination of ``XYZ2CAMS`` times ``RGB2XYZ``,
    each row normalised to sum 1 (so white stays white before the white balance)."""
    w = jax.random.uniform(key, (batch, len(XYZ2CAMS), 1, 1), jnp.float32, 1e-8, 1.0)
    xyz2cam = jnp.sum(jnp.asarray(XYZ2CAMS, jnp.float32) * w, axis=1) / jnp.sum(w, axis=1)
    rgb2cam = xyz2cam @ jnp.asarray(RGB2XYZ, jnp.float32)
    return rgb2cam / jnp.sum(rgb2cam, axis=-1, keepdims=True)


def apply_ccm(x: jax.Array, ccm: jax.Array) -> jax.Array:
    """``out[..., i] = sum_j ccm[i, j] x[..., j]`` per image: x ``[B, H, W, 3]``, ccm ``[B, 3, 3]``."""
    return jnp.einsum("bhwj,bij->bhwi", x, ccm)


def random_gains(key: jax.Array, batch: int) -> Dict[str, jax.Array]:
    """Per-image ``[B]`` gains: brightening ``rgb = 1 / N(0.8, 0.1)`` (the normal clamped to [0.5, 1.1]), white
    balance ``red ~ U(1.9, 2.4)``, ``blue ~ U(1.5, 1.9)`` (Brooks et al.'s ranges)."""
    k1, k2, k3 = jax.random.split(key, 3)
    rgb = 1.0 / jnp.clip(0.8 + 0.1 * jax.random.normal(k1, (batch,), jnp.float32), 0.5, 1.1)
    return {"rgb": rgb, "red": jax.random.uniform(k2, (batch,), jnp.float32, 1.9, 2.4),
            "blue": jax.random.uniform(k3, (batch,), jnp.float32, 1.5, 1.9)}


def _gain_vector(gains: Dict[str, jax.Array]) -> jax.Array:
    """``[B, 1, 1, 3]``: (red, 1, blue) times the brightening."""
    one = jnp.ones_like(gains["red"])
    return (jnp.stack([gains["red"], one, gains["blue"]], axis=-1) * gains["rgb"][:, None])[:, None, None, :]


def apply_gains(x: jax.Array, gains: Dict[str, jax.Array]) -> jax.Array:
    """White balance and brightening, as the camera applies them: ``x * (red, 1, blue) * rgb``."""
    return x * _gain_vector(gains)


def invert_gains(x: jax.Array, gains: Dict[str, jax.Array], safe: bool = True) -> jax.Array:
    """The inverse of ``apply_gains``. ``safe``: near white (mean above 0.9) the inverse gain is blended to 1,
    so that saturated highlights stay saturated in raw rather than turning a dim colour (Brooks et al.)."""
    inv = 1.0 / _gain_vector(gains)
    if not safe:
        return x * inv
    gray = jnp.mean(x, axis=-1, keepdims=True)
    mask = jnp.square(jnp.maximum(gray - 0.9, 0.0) / 0.1)
    return x * jnp.maximum(mask + (1.0 - mask) * inv, inv)


# ----------------------------------------------------------------------------------------------------------
# Bayer mosaic (RGGB) and bilinear demosaic
# ----------------------------------------------------------------------------------------------------------
def bayer_masks(h: int, w: int) -> jax.Array:
    """``float32 [H, W, 3]`` one-hot masks of the RGGB pattern: R at (even, even), B at (odd, odd), G elsewhere."""
    r = jnp.arange(h)[:, None] % 2
    c = jnp.arange(w)[None, :] % 2
    red = (r == 0) & (c == 0)
    blue = (r == 1) & (c == 1)
    return jnp.stack([red, ~(red | blue), blue], axis=-1).astype(jnp.float32)


def mosaic(x: jax.Array) -> jax.Array:
    """``[B, H, W, 3]`` -> ``[B, H, W]``: the one colour an RGGB sensor measures at each pixel."""
    return jnp.sum(x * bayer_masks(x.shape[1], x.shape[2]), axis=-1)


def _conv3(plane: jax.Array, k: Tuple[Tuple[float, ...], ...]) -> jax.Array:
    """3x3 correlation of ``[B, H, W]`` with reflected borders (a reflection keeps the Bayer phase)."""
    p = jnp.pad(plane, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    h, w = plane.shape[1], plane.shape[2]
    out = jnp.zeros_like(plane)
    for i in range(3):
        for j in range(3):
            if k[i][j]:
                out = out + k[i][j] * p[:, i:i + h, j:j + w]
    return out


_RB = ((0.25, 0.5, 0.25), (0.5, 1.0, 0.5), (0.25, 0.5, 0.25))  # red / blue from their 2, 4 or 1 neighbours
_G = ((0.0, 0.25, 0.0), (0.25, 1.0, 0.25), (0.0, 0.25, 0.0))   # green from its 4 neighbours


def demosaic(m: jax.Array) -> jax.Array:
    """Bilinear demosaic of an RGGB ``[B, H, W]`` mosaic -> ``[B, H, W, 3]``: each missing colour is the mean
    of its nearest measured neighbours; measured values are kept. H and W of at least 2."""
    masks = bayer_masks(m.shape[1], m.shape[2])
    return jnp.stack([_conv3(m * masks[..., 0], _RB), _conv3(m * masks[..., 1], _G),
                      _conv3(m * masks[..., 2], _RB)], axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Sensor noise and the whole pipeline
# ----------------------------------------------------------------------------------------------------------
def noise_levels(key: jax.Array, iso: Tuple[float, float], batch: int) -> Tuple[jax.Array, jax.Array]:
    """Per-image ``[B]`` (shot, read) variance factors: ISO log-uniform in ``iso``, shot = 1e-4 iso / 100,
    log(read) on Brooks et al.'s line through log(shot) with their scatter (``READ_LINE``)."""
    k1, k2 = jax.random.split(key)
    lo, hi = math.log(iso[0]), math.log(iso[1])
    log_iso = lo + (hi - lo) * jax.random.uniform(k1, (batch,), jnp.float32)
    log_shot = math.log(SHOT_AT_ISO100 / 100.0) + log_iso
    slope, offset, scatter = READ_LINE
    log_read = slope * log_shot + offset + scatter * jax.random.normal(k2, (batch,), jnp.float32)
    return jnp.exp(log_shot), jnp.exp(log_read)


def sensor_noise(key: jax.Array, raw: jax.Array, shot: jax.Array, read: jax.Array) -> jax.Array:
    """Raw ``[B, H, W]`` plus noise of variance ``shot * raw + read`` (per-image ``[B]`` factors)."""
    var = shot[:, None, None] * jnp.maximum(raw, 0.0) + read[:, None, None]
    return raw + jnp.sqrt(var) * jax.random.normal(key, raw.shape, jnp.float32)


def unprocess(x: jax.Array, rgb2cam: jax.Array, gains: Dict[str, jax.Array]) -> jax.Array:
    """sRGB ``[B, H, W, 3]`` -> the linear raw mosaic ``[B, H, W]`` in [0, 1]."""
    lin = gamma_expand(inverse_smoothstep(x))
    return mosaic(jnp.clip(invert_gains(apply_ccm(lin, rgb2cam), gains), 0.0, 1.0))


def process(raw: jax.Array, cam2rgb: jax.Array, gains: Dict[str, jax.Array]) -> jax.Array:
    """A raw mosaic ``[B, H, W]`` -> sRGB ``[B, H, W, 3]`` in [0, 1]: the camera's processing, in Brooks et
    al.'s order: gains on the mosaic, clip (saturation), demosaic, colour correction, clip, gamma, tone curve."""
    site_gains = mosaic(jnp.broadcast_to(_gain_vector(gains), raw.shape + (3,)))
    rgb = demosaic(jnp.clip(raw * site_gains, 0.0, 1.0))
    return smoothstep(gamma_compress(jnp.clip(apply_ccm(rgb, cam2rgb), 0.0, 1.0)))


def camera_noise(key: jax.Array, x: jax.Array, iso: Tuple[float, float]) -> Tuple[jax.Array, jax.Array]:
    """(noisy sRGB ``float32 [B, H, W, 3]``, unclipped and unquantised; per-image shot ``[B]``) of clean sRGB
    ``x`` (``float32 [B, H, W, 3]`` in [0, 1]) through a camera drawn per image (CCM, gains, ISO in ``iso``).

    The noise is ``process(raw + n) - process(raw)`` added to ``x`` (module docstring); the caller clips and
    quantises. H and W of at least 2.
    """
    b = x.shape[0]
    k_ccm, k_gain, k_level, k_noise = jax.random.split(key, 4)
    rgb2cam = random_rgb2cam(k_ccm, b)
    cam2rgb = jnp.linalg.inv(rgb2cam)
    gains = random_gains(k_gain, b)
    shot, read = noise_levels(k_level, iso, b)
    raw = unprocess(x, rgb2cam, gains)
    noisy_raw = sensor_noise(k_noise, raw, shot, read)
    return x + (process(noisy_raw, cam2rgb, gains) - process(raw, cam2rgb, gains)), shot


def level(y: jax.Array, shot: jax.Array) -> jax.Array:
    """Noise-level map ``float32 [B, H, W, 1]`` of a camera-noised ``y`` (``[B, H, W, C]``): the raw noise's
    standard deviation at the pixel's linear value, carried through gamma and tone curve by a central
    difference. The nominal camera: the mean gain (``NOMINAL_GAIN``), unit CCM, read noise on the line's centre (a non-blind model
    gets the same map at inference from the noisy photo and the ISO alone). shot: ``[B, 1, 1, 1]`` or scalar."""
    g = jnp.clip(jnp.mean(y.astype(jnp.float32), axis=-1, keepdims=True), 0.0, 1.0)
    lin = gamma_expand(inverse_smoothstep(g))
    slope, offset, _ = READ_LINE
    read = jnp.exp(slope * jnp.log(shot) + offset)
    s = NOMINAL_GAIN * jnp.sqrt(shot * lin / NOMINAL_GAIN + read)  # raw = lin / gain; its noise scaled back
    f = lambda v: smoothstep(gamma_compress(jnp.clip(v, 0.0, 1.0)))
    return (f(lin + s) - f(lin - s)) / 2.0


def iso_shot(iso: float) -> float:
    """The shot-noise variance factor of an ISO-like level (``SHOT_AT_ISO100 * iso / 100``)."""
    return SHOT_AT_ISO100 * iso / 100.0
