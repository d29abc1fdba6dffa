"""Noise models and the inverse-CDF Poisson sampler: parsing, shapes, determinism, statistics."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdenoise import noise

GOOD_SPECS = ["paper", "paper:noclip", "poisson:30", "poisson:5-60", "gaussian:25", "gaussian:5-50",
              "poisson_gaussian:30,10", "salt_pepper:0.05", "poisson:30:noclip", "poisson_gaussian:10-60,2-15",
              "salt_pepper:0.01-0.1", "gaussian:25:clip", "poisson_gaussian:10-60,2-15:noclip", "camera",
              "camera:1600", "camera:100-6400:noclip"]
BAD_SPECS = ["poisson", "poisson:abc", "gauss:25", "poisson:60-5", "", "   ", "salt_pepper:2", "gaussian:-5",
             "poisson:0", "poisson:1-2-3", "poisson_gaussian:30", "poisson_gaussian:30,10,5", "paper:30",
             "poisson:30:loud", "salt_pepper:0.05:noclip:clip", "poisson:nan", "gaussian:inf", "poisson:5000",
             "camera:10", "camera:6400-100", "camera:100,200", "camera:1-2-3", "camera:50000"]


def _x(shape=(2, 8, 8, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


_sample = jax.jit(noise.poisson_sample, static_argnums=2)


# ----------------------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------------------
def test_parse_good_specs():
    m = noise.parse("paper")
    assert (m.kind, m.clip) == ("paper", True)
    assert noise.parse("paper:noclip").clip is False
    assert noise.parse("poisson:30").peak == (30.0, 30.0)
    assert noise.parse("poisson:5-60").peak == (5.0, 60.0)
    assert noise.parse("gaussian:25").sigma == (25.0, 25.0)
    assert noise.parse("gaussian:5-50").sigma == (5.0, 50.0)
    m = noise.parse("poisson_gaussian:30,10")
    assert (m.kind, m.peak, m.sigma) == ("poisson_gaussian", (30.0, 30.0), (10.0, 10.0))
    assert noise.parse("poisson_gaussian:10-60,2-15").sigma == (2.0, 15.0)
    assert noise.parse("salt_pepper:0.05").amount == (0.05, 0.05)
    assert noise.parse("poisson:30:noclip").clip is False and noise.parse("gaussian:25:clip").clip is True
    for spec in GOOD_SPECS:
        m = noise.parse(spec)
        assert m.spec == spec and m.kind in noise.KINDS
        hash(m)  # usable as a static jit argument


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_parse_bad_specs(spec):
    with pytest.raises(ValueError, match=r"^(noise spec|unknown noise model)") as e:
        noise.parse(spec)
    assert str(e.value).strip() and "\n" not in str(e.value)


def test_parse_rejects_non_strings():
    with pytest.raises(ValueError, match="noise spec must be a non-empty string"):
        noise.parse(None)


# ----------------------------------------------------------------------------------------------------------
# every model
# ----------------------------------------------------------------------------------------------------------
MODEL_SPECS = ["paper", "paper:noclip", "poisson:30", "poisson:5-60", "gaussian:25", "gaussian:5-50",
               "poisson_gaussian:30,10", "poisson_gaussian:10-60,2-15:noclip", "salt_pepper:0.05", "camera",
               "camera:3200:noclip"]


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_model_shape_range_determinism_and_jit(spec):
    model = noise.parse(spec)
    x = _x()
    k1, k2 = jax.random.key(1), jax.random.key(2)
    y = model(k1, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y = np.asarray(y)
    assert np.all(np.isfinite(y))
    if model.clip:
        assert y.min() >= 0.0 and y.max() <= 1.0
    else:
        assert y.min() >= 0.0 or model.kind in ("gaussian", "poisson_gaussian", "camera")
    np.testing.assert_array_equal(np.asarray(model(k1, x)), y)
    assert not np.array_equal(np.asarray(model(k2, x)), y)
    assert not np.array_equal(y, np.asarray(x)), "noise must change the image"
    jitted = jax.jit(model)
    yj = np.asarray(jitted(k1, x))
    assert yj.shape == x.shape and yj.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(jitted(k1, x)), yj)
    # jit may fuse float ops differently from eager mode: almost every element agrees all the same
    assert np.mean(np.abs(yj - y) > 1e-5) < 0.01
    np.testing.assert_array_equal(np.asarray(noise.apply(spec, k1, x)), y)


def test_model_as_a_static_jit_argument():
    f = jax.jit(lambda k, x, m: m(k, x), static_argnums=2)
    x, key = _x(), jax.random.key(3)
    a = np.asarray(f(key, x, noise.parse("poisson:5-60")))
    np.testing.assert_array_equal(np.asarray(f(key, x, noise.parse("poisson:5-60"))), a)
    assert not np.array_equal(np.asarray(f(key, x, noise.parse("poisson:5-50"))), a)


def test_other_float_dtype_is_kept():
    x = _x().astype(jnp.bfloat16)
    y = noise.parse("poisson:30")(jax.random.key(0), x)
    assert y.dtype == jnp.bfloat16 and y.shape == x.shape


def test_noclip_may_exceed_one():
    x = jnp.full((2, 16, 16, 3), 0.9, jnp.float32)
    assert float(noise.parse("paper:noclip")(jax.random.key(0), x).max()) > 1.0
    assert float(noise.parse("paper")(jax.random.key(0), x).max()) == 1.0
    assert float(noise.parse("gaussian:50:noclip")(jax.random.key(0), x).max()) > 1.0


def test_paper_noise_adds_a_nonnegative_integer():
    x = _x((4, 16, 16, 3), seed=3)
    y = noise.parse("paper:noclip")(jax.random.key(5), x)
    d = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    assert np.all(np.abs(d - np.round(d)) < 1e-5), "the fractional part of x must be kept exactly"
    assert np.round(d).min() >= 0
    # Poisson(x): mean of the added counts equals the mean of x
    n = d.size
    assert abs(np.round(d).mean() - float(x.mean())) < 5 * np.sqrt(float(x.mean()) / n)
    assert np.round(d).max() >= 1


def test_poisson_noise_is_unbiased_with_variance_x_over_peak():
    x = jnp.full((4, 32, 32, 3), 0.5, jnp.float32)
    y = np.asarray(noise.parse("poisson:30:noclip")(jax.random.key(7), x), np.float64)
    n = y.size
    assert abs(y.mean() - 0.5) < 5 * np.sqrt(0.5 / 30 / n)
    assert abs(y.var() / (0.5 / 30) - 1) < 0.1
    assert np.allclose(y * 30, np.round(y * 30), atol=1e-3), "counts divided by the peak"


def test_gaussian_noise_std():
    x = jnp.full((4, 32, 32, 3), 0.5, jnp.float32)
    for sigma in (5.0, 25.0):
        d = np.asarray(noise.parse(f"gaussian:{sigma:g}:noclip")(jax.random.key(11), x), np.float64) - 0.5
        assert abs(d.mean()) < 5 * sigma / 255 / np.sqrt(d.size)
        assert abs(d.std() / (sigma / 255) - 1) < 0.05
    d = np.asarray(noise.parse("poisson_gaussian:30,10:noclip")(jax.random.key(12), x), np.float64) - 0.5
    assert abs(d.var() / (0.5 / 30 + (10 / 255) ** 2) - 1) < 0.1


def test_salt_pepper_fraction():
    x = jnp.full((4, 32, 32, 3), 0.5, jnp.float32)
    y = np.asarray(noise.parse("salt_pepper:0.05")(jax.random.key(13), x))
    changed = y != 0.5
    assert set(np.unique(y[changed]).tolist()) <= {0.0, 1.0}
    se = np.sqrt(0.05 * 0.95 / y.size)
    assert abs(changed.mean() - 0.05) < 5 * se
    assert abs((y == 0).mean() - 0.025) < 5 * se and abs((y == 1).mean() - 0.025) < 5 * se
    assert not np.any(np.asarray(noise.parse("salt_pepper:0")(jax.random.key(13), x)) != 0.5)


def _per_image(y, x):
    return np.asarray(y - x, np.float64).reshape(y.shape[0], -1)


def test_ranges_draw_parameters_per_image():
    x = jnp.full((8, 16, 16, 3), 0.5, jnp.float32)
    key = jax.random.key(21)
    var = _per_image(noise.parse("poisson:5-60:noclip")(key, x), x).var(axis=1)
    assert var.max() / var.min() > 2, var
    fixed = _per_image(noise.parse("poisson:30:noclip")(key, x), x).var(axis=1)
    assert fixed.max() / fixed.min() < 1.5, fixed
    # log-uniform peak in [5, 60]: each image's variance x / peak lies within the range (with sampling slack)
    assert var.min() > 0.5 / 60 * 0.7 and var.max() < 0.5 / 5 * 1.3
    std = _per_image(noise.parse("gaussian:5-50:noclip")(key, x), x).std(axis=1)
    assert std.max() / std.min() > 2 and std.min() > 5 / 255 * 0.8 and std.max() < 50 / 255 * 1.2
    frac = (_per_image(noise.parse("salt_pepper:0.01-0.3")(key, x), x) != 0).mean(axis=1)
    assert frac.max() / max(frac.min(), 1e-3) > 2


# ----------------------------------------------------------------------------------------------------------
# the Poisson sampler against the exact distribution
# ----------------------------------------------------------------------------------------------------------
def _chi_square_pvalue(samples: np.ndarray, rate: float) -> float:
    """Chi-square goodness of fit against Poisson(rate), adjacent bins merged so every expected count >= 5."""
    n = samples.size
    top = int(max(samples.max(), stats.poisson.isf(1e-12, rate))) + 1
    ks = np.arange(top + 1)
    observed = np.bincount(samples.astype(np.int64), minlength=top + 1)[: top + 1].astype(np.float64)
    expected = n * stats.poisson.pmf(ks, rate)
    expected[-1] += n * stats.poisson.sf(top, rate)  # the last bin holds the whole right tail
    assert observed.sum() == n
    obs_bins, exp_bins, o, e = [], [], 0.0, 0.0
    for ok, ek in zip(observed, expected):
        o, e = o + ok, e + ek
        if e >= 5:
            obs_bins.append(o)
            exp_bins.append(e)
            o, e = 0.0, 0.0
    if e > 0 or o > 0:  # the remainder joins the last full bin
        obs_bins[-1] += o
        exp_bins[-1] += e
    if len(obs_bins) < 2:
        return 1.0
    exp_bins = np.asarray(exp_bins)
    exp_bins *= n / exp_bins.sum()
    return float(stats.chisquare(obs_bins, exp_bins).pvalue)


# (rate, max_rate): the rate sets the distribution, max_rate the window (rates 64.5 and up take the
# shifted window); the last two check a rate far below the window's max_rate
POISSON_CASES = [(r, r) for r in (0.001, 0.05, 0.5, 1.0, 4.0, 30.0, 63.0, 64.5, 100.0, 150.0, 500.0, 1000.0,
                                  2000.0)] + [(4.0, 150.0), (64.5, 2000.0)]


@pytest.mark.parametrize("rate,max_rate", POISSON_CASES)
def test_poisson_sample_matches_the_exact_distribution(rate, max_rate):
    n = 200_000
    key = jax.random.key(int(rate * 1000) + int(max_rate))
    x = np.asarray(_sample(key, jnp.full((n,), rate, jnp.float32), float(max_rate)))
    assert x.dtype == np.float32 and x.shape == (n,)
    assert np.all(x >= 0) and np.array_equal(x, np.round(x)), "samples must be non-negative integers"
    ref = np.random.default_rng(int(rate * 1000)).poisson(rate, n)
    se_mean = np.sqrt(rate / n)
    se_var = np.sqrt((rate + 2 * rate**2) / n)  # Var of the sample variance of a Poisson
    assert abs(x.mean() - rate) < 5 * se_mean, (x.mean(), rate)
    assert abs(x.var() - rate) < 5 * se_var, (x.var(), rate)
    assert abs(x.mean() - ref.mean()) < 5 * np.sqrt(2) * se_mean
    assert abs(x.var() - ref.var()) < 5 * np.sqrt(2) * se_var
    p = _chi_square_pvalue(x, rate)
    assert p > 1e-4, f"Poisson({rate}) samples do not fit the exact pmf: chi-square p = {p:.2e}"
    assert _chi_square_pvalue(ref.astype(np.float32), rate) > 1e-4  # the test itself accepts true samples


@pytest.mark.parametrize("rate", [150.0, 2000.0])
def test_no_pile_up_at_the_window_end(rate):
    # if the window's CDF stops short of 1 (float32 error in p(j0) or in the sums), every uniform above it
    # yields the window's last point, many standard deviations above the mean
    n = 400_000
    x = np.asarray(_sample(jax.random.key(17), jnp.full((n,), rate, jnp.float32), rate))
    far = x > rate + 5 * np.sqrt(rate)
    expected = n * stats.poisson.sf(rate + 5 * np.sqrt(rate), rate)  # ~0.1 samples
    assert far.sum() <= expected + 10, (far.sum(), expected, x.max())


def test_chi_square_check_detects_a_wrong_rate():
    x = np.asarray(_sample(jax.random.key(0), jnp.full((200_000,), 30.0, jnp.float32), 30.0))
    assert _chi_square_pvalue(x, 30.5) < 1e-4
    assert _chi_square_pvalue(np.round(np.random.default_rng(0).normal(30, np.sqrt(30), 200_000)), 30.0) < 1e-4


@pytest.mark.parametrize("max_rate", [1.0, 63.0, 500.0])
def test_poisson_sample_rate_zero_and_mixed_rates(max_rate):
    assert not np.asarray(_sample(jax.random.key(1), jnp.zeros((1000,), jnp.float32), max_rate)).any()
    # elementwise rates: each element follows its own rate
    lam = jnp.asarray(np.repeat([0.0, 0.5, max_rate / 2, max_rate], 20_000), jnp.float32)
    x = np.asarray(_sample(jax.random.key(2), lam, max_rate)).reshape(4, -1)
    assert not x[0].any()
    for row, rate in zip(x[1:], (0.5, max_rate / 2, max_rate)):
        assert abs(row.mean() - rate) < 5 * np.sqrt(rate / row.size)


def test_poisson_sample_shape_and_bad_max_rate():
    lam = jnp.full((2, 3, 4, 3), 2.0, jnp.float32)
    x = noise.poisson_sample(jax.random.key(0), lam, 4.0)
    assert x.shape == lam.shape and x.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(x), np.asarray(noise.poisson_sample(jax.random.key(0), lam, 4.0)))
    for bad in (0.0, -1.0, noise.MAX_RATE * 2):
        with pytest.raises(ValueError, match="max_rate must be in"):
            noise.poisson_sample(jax.random.key(0), lam, bad)


def test_window_width_grows_like_the_standard_deviation():
    widths = [noise.window_width(r) for r in (1.0, 30.0, 100.0, 500.0, 2000.0)]
    assert widths == sorted(widths)
    for rate in (1.0, 30.0, 100.0, 500.0, 2000.0):  # the window covers all but 2**-25 of the mass
        j0 = float(noise._window_start(np.float64(rate), np))
        if j0 > 0:
            assert stats.poisson.cdf(j0 - 1, rate) < 2**-25
        assert stats.poisson.sf(j0 + noise.window_width(rate) - 1, rate) < 2**-25


def test_the_poisson_quantile_is_scipy_stats_own():
    """noise.poisson_isf (scipy.special alone, cheaper to import) gives scipy.stats' answer, ties included."""
    rng = np.random.default_rng(0)
    lams = np.concatenate([np.linspace(1e-6, 3000.0, 40001), rng.random(20000) * 5, 10 ** rng.uniform(-6, 4, 20000)])
    for q in (2.0**-25, 1e-3, 0.5, 0.9):
        np.testing.assert_array_equal(noise.poisson_isf(q, lams), stats.poisson.isf(q, lams), err_msg=str(q))


def test_mixture_picks_one_component_per_image():
    m = noise.parse("poisson:30+gaussian:25")
    assert m.kind == "mix" and [p.kind for p in m.parts] == ["poisson", "gaussian"]
    x = jnp.full((64, 16, 16, 3), 0.5, jnp.float32)
    y = np.asarray(m(jax.random.PRNGKey(0), x))
    # shot noise at peak 30 gives values on the lattice k/30; Gaussian noise almost never does
    on_lattice = np.all(np.abs(y * 30 - np.round(y * 30)) < 1e-4, axis=(1, 2, 3))
    assert 10 < on_lattice.sum() < 54, on_lattice.sum()
    np.testing.assert_array_equal(y, np.asarray(m(jax.random.PRNGKey(0), x)))
    with pytest.raises(ValueError, match="mixture"):
        noise.parse("poisson:30+")
    with pytest.raises(ValueError, match="unknown noise model"):
        noise.parse("poisson:30+gauss:25")


def test_mixture_twins_share_one_draw_and_keep_their_own_clipping():
    """'poisson:30+poisson:30:noclip': one shot-noise draw serves both components (half the sampling cost),
    yet each image is exactly its component: the unclipped one leaves [0, 1], the clipped one is its clip."""
    m = noise.parse("poisson:30+poisson:30:noclip+gaussian:25")
    assert m.parts[0].draw_identity() == m.parts[1].draw_identity() != m.parts[2].draw_identity()
    x = jnp.asarray(np.random.default_rng(0).uniform(0.0, 1.0, (48, 16, 16, 3)), jnp.float32)
    key = jax.random.PRNGKey(3)
    y = np.asarray(m(key, x))
    k_pick, k0, _, k2 = jax.random.split(key, 4)
    pick = np.asarray(jax.random.randint(k_pick, (48,), 0, 3))
    assert set(pick) == {0, 1, 2}
    unclipped = np.asarray(m.parts[1](k0, x))  # the twins' draw, keyed by the first twin
    np.testing.assert_allclose(y[pick == 1], unclipped[pick == 1], atol=1e-6)
    np.testing.assert_allclose(y[pick == 0], np.clip(unclipped[pick == 0], 0, 1), atol=1e-6)
    assert unclipped[pick == 1].max() > 1.0 and y[pick == 0].max() <= 1.0
    # a component without a twin draws what it draws alone, with its own key
    np.testing.assert_allclose(y[pick == 2], np.asarray(m.parts[2](k2, x))[pick == 2], atol=1e-6)
    # the unclipped twin's shot noise keeps its variance x / peak (the shared draw is a real draw)
    resid = (unclipped - np.asarray(x)) / np.sqrt(np.maximum(np.asarray(x), 0.05) / 30.0)
    assert 0.85 < resid.std() < 1.15, resid.std()


@pytest.mark.parametrize("spec", ["poisson:30", "poisson_gaussian:10-60,2-15",
                                  "poisson:5-60+gaussian:5-50+poisson:5-60:noclip+gaussian:5-50:noclip"])
def test_the_shot_noise_chain_is_compiled_once(spec):
    """The inversion chain runs once per draw: XLA:CPU fused it into every consumer (the noisy batch, the level
    map, the mixture's twins), several times the sampler's cost (``fusion.materialise``). Counted in the
    compiled program: the fused computations holding the chain (~2 multiplies per step of a window of 70-109)."""
    import re
    m = noise.parse(spec)
    x, key = jnp.full((2, 8, 8, 3), 0.5, jnp.float32), jax.random.PRNGKey(0)
    text = jax.jit(lambda k, x: m.sample(k, x)).lower(key, x).compile().as_text()
    chains = [c for c in re.split(r"\n(?=\S)", text) if c.count(" multiply(") > 60]
    assert len(chains) == 1, [c.split("\n")[0][:80] for c in chains]

@pytest.mark.parametrize("spec", ["paper", "poisson:5-60:noclip", "gaussian:25", "poisson_gaussian:10-60,2-15",
                                  "salt_pepper:0.05", "poisson:5-60+gaussian:5-50:noclip", "poisson:300"])
def test_a_crop_noised_in_its_frame_equals_the_crop_of_its_noisy_whole_image(spec):
    """``sample(key, crops, frame)``: each crop gets, pixel for pixel, the noise its whole image gets from the
    same key (the fixed-noise setting's cheap path); only for models whose noise is pixelwise."""
    model = noise.parse(spec)
    assert model.pixelwise
    x = _x((3, 12, 10, 3), seed=4)
    key = jax.random.key(7)
    whole, whole_level = model.sample(key, x)
    origin = jnp.array([[0, 0], [5, 2], [3, 4]], jnp.int32)
    cut = lambda a: jnp.stack([a[i, y:y + 7, x0:x0 + 6] for i, (y, x0) in enumerate(np.asarray(origin))])
    crops, level = jax.jit(lambda c, o: model.sample(key, c, (o, (12, 10))))(cut(x), origin)
    # float rounding (jit fuses the division by the peak differently) is ~1e-7; a different draw would move
    # a pixel by a whole photon (>= 1/60) or a Gaussian variate
    np.testing.assert_allclose(np.asarray(crops), np.asarray(cut(whole)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(level), np.asarray(cut(whole_level)), rtol=1e-6, atol=1e-6)
    assert not np.array_equal(np.asarray(crops[1]), np.asarray(cut(x)[1]))  # it is noise


@pytest.mark.parametrize("spec", ["camera:1600", "camera:100-3200,60-100", "gaussian:25+camera:1600"])
def test_noise_that_mixes_neighbouring_pixels_refuses_a_frame(spec):
    model = noise.parse(spec)
    assert not model.pixelwise
    with pytest.raises(ValueError, match="mixes neighbouring pixels"):
        model.sample(jax.random.key(0), _x((1, 8, 8, 3)), (jnp.zeros((1, 2), jnp.int32), (16, 16)))


# ----------------------------------------------------------------------------------------------------------
# the recorrupted target's split: binomial sampler, replayed parameters, two independent copies
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,p", [(40, 0.2), (7, 0.5), (60, 0.05)])
def test_binomial_sample_matches_the_exact_distribution(n, p):
    size = 200_000
    n_max = noise.max_count(30.0)
    z = np.asarray(jax.jit(noise.binomial_sample, static_argnums=(2, 3))(
        jax.random.key(n), jnp.full((size,), float(n)), p, n_max))
    assert np.array_equal(z, np.round(z)) and z.min() >= 0 and z.max() <= n
    observed = np.bincount(z.astype(int), minlength=n + 1)
    expected = stats.binom.pmf(np.arange(n + 1), n, p) * size
    keep = expected > 5  # pool the sparse tails
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


def test_binomial_sample_of_mixed_counts_stays_within_them():
    n = jnp.asarray(np.random.default_rng(0).integers(0, 66, (64, 64)), jnp.float32)
    z = np.asarray(noise.binomial_sample(jax.random.key(1), n, 0.2, noise.max_count(30.0)))
    assert np.all(z <= np.asarray(n)) and np.all(z[np.asarray(n) == 0] == 0)
    with pytest.raises(ValueError, match="underflows"):
        noise.binomial_sample(jax.random.key(1), n, 0.5, 1000)


def test_parameters_replay_what_each_image_drew():
    """``parameters(key, B)`` gives, per image, the peak and sigma ``sample(key, x)`` drew (the mixture's pick
    and its ranges included): checked against the level map, which the draw computes from them exactly."""
    nz = noise.parse("gaussian:5-50:noclip+poisson:5-60:noclip+poisson:5-60")
    x = _x((32, 8, 8, 3))
    y, level = nz.sample(jax.random.key(4), x)
    peak, sigma = map(np.asarray, nz.parameters(jax.random.key(4), 32))
    shot, gauss = peak > 0, sigma > 0
    assert np.all(shot ^ gauss) and shot.sum() >= 8 and gauss.sum() >= 4  # one kind per image, both drawn
    assert len(np.unique(peak[shot])) == shot.sum() and len(np.unique(sigma[gauss])) == gauss.sum()
    np.testing.assert_allclose(np.asarray(level)[gauss], np.broadcast_to(
        sigma[gauss, None, None, None], (gauss.sum(), 8, 8, 1)), rtol=1e-6)
    mean_y = np.maximum(np.asarray(y).mean(-1, keepdims=True), 0)
    np.testing.assert_allclose(np.asarray(level)[shot], np.sqrt(mean_y[shot] / peak[shot, None, None, None]),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("spec,var", [("gaussian:25:noclip", lambda x: (25 / 255) ** 2 + 0 * x),
                                      ("poisson:30:noclip", lambda x: x / 30)])
def test_recorrupted_copies_are_unbiased_and_independent(spec, var):
    """Both copies of a noisy image have the clean image as mean, noise variances var / (1 - alpha) and var /
    alpha, and noises uncorrelated with each other (GR2R); shot noise's copies are rescaled integer counts."""
    nz, alpha = noise.parse(spec), 0.2
    assert nz.split_problem(alpha) == ""
    x = jnp.broadcast_to(jnp.asarray([0.1, 0.4, 0.8], jnp.float32), (64, 64, 64, 3))
    key = jax.random.key(2)
    y, _ = nz.sample(key, x)
    a, b = jax.jit(lambda k, y, p, s: nz.recorrupt(k, y, p, s, alpha))(jax.random.key(3), y, *nz.parameters(key, 64))
    for c, v in enumerate((0.1, 0.4, 0.8)):
        na, nb = np.asarray(a[..., c]).ravel() - v, np.asarray(b[..., c]).ravel() - v
        n = na.size
        assert abs(na.mean()) < 5 * np.sqrt(var(v) / (1 - alpha) / n)
        assert abs(nb.mean()) < 5 * np.sqrt(var(v) / alpha / n)
        np.testing.assert_allclose(na.var(), var(v) / (1 - alpha), rtol=0.03)
        np.testing.assert_allclose(nb.var(), var(v) / alpha, rtol=0.03)
        assert abs(np.corrcoef(na, nb)[0, 1]) < 0.01
    if nz.kind == "poisson":
        counts = np.asarray(b) * alpha * 30
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


def test_noise_that_cannot_be_split_says_why():
    assert "clipped" in noise.parse("gaussian:25").split_problem(0.2)
    assert "Gaussian or shot" in noise.parse("salt_pepper:0.05").split_problem(0.2)
    assert "Gaussian or shot" in noise.parse("poisson_gaussian:30,5:noclip").split_problem(0.2)
    assert "too large" in noise.parse("poisson:1000:noclip").split_problem(0.2)
    assert noise.parse("gaussian:5-50:noclip+poisson:5-60:noclip").split_problem(0.2) == ""
