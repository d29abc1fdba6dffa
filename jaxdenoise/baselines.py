"""Classical denoisers to compare against (the paper's Fig. 9, measured on the same noisy images).

- ``bm3d``: BM3D from the ``bm3d`` package (optional extra ``pip install .[baselines]``), colour (opponent
  space) profile.
- ``nlm``: non-local means from scikit-image (fast mode, 5x5 patches, 13x13 search, h = 0.8 sigma).

Both are Gaussian-noise denoisers, so each noise model is brought to them honestly:
- gaussian: the known sigma;
- poisson (peak p): the Anscombe transform ``2 sqrt(p y + 3/8)`` makes the noise ~N(0, 1); denoise there
  (scaled to [0, 1]), then the closed-form approximation of the exact unbiased inverse (Makitalo & Foi 2011);
- poisson_gaussian: the generalised Anscombe transform with the known read-noise sigma, same inverse;
- paper, salt_pepper, camera, mixtures and real noise (``noise=None``): no variance-stabilising transform
  applies; sigma is estimated from the noisy image (``estimate_sigma``), which is what a user of these tools
  would do. The wavelet estimate reads spatially correlated noise (real camera noise, after demosaicing) as
  far weaker than it is, so ``NAME:oracle`` (``bm3d:oracle``) instead takes each image's true noise standard
  deviation, ``std(noisy - clean)``, from its clean reference: the classical method at its best, a bound no
  user without the clean image can reach.
Per-image parameters drawn from a range are not known to the baseline: it uses the range's geometric middle.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from jaxdenoise.noise import NoiseModel

AVAILABLE = ("bm3d", "nlm")
ORACLE = ":oracle"  # suffix: the true noise level from the clean reference (e.g. "bm3d:oracle")


def check(name: str) -> None:
    """ValueError (one line) unless ``name`` is a baseline: one of ``AVAILABLE``, optionally + ``ORACLE``."""
    if name.removesuffix(ORACLE) not in AVAILABLE:
        raise ValueError(f"unknown baseline {name!r}: choose from {', '.join(AVAILABLE)} (add {ORACLE} for the "
                         f"true noise level, e.g. bm3d{ORACLE})")


def label(name: str) -> str:
    """The table's row name for baseline ``name``."""
    return f"{name.removesuffix(ORACLE)} (oracle sigma)" if name.endswith(ORACLE) else name


def _gauss_denoiser(name: str) -> Callable[[np.ndarray, float], np.ndarray]:
    if name == "bm3d":
        try:
            import bm3d
        except ImportError as e:
            raise ImportError("baseline bm3d needs the bm3d package: pip install 'jaxdenoise[baselines]' "
                              "(or pip install bm3d)") from e
        return lambda z, sigma: _at_least(z, BM3D_MIN_SIDE, lambda p: np.asarray(bm3d.bm3d_rgb(p, sigma), np.float32))
    if name == "nlm":
        from skimage.restoration import denoise_nl_means
        return lambda z, sigma: denoise_nl_means(z, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                                 fast_mode=True, channel_axis=-1).astype(np.float32)
    raise ValueError(f"unknown baseline {name!r}: choose from {', '.join(AVAILABLE)}")


# bm3d 4.0's compiled core crashes the process (SIGSEGV) on an 8x8 image; images with a side under this are
# denoised mirror-padded to it and cropped back (a 9-px side already works; 16 leaves a margin).
BM3D_MIN_SIDE = 16


def _at_least(z: np.ndarray, side: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` of ``[H, W, 3]`` symmetric-padded at the bottom/right to at least ``side`` x ``side``, cropped back."""
    h, w = z.shape[:2]
    if h >= side and w >= side:
        return fn(z)
    ph, pw = max(0, side - h), max(0, side - w)
    return fn(np.pad(z, ((0, ph), (0, pw), (0, 0)), mode="symmetric"))[:h, :w]


def _mid(r) -> float:
    lo, hi = r
    return math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)


def _anscombe_inverse(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of the Anscombe transform."""
    d = np.maximum(d, 1e-3)
    s = math.sqrt(1.5)
    return 0.25 * d**2 + 0.25 * s / d - 1.375 / d**2 + 0.625 * s / d**3 - 0.125


def estimate_sigma(y: np.ndarray) -> float:
    """Noise standard deviation of ``float [H, W, 3]`` in [0, 1], blind: the median absolute deviation of the
    finest diagonal wavelet (db1) sub-band over 0.6745 (Donoho & Johnstone 1994), per channel, averaged:
    scikit-image's ``estimate_sigma``. Image edges leak into that sub-band, so it reads a little high on
    clean, detailed photos (about 1/255 on CBSD68's) and is accurate from a few 1/255 of noise up."""
    from skimage.restoration import estimate_sigma as wavelet_sigma
    return float(wavelet_sigma(y, channel_axis=-1, average_sigmas=True))


def oracle_sigma(noisy: np.ndarray, clean: np.ndarray) -> float:
    """The true noise standard deviation of ``noisy`` against its ``clean`` reference (``float [H, W, 3]``)."""
    return float(np.std(np.asarray(noisy, np.float64) - np.asarray(clean, np.float64)))


def make(name: str, noise: NoiseModel | None) -> Callable[..., np.ndarray]:
    """A ``(noisy, clean=None) -> denoised`` function, ``float32 [H, W, 3]`` in [0, 1], for this noise model;
    with ``noise=None`` (real noise) the level is estimated from each image. ``name`` ending in ``ORACLE``:
    a Gaussian denoiser at each image's ``oracle_sigma`` (needs ``clean``), whatever the noise."""
    check(name)
    den = _gauss_denoiser(name.removesuffix(ORACLE))
    if name.endswith(ORACLE):
        return lambda y, clean: np.clip(den(y, max(oracle_sigma(y, clean), 1e-3)), 0, 1)
    if noise is None or noise.kind in ("paper", "salt_pepper", "camera", "none", "mix"):
        return lambda y, clean=None: np.clip(den(y, max(estimate_sigma(y), 1e-3)), 0, 1)
    if noise.kind == "gaussian":
        sigma = _mid(noise.sigma) / 255.0
        return lambda y, clean=None: np.clip(den(y, sigma), 0, 1)
    if noise.kind in ("poisson", "poisson_gaussian"):
        peak = _mid(noise.peak)
        read = _mid(noise.sigma) / 255.0 * peak if noise.kind == "poisson_gaussian" else 0.0

        def vst(y, clean=None):
            z = y * peak  # counts (plus read noise in counts)
            a = 2.0 * np.sqrt(np.maximum(z + 3.0 / 8.0 + read**2, 0.0))
            scale = max(float(a.max()), 1e-6)
            d = den((a / scale).astype(np.float32), 1.0 / scale) * scale
            return np.clip((_anscombe_inverse(d) - read**2) / peak, 0, 1).astype(np.float32)
        return vst
    raise AssertionError(noise.kind)  # noise.parse admits no other kind

