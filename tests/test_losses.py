"""Losses against their formulas, and the optimisers and losses the config names, through the train step."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdenoise import config as config_lib, losses, metrics, models, noise, steps


def _pair(seed=0, shape=(3, 8, 6, 3)):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, shape).astype(np.float32)
    return (y + rng.normal(0, 0.1, shape)).astype(np.float32), y


def test_losses_follow_their_formulas_per_image():
    x, y = _pair()
    d = (x - y).reshape(3, -1).astype(np.float64)
    expected = {
        "mse": np.mean(d ** 2, axis=1),
        "l1": np.mean(np.abs(d), axis=1),
        "charbonnier": np.mean(np.sqrt(d ** 2 + 1e-6), axis=1),
        "psnr": 10 * np.log10(np.mean(d ** 2, axis=1) + 1e-8),
    }
    for name, want in expected.items():
        got = np.asarray(losses.get(name)(jnp.asarray(x), jnp.asarray(y)))
        assert got.shape == (3,)
        np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=name)
    # the PSNR loss is minus the metric's PSNR (data range 1) wherever the images differ
    np.testing.assert_allclose(-np.asarray(losses.psnr(jnp.asarray(x), jnp.asarray(y))),
                               np.asarray(metrics.psnr_per_image(jnp.asarray(x), jnp.asarray(y))), rtol=1e-4)
    # Charbonnier tends to L1 away from 0 and stays smooth (finite gradient) at a perfect match
    g = jax.grad(lambda a: jnp.sum(losses.charbonnier(a, jnp.asarray(y))))(jnp.asarray(y))
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) == 0.0
    with pytest.raises(ValueError, match="loss='ssim' is not one of"):
        losses.get("ssim")


def _setup(**fields):
    c = config_lib.base_config()
    c.update(fields)
    config_lib.validate(c)
    model = models.create(ml_collections.ConfigDict(dict(name="unet", widths=(8, 8), residual=True, noise_level=False)))
    tx = steps.make_optimizer(c, total_steps=10)
    state = steps.init_state(model, tx, jax.random.PRNGKey(0), (16, 16, 3))
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), np.uint8))
    return c, model, tx, state, batch


@pytest.mark.parametrize("loss", ["l1", "charbonnier", "psnr"])
def test_each_loss_trains_and_micro_batches_add_up_to_the_whole_batch(loss):
    c, model, tx, state, batch = _setup(loss=loss)
    nz = noise.parse("gaussian:25")
    whole = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=nz, loss=loss))
    split = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=nz, loss=loss, chunks=2))
    rng = jax.random.PRNGKey(3)
    s1, m1 = whole(state, batch, rng)
    s2, m2 = split(state, batch, rng)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # the reported loss is the configured one, of the output before the update
    out = model.apply({"params": state.params}, steps.model_input(model, nz.sample(jax.random.fold_in(rng, 0),
                                                                                 steps.to_float(batch))[0], None))
    np.testing.assert_allclose(float(m1["loss"]), float(jnp.mean(losses.get(loss)(out, steps.to_float(batch)))),
                               rtol=1e-5)
    s = state
    for _ in range(15):
        s, m = whole(s, batch, rng)
    assert float(m["loss"]) < float(m1["loss"])


def test_adamw_is_optax_adamw_with_the_configured_betas_and_decay():
    c, model, tx, state, batch = _setup(optimizer="adamw", b1=0.9, b2=0.9, weight_decay=0.5)
    ref = optax.adamw(1e-3, b1=0.9, b2=0.9, weight_decay=0.5)
    grads = jax.tree.map(jnp.ones_like, state.params)
    mine, _ = tx.update(grads, tx.init(state.params), state.params)
    theirs, _ = ref.update(grads, ref.init(state.params), state.params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    # the decay is there: with the same gradients, adam (no decay) moves the weights differently
    plain = steps.make_optimizer(_setup(b1=0.9, b2=0.9)[0], 10)
    other, _ = plain.update(grads, plain.init(state.params), state.params)
    kernel = lambda t: np.asarray(t["enc0_a"]["kernel"])
    assert not np.allclose(kernel(mine), kernel(other))
