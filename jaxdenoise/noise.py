"""Noise models: pure JAX, drawn on device inside jit. No I/O.

A model is chosen by a short spec string (configs, command lines)::

    "paper"            the paper's eq. 2, y = x + Poisson(x), clipped to [0, 1]
    "paper:noclip"     the same without clipping
    "poisson:30"       shot noise y = Poisson(peak * x) / peak, peak 30 (photons at white)
    "poisson:5-60"     peak drawn per image, log-uniform in [5, 60] (blind training)
    "gaussian:25"      y = x + N(0, sigma / 255), sigma in 0-255 units; "gaussian:5-50" per image
    "poisson_gaussian:30,10"   shot noise (peak 30) plus read noise (sigma 10 in 0-255 units);
                               each value may be a range: "poisson_gaussian:10-60,2-15"
    "salt_pepper:0.05" a fraction of pixels (per pixel and channel) set to 0 or 1; "salt_pepper:0.01-0.1"
    "camera:100-12800" real camera noise (``jaxdenoise.camera``): shot and read noise in the raw signal of a
                               camera drawn per image (colour matrix, white balance), carried through its
                               demosaic, colour correction, gamma and tone curve, quantised to 8 bits; the
                               ISO-like level (log-uniform in the range, or one value: "camera:1600") sets
                               the shot noise, the read noise follows it; "camera" alone is 100-12800;
    "camera:100-3200,60-100"   the same, then saved as a JPEG of quality drawn in 60-100 (``jaxdenoise.jpeg``;
                               CBDNet's last stage: most real noisy photos are in-camera JPEGs)
    "none"             no synthetic noise: the input is already noisy (a store of real noisy/clean pairs,
                               ``data.pairs``); its noise-level map is zeros
    "poisson:5-60+gaussian:5-50"   a mixture: each image takes one of the '+'-joined models, chosen
                               uniformly per image (one blind model for shot and Gaussian noise)

Every model except ``paper:noclip`` clips its output to [0, 1] (a camera stores clipped values; ``camera``
also rounds to 8 bits); append ``:noclip`` to any spec to keep the unclipped (and unquantised) values. All take ``x`` as ``float [B, H, W, C]`` in [0, 1]
and return the same shape and dtype; per-image parameters are drawn per leading index.

Poisson sampling: ``jax.random.poisson`` costs more than a whole training step on a CPU (a per-element
rejection loop), so ``poisson_sample`` inverts the CDF instead, as one fused elementwise pass:
``X = j0 + #{j >= j0 : F(j) < u}`` with ``u ~ U[0, 1)``, summing the pmf by the recurrence
``p(j+1) = p(j) * lam / (j+1)`` over a window [j0, j0 + W) that holds all the mass a float32 uniform can
resolve (each tail outside it is below 2**-25). For rates above 64 the window starts at
``j0 = floor(lam - 6 sqrt(lam))``, with ``p(j0)`` computed in log space (``exp(-lam)`` alone underflows for
lam > 87); below, it starts at 0. The window width W is fixed at trace time from the largest rate the spec
allows (``max_rate``), so the loop unrolls into one fused, vectorised kernel. This is exact inversion up to float32 rounding of the CDF (relative error
~1e-6 per probability), at any rate up to ``MAX_RATE``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdenoise import camera, jpeg
from jaxdenoise.fusion import materialise

MAX_RATE = 2000.0  # largest Poisson rate (peak) supported by the unrolled inversion window
_TAIL = 2.0**-25  # mass left outside the window on each side: below float32 uniform resolution

# (origin ``int [B, 2]``, (H, W)): the batch is the ``[B, h, w, C]`` crops at ``origin`` of ``[B, H, W, C]``
# frames, and a pixelwise model draws what those frames would draw there (``NoiseModel.sample``)
Frame = Tuple[jax.Array, Tuple[int, int]]


def _field(draw, key: jax.Array, shape: Tuple[int, ...], frame: Optional[Frame]) -> jax.Array:
    """``draw(key, shape, float32)`` (``jax.random.uniform`` or ``normal``) for a ``[B, h, w, C]`` batch; with a
    ``frame``, the ``h x w`` crops at each row's origin of the draw for the whole ``[B, H, W, C]`` frames: the
    values each pixel would get if the whole frame were noised. The variates are the cheap part (measured on
    CPU-2: 16 x 128 x 128 x 3 uniforms and normals ~15 ms, the whole shot / Gaussian mixture on them ~100
    ms), so a crop pays for its frame's draw and its own noise model only."""
    if frame is None:
        return draw(key, shape, jnp.float32)
    origin, (h, w) = frame
    full = draw(key, (shape[0], h, w, shape[-1]), jnp.float32)
    return jax.vmap(lambda f, o: jax.lax.dynamic_slice(f, (o[0], o[1], 0), shape[1:]))(full, origin)


# ----------------------------------------------------------------------------------------------------------
# Poisson sampler
# ----------------------------------------------------------------------------------------------------------
_SHIFT_MIN = 16.0  # windows start at 0 unless they can start at least this far up


def _window_start(lam, xp=jnp):
    """First support point of the window: 6 standard deviations below the mean, or 0.

    The window starts at 0 unless that point is at least ``_SHIFT_MIN``, i.e. for every rate below 64;
    then ``p(0) = exp(-lam)`` needs no lgamma and each step divides by a constant (the fast path).
    """
    j0 = xp.floor(lam - 6.0 * xp.sqrt(lam))
    return xp.where(j0 >= _SHIFT_MIN, j0, 0.0)


def _shift_free(max_rate: float) -> bool:
    """True when no rate <= max_rate has a shifted window (then j0 is statically 0)."""
    return max_rate - 6.0 * math.sqrt(max_rate) < _SHIFT_MIN


def poisson_isf(q: float, lam):
    """The smallest k with P(X > k) <= q for X ~ Poisson(lam) (0 < q < 1, lam > 0; array or scalar): what
    ``scipy.stats.poisson.isf`` returns, by its own formula (``ppf(1 - q)`` from ``pdtrik``, then one step down
    where the CDF allows), from ``scipy.special`` alone: ``scipy.stats`` costs every process that samples shot
    noise a second more to import, ``scipy.special`` a third of that (tests/test_noise.py compares the two)."""
    from scipy import special
    p = 1.0 - q
    k = np.ceil(special.pdtrik(p, lam))
    below = np.maximum(k - 1, 0)
    return np.where(special.pdtr(below, lam) >= p, below, k)


@functools.lru_cache(maxsize=None)
def window_width(max_rate: float) -> int:
    """Number of support points W covering [j0(lam), ppf(1 - 2**-25; lam)] for every lam <= max_rate.

    Computed once per spec on the host with scipy (a dependency of jax), on a fine grid of rates.
    """
    if max_rate <= 0:
        return 1
    lams = np.unique(np.concatenate([np.linspace(1e-6, max_rate, 2048), [max_rate]]))
    top = poisson_isf(_TAIL, lams)  # smallest k with P(X > k) <= tail
    # +3: rates between grid points, and the left tail below a shifted start (6 sigma, ~1e-9 << _TAIL)
    return int(np.max(top - _window_start(lams, np))) + 3


def poisson_sample(key: jax.Array, lam: jax.Array, max_rate: float, frame: Optional[Frame] = None) -> jax.Array:
    """Exact-in-distribution Poisson(lam) samples (float32), elementwise; requires 0 <= lam <= max_rate.

    lam: float array of any shape (``[B, h, w, C]`` with a ``frame``: crops of larger images, ``_field``).
    max_rate: a Python float, the largest rate that can occur; it sets the window of the inversion, and so
    the cost: about ``12 * sqrt(max_rate) + 10`` fused multiply-adds per element.
    """
    if not 0 < max_rate <= MAX_RATE:
        raise ValueError(f"Poisson max_rate must be in (0, {MAX_RATE}], got {max_rate}")
    width = window_width(float(max_rate))
    lam = jnp.asarray(lam, jnp.float32)
    shape = lam.shape
    # drawn in lam's shape: the same uniforms as a flat draw of its size (threefry counts in row-major order)
    u = _field(jax.random.uniform, key, shape, frame).reshape(-1)
    # flat: XLA:CPU vectorises an elementwise chain along the minor dimension, which for images is the
    # 3 channels (measured 20.0 -> 16.4 ms for 16x128x128x3 at rate 30; the same uniforms, so the same samples)
    lam = lam.reshape(-1)
    if _shift_free(max_rate):
        # every window starts at 0: p(0) = exp(-lam) (no underflow below rate 64), divisors are constants
        p = jnp.exp(-lam)
        cdf, count = p, jnp.zeros_like(lam)
        # unrolled on purpose: XLA fuses the whole chain into one vectorised pass over the pixels
        for i in range(1, width + 1):
            count = count + (cdf < u).astype(jnp.float32)
            p = p * lam * (1.0 / i)
            cdf = cdf + p
        # computed once (a fusion boundary XLA:CPU keeps): fused into each consumer (a mixture's clipped and
        # unclipped twins, the level map, Gaussian read noise) the chain ran once per consumer and vectorised
        # along the 3 channels, 5x the time of the four-way photo mixture (docs/benchmarks.md)
        return materialise(count, u[0] >= 0).reshape(shape)
    j0 = _window_start(lam)
    shifted = j0 > 0
    p = _pmf_at_start(lam, j0, shifted)
    inv = 1.0 / (j0 + 1.0)
    # logs and divisions inside the unrolled chain stop XLA from vectorising it: keep them in their own pass
    u, p, inv, j0, shifted = jax.lax.optimization_barrier((u, p, inv, j0, shifted))
    carry = (jnp.zeros_like(lam), p, p, inv)  # count, p, cdf, inv
    if width <= _UNROLL_MAX:
        carry = _shifted_steps(carry, lam, u, j0, shifted, 1, width)
    else:
        # XLA:CPU's code for one fused chain much longer than ~200 steps slows down super-linearly (the
        # rate-500 window ran ~1 ms per element, rate 2000 worse), and the optimization barriers are
        # stripped before fusion there: long windows run as a loop of short unrolled chunks instead
        loops, rest = divmod(width, _CHUNK)
        carry = jax.lax.fori_loop(0, loops, lambda t, c: _shifted_steps(
            c, lam, u, j0, shifted, (1 + t * _CHUNK).astype(jnp.float32), _CHUNK), carry)
        carry = _shifted_steps(carry, lam, u, j0, shifted, 1 + loops * _CHUNK, rest)
    return materialise(j0 + carry[0], u[0] >= 0).reshape(shape)


def _pmf_at_start(lam, j0, shifted):
    """p(j0) = exp(-lam) lam^j0 / j0! in float32, to a relative error below 1e-5 for every rate.

    Computed in log space (exp(-lam) alone underflows for lam > 87), but not as
    ``-lam + j0 log(lam) - lgamma(j0 + 1)``: those terms reach 1e4 and cancel, leaving float32 errors up to
    2e-3 in p(j0), which scale the whole CDF (at rate 2000 about 5e-4 of the samples piled up at the window's
    end, 5.6 sigma above the mean). Stirling's series instead: with m = j0, r = (lam - m) / m,
    log p(m) = m (log1p(r) - r) - log(2 pi m) / 2 - 1/(12 m) + 1/(360 m^3) - 1/(1260 m^5), where
    log1p(r) - r = -r s + 2 s^3 (1/3 + s^2/5 + ...), s = r / (2 + r), has no cancellation for small r.
    Unshifted windows start at 0: p(0) = exp(-lam).
    """
    m = jnp.where(shifted, j0, 1.0)
    r = (lam - m) / m
    s = r / (2.0 + r)
    s2 = s * s
    poly = 1.0 / 15
    for k in (13, 11, 9, 7, 5, 3):
        poly = 1.0 / k + s2 * poly
    log1p_minus_r = jnp.where(r > 1.0, jnp.log1p(r) - r, -r * s + 2.0 * s * s2 * poly)
    inv = 1.0 / m
    log_p = (m * log1p_minus_r - 0.5 * jnp.log(2.0 * math.pi * m)
             - inv * (1.0 / 12 - inv * inv * (1.0 / 360 - inv * inv * (1.0 / 1260))))
    return jnp.where(shifted, jnp.exp(log_p), jnp.exp(-lam))


_UNROLL_MAX = 160  # longest shifted window unrolled in one piece (rates up to ~180)
_CHUNK = 16  # steps per loop iteration beyond that


def _shifted_steps(carry, lam, u, j0, shifted, first, n: int):
    """``n`` inversion steps i = first, ..., first + n - 1 (``first``: a Python int, or traced float32)."""
    count, p, cdf, inv = carry
    for k in range(n):
        i = first + k
        count = count + (cdf < u).astype(jnp.float32)
        p = p * lam * inv  # inv = 1 / (j0 + i)
        cdf = cdf + p
        # next reciprocal 1 / (j0 + i + 1) without a division: series guess from 1 / (j0 + i), then two
        # Newton steps (relative error <= (1/17)**12 since a shifted j0 is >= 16); unshifted: a constant
        b = j0 + (i + 1.0)
        g = inv * (1.0 - inv + inv * inv)
        g = g * (2.0 - b * g)
        g = g * (2.0 - b * g)
        inv = jnp.where(shifted, g, 1.0 / (i + 1.0))
    return count, p, cdf, inv


# ----------------------------------------------------------------------------------------------------------
# Binomial sampler (the recorrupted target's split of shot-noise counts)
# ----------------------------------------------------------------------------------------------------------
_BINOMIAL_LOG_START = 80.0  # -log of the smallest start probability (1 - p)**n allowed: exp(-80) is a normal float32


@functools.lru_cache(maxsize=None)
def max_count(max_rate: float) -> int:
    """The largest count ``poisson_sample`` gives at rates up to ``max_rate`` (beyond it: below 2**-25)."""
    return int(poisson_isf(_TAIL, max_rate)) + 1


@functools.lru_cache(maxsize=None)
def _binomial_width(n_max: int, p: float) -> int:
    from scipy.stats import binom
    return int(binom.isf(_TAIL, n_max, p)) + 2


def binomial_sample(key: jax.Array, n: jax.Array, p: float, n_max: int) -> jax.Array:
    """Binomial(n, p) samples (float32), elementwise, for integer-valued float counts ``0 <= n <= n_max``.

    ``jax.random.binomial`` is a rejection sampler: ~380 ms for 4 x 128 x 128 x 3 counts on CPU-2, more than a
    training step. As ``poisson_sample``, this inverts the CDF in one fused pass, ``X = #{j : F(j) < u}``, with
    ``P(0) = (1 - p)**n`` and ``P(j + 1) = P(j) (n - j) / (j + 1) * p / (1 - p)`` (0 from ``j = n`` on) over a
    window fixed at trace time from ``n_max`` and ``p`` (each tail beyond it below 2**-25). Requires
    ``n_max * -log(1 - p) <= 80``, so that ``P(0)`` is a normal float32 (``NoiseModel.split_problem``).
    """
    if not 0 < p < 1:
        raise ValueError(f"binomial p must be in (0, 1), got {p}")
    if n_max * -math.log1p(-p) > _BINOMIAL_LOG_START:
        raise ValueError(f"binomial counts up to {n_max} at p={p:g}: (1 - p)**n underflows float32")
    width = _binomial_width(int(n_max), float(p))
    n = jnp.asarray(n, jnp.float32)
    shape = n.shape
    u = jax.random.uniform(key, shape, jnp.float32).reshape(-1)
    n = n.reshape(-1)  # flat, and behind a barrier: the chain vectorises along pixels (see poisson_sample)
    prob = jnp.exp(n * math.log1p(-p))
    u, n, prob = jax.lax.optimization_barrier((u, n, prob))
    cdf, count, odds = prob, jnp.zeros_like(n), p / (1 - p)
    for j in range(width):  # unrolled: one fused, vectorised kernel
        count = count + (cdf < u).astype(jnp.float32)
        prob = prob * jnp.maximum(n - j, 0.0) * (odds / (j + 1))
        cdf = cdf + prob
    # float32 rounding of the CDF's last steps cannot carry it past n; computed once for its two consumers
    return materialise(jnp.minimum(count, n), u[0] >= 0).reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# Noise models
# ----------------------------------------------------------------------------------------------------------
Range = Tuple[float, float]


def _per_image(key: jax.Array, rng: Range, batch: int, log: bool) -> jax.Array:
    """[B] parameter values: fixed, or drawn per image (log-uniform for scales, uniform otherwise)."""
    lo, hi = rng
    if lo == hi:
        return jnp.full((batch,), lo, jnp.float32)
    u = jax.random.uniform(key, (batch,), jnp.float32)
    if log:
        return jnp.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """A parsed noise spec; hashable, so it can be a static argument of jit. Call it: ``model(key, x)``."""
    kind: str
    peak: Optional[Range] = None      # poisson, poisson_gaussian
    sigma: Optional[Range] = None     # gaussian, poisson_gaussian; 0-255 units
    amount: Optional[Range] = None    # salt_pepper
    iso: Optional[Range] = None       # camera: the ISO-like level
    quality: Optional[Range] = None   # camera: JPEG quality factor (None: no JPEG stage)
    clip: bool = True
    spec: str = ""
    parts: Tuple["NoiseModel", ...] = ()  # mix: the component models

    def __call__(self, key: jax.Array, x: jax.Array) -> jax.Array:
        """Noisy version of ``x``: ``float [B, H, W, C]`` in [0, 1] -> same shape and dtype."""
        return self.sample(key, x)[0]

    @property
    def pixelwise(self) -> bool:
        """Whether each pixel's noise depends on that pixel alone (and the image's drawn parameters): then a
        crop can be noised as its whole image would be (``sample``'s ``frame``). Camera noise (demosaicing)
        and JPEG compression mix neighbouring pixels: not pixelwise."""
        if self.kind == "mix":
            return all(p.pixelwise for p in self.parts)
        return self.kind != "camera" and self.quality is None

    def sample(self, key: jax.Array, x: jax.Array, frame: Optional[Frame] = None
               ) -> Tuple[jax.Array, jax.Array]:
        """(noisy ``x``, its noise-level map ``float32 [B, H, W, 1]``): the same noisy images as ``__call__``.

        The map is what a non-blind model (``model.noise_level``) gets as a fourth input channel: the noise's
        standard deviation per pixel in [0, 1] intensity units, computed from the *noisy* image and the
        noise parameters drawn for it (see ``_level``), so inference can build the same map from a noisy photo
        and a noise spec (``level_map``) without the clean image.

        frame: ``(origin int [B, 2], (H, W))`` when ``x`` holds crops of larger images (``pixelwise`` models
        only): each crop gets exactly the noise its whole image would get at those pixels from the same key,
        while the costly part (shot noise's inversion) runs on the crop only (the fixed-noise setting:
        ``steps.fixed_noisy``).
        """
        if frame is not None and not self.pixelwise:
            raise ValueError(f"noise {self.spec!r} mixes neighbouring pixels: it cannot noise a crop as its "
                             f"whole image (noise the whole image, then crop)")
        if self.kind == "mix":
            # every component noises the whole batch and each image keeps one (no data-dependent shapes under
            # jit). Components that differ only in clipping ("poisson:5-60" and "poisson:5-60:noclip") share
            # one draw, with the key of the first of them: each image still gets an independent draw of the
            # component it picked, at half the sampling cost of the blind photo configs' four-way mixture
            # (the shot-noise sampler is the costly part; docs/benchmarks.md). A mixture without such twins
            # draws exactly what it drew before.
            pick, draws = self._mix_plan(key, x.shape[0])
            pick = _bcast(pick, x)
            drawn = {}  # the draw's identity -> (unclipped noisy batch, its parameters)
            y = level = None
            for i, (identity, part, k) in enumerate(draws):
                if identity not in drawn:
                    drawn[identity] = part._draw(k, x, frame)
                yi, li = part._finish(*drawn[identity])
                yi = yi.astype(x.dtype)
                y = yi if y is None else jnp.where(pick == i, yi, y)
                level = li if level is None else jnp.where(pick == i, li, level)
            return y, level
        if self.kind == "none":
            return x, jnp.zeros(x.shape[:-1] + (1,), jnp.float32)
        y, level = self._finish(*self._draw(key, x, frame))
        return y.astype(x.dtype), level

    def _mix_plan(self, key: jax.Array, batch: int):
        """A mixture's choices for a batch drawn with ``key``: (the component each image takes ``int32 [B]``,
        per component (its draw's identity, the component, the key it draws with)); twins share the first
        twin's key (``sample``). ``sample`` and ``parameters`` read the same plan."""
        k_pick, *keys = jax.random.split(key, len(self.parts) + 1)
        pick = jax.random.randint(k_pick, (batch,), 0, len(self.parts))
        first, plan = {}, []
        for i, (part, k) in enumerate(zip(self.parts, keys)):
            identity = part.draw_identity() or i  # a part that cannot share draws alone
            plan.append((identity, part, first.setdefault(identity, k)))
        return pick, plan

    def parameters(self, key: jax.Array, batch: int) -> Tuple[jax.Array, jax.Array]:
        """What ``sample(key, x)`` drew for each image of a ``batch``-image ``x`` (it replays the same keys):
        (shot noise's peak ``float32 [B]``, 0 for an image without shot noise; Gaussian sigma ``float32 [B]``
        in [0, 1] intensity units, 0 for an image without Gaussian noise). The recorrupted target splits a
        noisy image with them (``recorrupt``); they depend on the key alone, not on the pixels."""
        if self.kind == "mix":
            pick, plan = self._mix_plan(key, batch)
            peak = sigma = jnp.zeros((batch,), jnp.float32)
            for i, (_, part, k) in enumerate(plan):
                p, s = part.parameters(k, batch)
                peak, sigma = jnp.where(pick == i, p, peak), jnp.where(pick == i, s, sigma)
            return peak, sigma
        drawn = self._parameters(key, batch)
        zero = jnp.zeros((batch,), jnp.float32)
        return (zero if drawn["peak"] is None else drawn["peak"],
                zero if drawn["sigma"] is None else drawn["sigma"] / 255.0)

    def split_problem(self, alpha: float) -> str:
        """Why ``recorrupt`` cannot split this model's noisy images at ``alpha`` ('' when it can): it needs
        every component Gaussian or shot noise, unclipped (clipping biases both copies), and shot noise's
        counts small enough for the binomial split's float32 start, ``(1 - alpha)**n``."""
        parts = self.parts if self.kind == "mix" else (self,)
        for part in parts:
            if part.kind not in ("gaussian", "poisson"):
                return (f"noise {part.spec!r} cannot be split into two independent noisy copies: the recorrupted "
                        f"target needs Gaussian or shot (poisson) noise")
            if part.clip:
                return (f"noise {part.spec!r} is clipped, which biases both recorrupted copies: append ':noclip' "
                        f"(as raw photon counts and the published tables are)")
            if part.kind == "poisson" and max_count(part.peak[1]) * -math.log1p(-alpha) > _BINOMIAL_LOG_START:
                return (f"noise {part.spec!r}: shot noise of peak {part.peak[1]:g} has counts too large for the "
                        f"binomial split at target_alpha={alpha:g} (float32 underflow); use a smaller alpha")
        return ""

    def recorrupt(self, key: jax.Array, y: jax.Array, peak: jax.Array, sigma: jax.Array, alpha: float
                  ) -> Tuple[jax.Array, jax.Array]:
        """Two independent noisy copies of the image under noisy ``y`` (``float [B, H, W, C]``, drawn by this
        model with ``parameters`` ``peak`` and ``sigma``, ``[B]`` each), both unbiased: (input, target).

        Generalised Recorrupted-to-Recorrupted (Pang et al., CVPR 2021; Monroy, Bacca & Tachella 2025), with
        ``alpha`` in (0, 1) the target's share of the signal:
        - Gaussian: ``y + sigma sqrt(alpha / (1 - alpha)) w`` and ``y - sigma sqrt((1 - alpha) / alpha) w``,
          ``w ~ N(0, 1)``: jointly Gaussian with zero covariance, noise variances ``sigma^2 / (1 - alpha)`` and
          ``sigma^2 / alpha`` (R2R's ``y + a z``, ``y - z / a`` with ``a^2 = alpha / (1 - alpha)``);
        - shot noise: ``y * peak`` are Poisson counts ``k``; ``z ~ Binomial(k, alpha)`` thins them into two
          independent Poisson counts ``k - z`` and ``z`` (rates ``(1 - alpha) peak x`` and ``alpha peak x``),
          rescaled to ``(k - z) / ((1 - alpha) peak)`` and ``z / (alpha peak)``.
        So ``E|f(input) - target|^2 = E|f(input) - x|^2 + const``: the clean-target loss, for a denoiser of
        slightly stronger noise (variance ``1 / (1 - alpha)`` times), from one noisy shot. Requires
        ``split_problem(alpha) == ''``.
        """
        k_gauss, k_shot = jax.random.split(key)
        parts = self.parts if self.kind == "mix" else (self,)
        y = y.astype(jnp.float32)
        inp = tgt = y
        if any(p.kind == "gaussian" for p in parts):
            w = jax.random.normal(k_gauss, y.shape, jnp.float32) * _bcast(sigma, y)
            inp, tgt = y + math.sqrt(alpha / (1 - alpha)) * w, y - math.sqrt((1 - alpha) / alpha) * w
        peaks = [p.peak[1] for p in parts if p.kind == "poisson"]
        if peaks:
            n_max = max_count(max(peaks))
            shot = _bcast(peak > 0, y)
            scale = _bcast(jnp.where(peak > 0, peak, 1.0), y)
            counts = jnp.clip(jnp.round(y * scale), 0.0, n_max)
            z = binomial_sample(k_shot, counts, alpha, n_max)
            inp = jnp.where(shot, (counts - z) / ((1 - alpha) * scale), inp)
            tgt = jnp.where(shot, z / (alpha * scale), tgt)
        return inp, tgt

    def draw_identity(self) -> Optional["NoiseModel"]:
        """This model with the clipping left out: mixture components with the same identity can share one
        draw (``sample``). None for models whose draw cannot be shared (a JPEG stage keys its quality)."""
        if self.kind in ("mix", "none") or self.quality is not None:
            return None
        return dataclasses.replace(self, clip=True, spec="")

    def _draw(self, key: jax.Array, x: jax.Array, frame: Optional[Frame] = None):
        """(the unclipped noisy batch ``float32 [B, H, W, C]``, the parameters ``_finish`` needs) for ``x``
        (crops of larger images with a ``frame``: ``sample``)."""
        x = x.astype(jnp.float32)
        drawn = self._parameters(key, x.shape[0])
        k_param, k_noise, k_noise2 = drawn["k_param"], drawn["k_noise"], drawn["k_noise2"]
        peak, sigma, amount = (None if drawn[n] is None else _bcast(drawn[n], x) for n in ("peak", "sigma", "amount"))
        shot = None
        if self.kind == "paper":
            y = x + poisson_sample(k_noise, x, max_rate=1.0, frame=frame)
        elif self.kind in ("poisson", "poisson_gaussian"):
            y = poisson_sample(k_noise, x * peak, max_rate=self.peak[1], frame=frame) / peak
            if self.kind == "poisson_gaussian":
                y = y + (sigma / 255.0) * _field(jax.random.normal, k_noise2, x.shape, frame)
        elif self.kind == "gaussian":
            y = x + (sigma / 255.0) * _field(jax.random.normal, k_noise, x.shape, frame)
        elif self.kind == "salt_pepper":
            u = _field(jax.random.uniform, k_noise, x.shape, frame)
            y = jnp.where(u < amount / 2, 0.0, jnp.where(u > 1.0 - amount / 2, 1.0, x))
        elif self.kind == "camera":
            y, shot = camera.camera_noise(k_noise, x, self.iso)
            shot = _bcast(shot, x)
        else:  # parse() admits no other kind
            raise AssertionError(self.kind)
        return y, dict(k_param=k_param, peak=peak, sigma=sigma, amount=amount, shot=shot)

    def _parameters(self, key: jax.Array, batch: int) -> dict:
        """The keys and per-image parameters ``[B]`` (None where the kind has none) a draw with ``key`` uses:
        ``_draw`` and ``parameters`` share them, so a replay gives what the draw drew."""
        k_param, k_param2, k_noise, k_noise2 = jax.random.split(key, 4)
        drawn = dict(k_param=k_param, k_noise=k_noise, k_noise2=k_noise2, peak=None, sigma=None, amount=None)
        if self.kind in ("poisson", "poisson_gaussian"):
            drawn["peak"] = _per_image(k_param, self.peak, batch, log=True)
        if self.kind in ("gaussian", "poisson_gaussian"):
            drawn["sigma"] = _per_image(k_param2 if self.kind == "poisson_gaussian" else k_param, self.sigma, batch,
                                        log=False)
        if self.kind == "salt_pepper":
            drawn["amount"] = _per_image(k_param, self.amount, batch, log=False)
        return drawn

    def _finish(self, y: jax.Array, params: dict) -> Tuple[jax.Array, jax.Array]:
        """The drawn batch clipped (and quantised, JPEG-compressed) as this model stores it, and its level map."""
        b = y.shape[0]
        if self.clip:
            y = jnp.clip(y, 0.0, 1.0)
            if self.kind == "camera":  # the camera writes 8 bits
                y = jnp.round(y * 255.0) / 255.0
        if self.quality is not None:  # and then a JPEG file (parse() refuses it with :noclip)
            y = jpeg.compress(y, jpeg.random_quality(params["k_param"], self.quality, b))
        return y, _level(self.kind, y, params["peak"], params["sigma"], params["amount"], params["shot"])


def _level(kind: str, y: jax.Array, peak=None, sigma=None, amount=None, shot=None) -> jax.Array:
    """Noise-level map ``float32 [B, H, W, 1]`` of noisy ``y`` (``[B, H, W, C]``) for one noise kind.

    The standard deviation of the noise in [0, 1] units, per pixel, estimated from the noisy value (the clean
    one is unknown at inference): shot noise ``sqrt(y / peak)`` (its variance is the mean over the peak),
    plus ``(sigma / 255)**2`` of read noise; Gaussian ``sigma / 255``; the paper's ``y = x + Poisson(x)`` has
    mean 2x and variance x, so ``sqrt(y / 2)``; salt-and-pepper has no standard deviation, so its map holds
    the fraction of pixels hit; camera noise: ``camera.level`` (the raw noise through the nominal camera's
    gamma and tone curve). peak, sigma, amount, shot: per-image ``[B, 1, 1, 1]`` or scalars.
    """
    y = jnp.maximum(jnp.mean(y.astype(jnp.float32), axis=-1, keepdims=True), 0.0)
    if kind == "paper":
        return jnp.sqrt(y / 2.0)
    if kind == "poisson":
        return jnp.sqrt(y / peak)
    if kind == "poisson_gaussian":
        return jnp.sqrt(y / peak + jnp.square(sigma / 255.0))
    if kind == "gaussian":
        return jnp.broadcast_to(jnp.asarray(sigma / 255.0, jnp.float32), y.shape)
    if kind == "salt_pepper":
        return jnp.broadcast_to(jnp.asarray(amount, jnp.float32), y.shape)
    if kind == "camera":
        return camera.level(y, shot)
    if kind == "none":  # real noise of unknown level
        return jnp.zeros_like(y)
    raise AssertionError(kind)


def level_map(spec: str, y: jax.Array) -> jax.Array:
    """The noise-level map of noisy images ``y`` (``float [B, H, W, C]`` in [0, 1]) under a fixed-value spec,
    as ``NoiseModel.sample`` computes it in training: ``float32 [B, H, W, 1]``.

    For inference with a non-blind model, where the noise was not drawn by us: ``poisson:30``,
    ``gaussian:25``, ``poisson_gaussian:30,5``... A range or a mixture is refused (one level is needed).
    """
    m = parse(spec)
    if m.kind == "mix" or any(r is not None and r[0] != r[1] for r in (m.peak, m.sigma, m.amount, m.iso)):
        raise ValueError(f"noise level {spec!r}: give one value, not a range or a mixture (e.g. poisson:30)")
    one = lambda r: None if r is None else jnp.float32(r[0])
    shot = None if m.iso is None else jnp.float32(camera.iso_shot(m.iso[0]))
    return _level(m.kind, jnp.asarray(y), one(m.peak), one(m.sigma), one(m.amount), shot)


def _range(text: str, what: str, spec: str, lo_ok: float, hi_ok: float) -> Range:
    if text.strip().startswith("-") or "--" in text:  # '-5' would read as an empty low end
        raise ValueError(f"noise spec {spec!r}: {what} must be >= {lo_ok:g} (a range is low-high, e.g. 5-60), "
                         f"got {text}")
    parts = text.split("-")
    try:
        if len(parts) == 1:
            lo = hi = float(parts[0])
        elif len(parts) == 2:
            lo, hi = float(parts[0]), float(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"noise spec {spec!r}: {what} {text!r} is not a number or a range like 5-60") from None
    if not (lo_ok <= lo <= hi <= hi_ok) or not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"noise spec {spec!r}: {what} must satisfy {lo_ok:g} <= low <= high <= {hi_ok:g}, got {text}")
    return lo, hi


KINDS = ("paper", "poisson", "gaussian", "poisson_gaussian", "salt_pepper", "camera", "none")


@functools.lru_cache(maxsize=None)
def parse(spec: str) -> NoiseModel:
    """Parse a noise spec (see the module docstring); a bad spec raises ValueError with a one-line reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"noise spec must be a non-empty string like 'poisson:30', got {spec!r}")
    if "+" in spec:
        names = [p.strip() for p in spec.split("+")]
        if any(not p for p in names):
            raise ValueError(f"noise spec {spec!r}: a mixture joins specs with '+', e.g. poisson:5-60+gaussian:5-50")
        parts = tuple(parse(p) for p in names)
        if any(p.kind == "none" for p in parts):
            raise ValueError(f"noise spec {spec!r}: 'none' (real noisy inputs) cannot be mixed with synthetic noise")
        return NoiseModel("mix", spec=spec, parts=parts)
    parts = spec.strip().split(":")
    kind, args, clip = parts[0], parts[1:], True
    if args and args[-1] in ("clip", "noclip"):
        clip = args.pop() == "clip"
    if kind not in KINDS:
        raise ValueError(f"unknown noise model {kind!r} in spec {spec!r}: choose one of {', '.join(KINDS)}")
    if kind == "none":
        if args or not clip:
            raise ValueError(f"noise spec {spec!r}: 'none' takes no arguments")
        return NoiseModel("none", spec=spec)
    need = {"paper": (0,), "poisson": (1,), "gaussian": (1,), "poisson_gaussian": (1,), "salt_pepper": (1,),
            "camera": (0, 1)}[kind]
    if len(args) not in need:
        example = {"paper": "paper", "poisson": "poisson:30", "gaussian": "gaussian:25",
                   "poisson_gaussian": "poisson_gaussian:30,10", "salt_pepper": "salt_pepper:0.05",
                   "camera": "camera:100-12800"}[kind]
        raise ValueError(f"noise spec {spec!r}: expected the form {example!r}")
    if kind == "paper":
        return NoiseModel("paper", clip=clip, spec=spec)
    if kind == "poisson":
        return NoiseModel(kind, peak=_range(args[0], "peak", spec, 1e-3, MAX_RATE), clip=clip, spec=spec)
    if kind == "gaussian":
        return NoiseModel(kind, sigma=_range(args[0], "sigma", spec, 0.0, 1000.0), clip=clip, spec=spec)
    if kind == "salt_pepper":
        return NoiseModel(kind, amount=_range(args[0], "amount", spec, 0.0, 1.0), clip=clip, spec=spec)
    if kind == "camera":
        values = args[0].split(",") if args else []
        if len(values) > 2:
            raise ValueError(f"noise spec {spec!r}: expected 'camera:ISO' or 'camera:ISO,JPEG_QUALITY', "
                             f"e.g. camera:100-3200,60-100")
        iso = _range(values[0], "ISO-like level", spec, *camera.ISO_RANGE) if values else camera.DEFAULT_ISO
        quality = _range(values[1], "JPEG quality", spec, *jpeg.QUALITY_RANGE) if len(values) == 2 else None
        if quality is not None and not clip:
            raise ValueError(f"noise spec {spec!r}: a JPEG stores clipped 8-bit values: drop ':noclip'")
        return NoiseModel(kind, iso=iso, quality=quality, clip=clip, spec=spec)
    values = args[0].split(",")
    if len(values) != 2:
        raise ValueError(f"noise spec {spec!r}: expected 'poisson_gaussian:PEAK,SIGMA', e.g. poisson_gaussian:30,10")
    return NoiseModel(kind, peak=_range(values[0], "peak", spec, 1e-3, MAX_RATE),
                      sigma=_range(values[1], "sigma", spec, 0.0, 1000.0), clip=clip, spec=spec)


def apply(spec: str, key: jax.Array, x: jax.Array) -> jax.Array:
    """``parse(spec)(key, x)``: noisy ``x`` (``float [B, H, W, C]`` in [0, 1])."""
    return parse(spec)(key, x)
