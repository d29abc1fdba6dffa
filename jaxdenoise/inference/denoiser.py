"""A trained denoiser as one Python object: ``jaxdenoise.load(...)`` (``inference.load``) returns a ``Denoiser``.

    den = jaxdenoise.load("runs/unet_faces")            # a workdir: its best checkpoint (EMA weights if kept)
    den = jaxdenoise.load("runs/unet_faces", "latest")  # or "best", or a step number
    den = jaxdenoise.load("model.jaxdn")                # an exported model (scripts/export.py)
    clean = den(noisy)                                  # H x W x 3, uint8 or float in [0, 1]; same dtype back
    clean = den(noisy, noise_level="poisson:30")        # non-blind models: the noise of the photo
    outs = den.batch([img1, img2])                      # several images, any sizes
    den.info                                            # model, parameters, stride, training noise, scores

The ``Denoiser`` is the one home of what inference needs: the weights' choice (the EMA when the run kept one),
padding to the model's stride, the noise-level map of non-blind models, and tiling (``tiling.denoise``). It knows
no files: ``inference.load`` makes one from a workdir, an exported file or the zoo.
An image runs whole (at the per-pixel cost of whole-image inference: tiles recompute their overlaps) when
the model's working memory for it fits ``memory_budget``; larger ones run in overlapping tiles of ``tile``
px, as many per call as fit the budget, so memory stays bounded whatever the photo's size. The working
memory per pixel is XLA's own figure for the compiled model (``memory_analysis`` of a 256x256 probe).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdenoise.inference import tiling

# Whole-image inference up to this many pixels at most (and only while the model's working memory fits
# MEMORY_BUDGET); larger images are tiled. Tiles of 1024 px with a 32 px overlap recompute ~13 % of the pixels
# (at 256 px it is ~60 %, and 4-8x the per-pixel cost was measured: docs/benchmarks.md, "Inference").
MAX_PIXELS = 16 * 2**20
TILE = 1024
# The model's working memory (XLA's temporaries for one call) an inference may take: the zoo U-Net needs
# ~512 bytes per pixel, so photos up to ~2.5 MP run whole and larger ones in 1024-px tiles, 2 per call;
# a 6000x4000 photo then peaks under 3 GB of process memory (docs/benchmarks.md, "Inference memory").
MEMORY_BUDGET = 5 * 2**28  # 1.25 GiB
DEFAULT_BYTES_PER_PIXEL = 600  # when the forward function cannot say (a plain callable)
PROBE = 256  # side of the probe image whose compiled memory gives the bytes per pixel
BUCKET = 64  # whole images are padded to multiples of this: a folder of mixed sizes compiles a few shapes


class Geometry(NamedTuple):
    """What inference needs of a model's shape: inputs padded to multiples of ``stride``; ``in_channels`` 3
    (blind) or 4 (a non-blind model, whose 4th channel is the noise-level map); the ``receptive_field`` in px
    (tiles overlap by enough of it to equal the whole image)."""
    stride: int
    in_channels: int
    receptive_field: int

    @classmethod
    def of(cls, model) -> "Geometry":
        """A Flax model's (``models.create``: it has the three attributes)."""
        return cls(int(model.stride), int(model.in_channels), int(model.receptive_field))


class Denoiser:
    """Denoise images with one trained model.

    forward: ``float32 [B, h, w, C] -> float32 [B, h, w, 3]`` in [0, 1] (h, w multiples of the geometry's
    ``stride``; C its ``in_channels``). info: what the model is (``load`` fills it: model, parameters,
    stride, training noise, scores). max_pixels, memory_budget, tile: when an image runs whole, and the
    tiles otherwise (module docstring); overlap: of the tiles, in px.
    """

    def __init__(self, forward: Callable[[np.ndarray], Any], geometry: Geometry, *,
                 info: Optional[Dict[str, Any]] = None, max_pixels: int = MAX_PIXELS, tile: int = TILE,
                 overlap: int = 32, memory_budget: int = MEMORY_BUDGET):
        stride, in_channels, receptive_field = geometry
        if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
            raise ValueError(f"overlap must be an integer >= 0, got {overlap!r}")
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)) or memory_budget < 1:
            raise ValueError(f"memory_budget must be a number of bytes >= 1, got {memory_budget!r}")
        self.forward, self.stride, self.in_channels = forward, int(stride), int(in_channels)
        self.receptive_field, self.max_pixels, self.tile, self.overlap = int(receptive_field), max_pixels, tile, overlap
        self.memory_budget, self._bytes_per_pixel = int(memory_budget), None
        self.info = dict(info or {})

    @property
    def bytes_per_pixel(self) -> float:
        """The model's working memory per input pixel: XLA's temporaries for a ``PROBE`` x ``PROBE`` image
        (the forward's ``temp_bytes(shape)``, which ``make_apply`` and ``exported.load_exported`` give),
        else ``DEFAULT_BYTES_PER_PIXEL``; measured once."""
        if self._bytes_per_pixel is None:
            probe = getattr(self.forward, "temp_bytes", None)
            side = tiling.ceil_to(PROBE, self.stride)
            self._bytes_per_pixel = (probe((1, side, side, self.in_channels)) / side**2 if probe
                                     else DEFAULT_BYTES_PER_PIXEL)
        return self._bytes_per_pixel

    def plan(self, h: int, w: int, tile: Optional[int] = None, batch: int = 8) -> tuple:
        """(tile, batch) for an ``h`` x ``w`` image: (0, 1) to run it whole, when it has at most
        ``max_pixels`` and fits ``memory_budget``; else tiles of ``self.tile`` px (smaller when even one does
        not fit), as many per call (up to ``batch``) as the budget holds. An explicit ``tile`` is kept; only
        its batch is fitted to the budget."""
        bpp = self.bytes_per_pixel if h * w > 2**20 or tile else DEFAULT_BYTES_PER_PIXEL
        if tile is None:
            whole = tiling.ceil_to(h, BUCKET) * tiling.ceil_to(w, BUCKET)
            if whole <= self.max_pixels and whole * bpp <= self.memory_budget:
                return 0, 1
            tile = self.tile
            while tile > 2 * self.stride and tile * tile * bpp > self.memory_budget and tile // 2 >= 4 * self.overlap:
                tile //= 2
        if tile == 0:
            return 0, 1
        return tile, max(1, min(batch, int(self.memory_budget // (tile * tile * bpp))))

    @property
    def blind(self) -> bool:
        """True when the model estimates the noise itself (3 input channels)."""
        return self.in_channels == 3

    def __repr__(self) -> str:
        return (f"Denoiser({self.info.get('model', '?')}, {self.info.get('parameters', '?')} parameters, stride "
                f"{self.stride}, {'blind' if self.blind else 'non-blind'}, from {self.info.get('source', '?')})")

    def __call__(self, image: np.ndarray, noise_level: Optional[str] = None, *, tile: Optional[int] = None,
                 overlap: Optional[int] = None, batch: int = 8, ensemble: int = 1) -> np.ndarray:
        """Denoise one ``[H, W, 3]`` image (uint8, or float in [0, 1]); returns the same shape and dtype.

        noise_level: for a non-blind model, the photo's noise as a fixed spec (``poisson:30``, ``gaussian:25``);
        None estimates a Gaussian level from the image. Blind models take none.
        tile: tile side for this call (0: whole image always; default: whole up to ``max_pixels``, else
        ``self.tile``); overlap: at least half the receptive field is used whatever is asked (a negative one
        is an error).
        ensemble: average over this many flips and rotations of the image (1, 2, 4 or 8:
        ``self_ensemble``; 8 costs 8x the time, and gained 0.18-0.19 dB on CBSD68: docs/quality.md).
        Raises ValueError (one line) for a wrong shape, a non-finite value, float values outside [0, 1] (beyond
        rounding), a noise level given to a blind model, a negative tile or overlap, or another ensemble size
        (1, 2, 4 or 8; a bool is not one).
        """
        x, kind = _as_float(image)
        for name, v, least in (("overlap", overlap, 0), ("tile", tile, 0), ("batch", batch, 1)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least):
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        check_ensemble(ensemble)
        if noise_level is not None and self.blind:
            raise ValueError(f"noise_level={noise_level!r} is for non-blind models; this one is blind (it takes "
                             f"the noisy image alone)")
        return _like(self.run(x, noise_level=noise_level, tile=tile, overlap=overlap, batch=batch,
                              ensemble=ensemble), kind)

    def run(self, x: np.ndarray, level: Optional[np.ndarray] = None, noise_level: Optional[str] = None, *,
            tile: Optional[int] = None, overlap: Optional[int] = None, batch: int = 8,
            ensemble: int = 1) -> np.ndarray:
        """``float32 [H, W, 3]`` -> ``float32 [H, W, 3]`` in [0, 1], unchecked (``__call__`` checks).

        A non-blind model takes ``level`` (``float32 [H, W, 1]``, e.g. the map drawn with synthetic noise),
        else the map of ``noise_level``, else of the Gaussian level estimated from the image; a blind one
        ignores both. tile, overlap, batch, ensemble: as ``__call__``.
        """
        forward = self_ensemble(self.forward, ensemble)
        if self.blind:
            level = noise_level = None
        x = np.concatenate([x, level], -1) if level is not None else with_level(x, self.in_channels, noise_level)
        h, w = x.shape[:2]
        tile, batch = self.plan(h, w, tile, batch)
        ov = tiling.min_overlap(self.overlap if overlap is None else overlap, self.receptive_field)
        tiling.check_tiling(tile, ov, self.stride, self.receptive_field)
        return tiling.denoise(forward, x, stride=self.stride, tile=tile, overlap=ov, batch=batch, bucket=BUCKET,
                              margin=tiling.context(self.receptive_field))

    def batch(self, images: Sequence[np.ndarray], noise_level: Optional[str] = None, **kw) -> List[np.ndarray]:
        """Denoise several images of any sizes (each as ``__call__`` would); returns a list in the same order."""
        return [self(img, noise_level, **kw) for img in images]


FLOAT_SLACK = 1e-6  # float pixels a rounding step outside [0, 1] are accepted


def _as_float(image) -> tuple:
    """(``float32 [H, W, 3]`` in [0, 1], the input's dtype) of an image, or a one-line ValueError."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {a.shape}" +
                         (": drop the alpha channel first" if a.ndim == 3 and a.shape[-1] == 4 else ""))
    if min(a.shape[:2]) < 1:
        raise ValueError(f"the image is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0, a.dtype
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"expected uint8 (0..255) or float (0..1) pixels, got {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError("the image holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -FLOAT_SLACK or hi > 1.0 + FLOAT_SLACK:
        hint = ("divide 0..255 images by 255, or pass uint8" if hi > 2.0 else
                "clip them with np.clip(x, 0, 1); Denoiser.run takes unclipped noisy floats as they are")
        raise ValueError(f"float pixels must be in [0, 1], got values in [{lo:g}, {hi:g}] ({hint})")
    return a.astype(np.float32), a.dtype


def _like(out: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.uint8:  # in place (``out`` is ours): no float copies of a large photo
        out = np.multiply(out, 255.0, out=out) if out.flags.writeable else out * 255.0
        out += 0.5
        return np.clip(out, 0, 255, out=out).astype(np.uint8)
    return out.astype(dtype)


# ---- the apply function a Denoiser runs: a jitted model, its self-ensemble, its noise-level input

Apply = Callable[[jax.Array], jax.Array]  # float32 [B, H, W, C] -> [B, H, W, 3]


def make_apply(model, params) -> Apply:
    """A jitted ``float32 [B, H, W, C] -> [B, H, W, 3]`` denoiser (C: ``model.in_channels``), output clipped to [0, 1] (residual models
    can step outside it); recompiles once per input shape."""
    fn = jax.jit(lambda p, x: jnp.clip(model.apply({"params": p}, x), 0.0, 1.0))
    apply = lambda x: fn(params, x)
    apply.temp_bytes = lambda shape: temp_bytes(lambda x: fn(params, x), shape)
    return apply


def temp_bytes(fn: Callable, shape) -> int:
    """XLA's temporary memory for one call of ``fn`` on a ``float32 shape`` input (``memory_analysis``)."""
    compiled = jax.jit(fn).lower(jax.ShapeDtypeStruct(tuple(shape), jnp.float32)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


# The dihedral group of the square as (rotations by 90 degrees, flip left-right) pairs, ordered so that the
# first 2 and the first 4 are subgroups that keep H x W (no second compilation for a transposed shape).
_DIHEDRAL = ((0, False), (0, True), (2, True), (2, False), (1, False), (1, True), (3, False), (3, True))
ENSEMBLES = (1, 2, 4, 8)


def check_ensemble(n: int, what: str = "ensemble") -> int:
    """``n`` if it is an ensemble size (``ENSEMBLES``); a one-line ValueError naming ``what`` otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n not in ENSEMBLES:
        raise ValueError(f"{what} must be one of {', '.join(map(str, ENSEMBLES))} (flips and rotations of the "
                         f"input to average over; 1: off), got {n}")
    return n


def self_ensemble(apply: Apply, n: int) -> Apply:
    """``apply`` averaged over ``n`` (1, 2, 4 or 8) flips and rotations of its input, each undone on its output
    (the "x8" geometric self-ensemble of EDSR / DnCNN+ / KAIR): a trained model's errors differ between
    orientations while the image does not, so the mean is closer to the clean image, at ``n`` times the cost.
    2: identity and left-right flip; 4: also the up-down flip and the half turn (H x W kept); 8: also the
    quarter turns and transposes (one more compilation per shape, H and W swapped). ``float32 [B, H, W, C]``
    -> ``float32 [B, H, W, 3]`` on the host; H and W must then both be multiples of the model's stride."""
    if check_ensemble(n) == 1:
        return apply

    def there(x, k, flip):  # [B, H, W, C]: flip W, then rotate counter-clockwise in the (H, W) plane
        return np.rot90(x[:, :, ::-1] if flip else x, k, axes=(1, 2))

    def back(y, k, flip):
        y = np.rot90(y, -k, axes=(1, 2))
        return y[:, :, ::-1] if flip else y

    def ensembled(x):
        x = np.asarray(x, np.float32)
        return sum(back(np.asarray(apply(np.ascontiguousarray(there(x, k, flip)))), k, flip)
                   for k, flip in _DIHEDRAL[:n]) / n
    return ensembled


def with_level(image: np.ndarray, in_channels: int, noise_level: str | None = None) -> np.ndarray:
    """The model input for a noisy ``float32 [H, W, 3]`` image: itself for a blind model (``in_channels``
    3); for a non-blind one (4) the image and its noise-level map ``[H, W, 1]``, from ``noise_level`` (a
    fixed-value noise spec such as ``poisson:30`` or ``gaussian:25``: ``noise.level_map``), or, when it is
    None, a constant map at the Gaussian sigma estimated from the image (``baselines.estimate_sigma``)."""
    if in_channels == 3:
        return image
    from jaxdenoise import noise as noise_lib
    if noise_level:
        level = np.asarray(noise_lib.level_map(noise_level, image[None]))[0]
    else:
        from jaxdenoise import baselines
        level = np.full(image.shape[:2] + (1,), baselines.estimate_sigma(image), np.float32)
    return np.concatenate([image, level.astype(np.float32)], axis=-1)
