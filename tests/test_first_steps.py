"""Every model learns from its first steps, and starts where its documented initialiser puts it.

A file of its own so that pytest-xdist (``--dist loadfile``) can run it beside tests/test_models.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdenoise import config as config_lib, models, noise, steps
from jaxdenoise.data import builtin


# Steps within which each model's training loss must fall below the identity's (the noisy input's): the
# residual models from their first steps; the paper's autoencoder is not residual (it starts at a grey
# image, sigmoid(.)) and passes the identity at ~180 steps (docs/quality.md).
FIRST_STEPS = {"paper": 200, "unet": 60, "dncnn": 60, "nafnet": 60, "drunet": 60}
# the documented default of each model; DnCNN at its 17 layers (depth is what stalled it) but width 32
FIRST_STEPS_MODEL = {"dncnn": dict(depth=17, width=32)}


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_every_model_learns_from_its_first_steps_at_the_configs_rate(name):
    """Adam at lr 1e-3 (every config's rate; 10 warm-up steps), batch 8 of 32x32 built-in crops at
    poisson:10: the mean training loss of the last 10 steps is below the identity's loss on the same noisy
    batches. Before the initialisation fixes NAFNet ended at ~2x the identity's loss (its output started
    ~1.0 away from its input) and a 17-layer DnCNN sat at the identity."""
    assert set(FIRST_STEPS) == set(models.REGISTRY)
    photos = [builtin.load_photo(builtin.photo_path(p, n)) for p, n in builtin.TRAIN_PHOTOS]
    rng = np.random.default_rng(0)
    crops = np.stack([c for ph in photos for c in builtin.random_crops(ph, 16, 32, rng)])
    model = models.create(models.default_config(name, **FIRST_STEPS_MODEL.get(name, {})))
    c = config_lib.base_config()
    c.warmup_steps = 10
    tx = steps.make_optimizer(c, total_steps=1000)
    nz = noise.parse("poisson:10")
    # jitted as training does (checkpointing.make_init): op by op, NAFNet's initialisers alone cost ~13 s here
    state = jax.jit(lambda r: steps.init_state(model, tx, r, (32, 32, 3)))(jax.random.PRNGKey(0))
    fn = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=nz))
    identity = jax.jit(lambda b, s: jnp.mean(jnp.square(nz.sample(jax.random.fold_in(jax.random.PRNGKey(1), s),
                                                                      steps.to_float(b))[0] - steps.to_float(b))))
    losses, ident = [], []
    for i in range(FIRST_STEPS[name]):  # device values kept: one host sync at the end, none per step
        b = jnp.asarray(crops[rng.integers(0, len(crops), 8)])
        ident.append(identity(b, state.step))
        state, m = fn(state, b, jax.random.PRNGKey(1))
        losses.append(m["loss"])
    losses, ident = np.asarray(jax.device_get(losses)), np.asarray(jax.device_get(ident))
    assert np.mean(losses[-10:]) < 0.9 * np.mean(ident[-10:]), (name, losses[:3], losses[-10:], ident[-10:])


def test_residual_models_start_at_or_near_the_identity_with_their_documented_initialisers():
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
    # NAFNet: PyTorch's default conv init (variance 1 / (3 fan_in), as its reference code gets), and the
    # ending conv zero: output = input exactly at the start (flax's lecun_normal left it ~1.0 away)
    naf = models.create(models.default_config("nafnet"))
    p = naf.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(np.asarray(naf.apply(p, x)), np.asarray(x))
    assert not np.any(np.asarray(p["params"]["ending"]["kernel"]))
    for path in (("intro", "kernel"), ("down0", "kernel"), ("enc0_0", "conv1", "kernel"), ("up0", "kernel")):
        k = p["params"]
        for key in path:
            k = k[key]
        fan_in = int(np.prod(k.shape[:-1]))
        np.testing.assert_allclose(np.var(np.asarray(k)), 1.0 / (3 * fan_in), rtol=0.25, err_msg=str(path))
        assert np.max(np.abs(np.asarray(k))) <= 1.0 / np.sqrt(fan_in) + 1e-7  # PyTorch's uniform bound
    # DnCNN: He init keeps the scale through 16 ReLU layers; the small last conv keeps the start near the
    # identity (a residual ~10x smaller than the image's spread; plain He: as large as it)
    dn = models.create(models.default_config("dncnn", depth=17, width=32))
    p = dn.init(jax.random.PRNGKey(0), x)
    k = np.asarray(p["params"]["conv5"]["kernel"])
    np.testing.assert_allclose(np.var(k), 2.0 / (9 * 32), rtol=0.25)
    residual = np.asarray(dn.apply(p, x) - x)
    assert 0 < np.std(residual) < 0.2 * float(np.std(np.asarray(x)))
