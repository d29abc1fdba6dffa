"""Throughput features: multi-step calls, bfloat16, no implicit transfers in the loop, benchmark JSON."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdenoise import benchmark, models, noise, parallel, steps, train
from jaxdenoise.data import feed
from jaxdenoise.data import loader
from tests.test_train import tiny_config


def _setup(dtype="float32"):
    cfg = tiny_config("/nonexistent")
    model = models.create(cfg.model, dtype)
    tx = steps.make_optimizer(cfg, 100)
    state = steps.init_state(model, tx, jax.random.PRNGKey(0), (16, 16, 3))
    kw = dict(model=model, tx=tx, noise=noise.parse("poisson:30"))
    return state, kw


def test_multi_step_equals_k_single_steps():
    state, kw = _setup()
    batches = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 16, 16, 3), np.uint8))
    rng = jax.random.PRNGKey(7)
    single = jax.jit(steps.bind(steps.train_step, **kw))
    s = state
    losses = []
    for i in range(3):
        s, m = single(s, batches[i], rng)
        losses.append(float(m["loss"]))
    multi, mm = jax.jit(steps.bind(steps.multi_train_step, **kw))(state, batches, rng)
    assert int(multi.step) == int(s.step) == 3
    np.testing.assert_allclose(np.asarray(mm["loss"]), losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(multi.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_micro_batches_give_the_same_step_as_the_whole_batch():
    state, kw = _setup()
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8))
    rng = jax.random.PRNGKey(3)
    whole, mw = jax.jit(steps.bind(steps.train_step, **kw))(state, batch, rng)
    for chunks in (2, 8):
        part, mp = jax.jit(steps.bind(steps.train_step, chunks=chunks, **kw))(state, batch, rng)
        for key in ("loss", "psnr", "noisy_psnr", "grad_norm"):
            np.testing.assert_allclose(float(mp[key]), float(mw[key]), rtol=1e-5, err_msg=key)
        for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(part.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_micro_batch_config_picks_chunks():
    # auto: CPU chunks of at most 64^2 pixels, the largest that divides the per-device batch
    assert steps.micro_batch_chunks(0, 16, 128, "cpu") == 16
    assert steps.micro_batch_chunks(0, 16, 64, "cpu") == 16
    assert steps.micro_batch_chunks(0, 16, 32, "cpu") == 4
    assert steps.micro_batch_chunks(0, 12, 16, "cpu") == 1
    assert steps.micro_batch_chunks(0, 12, 32, "cpu") == 3
    assert steps.micro_batch_chunks(0, 8, 512, "cpu") == 8  # one image is already over: one per chunk
    assert steps.micro_batch_chunks(0, 16, 128, "gpu") == 1  # accelerators: the whole batch
    assert steps.micro_batch_chunks(0, 16, 64, "cpu", whole_batch=True) == 1  # oneDNN convs: the whole batch
    assert steps.micro_batch_chunks(4, 16, 64, "cpu", whole_batch=True) == 4  # an explicit choice stands
    assert steps.micro_batch_chunks(4, 16, 128, "gpu") == 4
    with pytest.raises(ValueError, match="micro_batch=5 must divide the per-device batch"):
        steps.micro_batch_chunks(5, 16, 128, "cpu")


def test_unrolled_multi_step_equals_the_scan():
    state, kw = _setup()
    batches = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 4, 16, 16, 3), np.uint8))
    rng = jax.random.PRNGKey(2)
    a, ma = jax.jit(steps.bind(steps.multi_train_step, **kw))(state, batches, rng)
    b, mb = jax.jit(steps.bind(steps.multi_train_step, unroll=True, chunks=2, **kw))(state, batches, rng)
    np.testing.assert_allclose(np.asarray(ma["loss"]), np.asarray(mb["loss"]), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_retain_freed_memory_applies_in_a_fresh_process():
    import os
    import subprocess
    import sys
    code = "from jaxdenoise import hostmem; print(hostmem.retain_freed_memory())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "JAXDENOISE_RETAIN_MEMORY": "0"})
    assert off.stdout.strip() == "False"
    import platform
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert on.stdout.strip() == "True", on.stderr


def test_bfloat16_trains_with_float32_params():
    state, kw = _setup("bfloat16")
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), np.uint8))
    fn = jax.jit(steps.bind(steps.train_step, **kw))
    first = None
    for _ in range(8):
        state, m = fn(state, batch, jax.random.PRNGKey(0))
        first = first if first is not None else float(m["loss"])
    assert float(m["loss"]) < first
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.opt_state) if hasattr(p, "dtype")
               and jnp.issubdtype(p.dtype, jnp.floating))


def test_training_loop_makes_no_implicit_transfers():
    """The hot loop (prefetch -> step) under transfer_guard('disallow'): only explicit transfers happen."""
    state, kw = _setup()
    mesh = parallel.make_mesh()
    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.device_put(state, repl)
    rng = jax.device_put(jax.random.PRNGKey(0), repl)
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), np.uint8)
    it = iter(loader.make_loader(images, 4, 0, 10))
    prefetch = feed.DevicePrefetcher(it, rows)
    step = jax.jit(steps.bind(steps.train_step, **kw), in_shardings=(repl, rows, repl), out_shardings=(repl, repl),
                   donate_argnums=0)
    batch, _ = next(prefetch)
    compiled = step.lower(state, batch, rng).compile()
    with jax.transfer_guard("disallow"):
        for _ in range(4):
            state, m = compiled(state, batch, rng)
            batch, _ = next(prefetch)
        host = jax.device_get(m)
    assert np.isfinite(host["loss"])
    with pytest.raises(Exception, match="host-to-device"):  # the guard is live: an implicit copy is refused
        with jax.transfer_guard("disallow"):
            compiled(state, np.zeros((4, 16, 16, 3), np.uint8), rng)


def test_benchmark_reports_the_documented_keys(tmp_path):
    cfg = tiny_config(tmp_path / "cache")
    res = benchmark.run(cfg, steps_n=2, loader_batches=5)
    for key in ("train_img_per_s", "end_to_end_img_per_s", "loader_img_per_s", "noise_fraction", "compile_s",
                "flops_per_img", "bytes_per_img", "device", "batch_size", "dtype"):
        assert key in res, key
    assert res["train_img_per_s"] > 0 and res["flops_per_img"] > 0 and 0 < res["noise_fraction"]
    assert res["batch_size"] == 8 and res["dtype"] == "float32"
    assert "train step" in benchmark.format_table(res)
    assert res["noise_setting"] == "renoised"


def test_benchmark_times_the_fixed_noise_step_training_runs(tmp_path):
    """With noise_fixed the benchmark feeds the fixed-noise batches (whole images and their meta) through the
    loader and the step that training uses, and says so."""
    cfg = tiny_config(tmp_path / "cache", noise_fixed=True, **{"data.patch": 8, "data.flips": True,
                                                                "data.rot90": True})
    res = benchmark.run(cfg, steps_n=2, loader_batches=5)
    assert res["noise_setting"] == "fixed" and res["image_size"] == 8
    assert res["train_img_per_s"] > 0 and res["end_to_end_img_per_s"] > 0 and res["flops_per_img"] > 0
    assert "fixed" in benchmark.format_table(res)


def test_device_resident_data_trains_the_same_as_the_grain_loader(tmp_path):
    a, b = tmp_path / "grain", tmp_path / "resident"
    train.train_and_evaluate(tiny_config(tmp_path / "cache", num_epochs=2), str(a))
    train.train_and_evaluate(tiny_config(tmp_path / "cache", num_epochs=2, **{"data.device_resident": True}), str(b))
    from jaxdenoise import checkpointing
    _, pa, _ = checkpointing.load_params(str(a), "latest")
    _, pb, _ = checkpointing.load_params(str(b), "latest")
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_benchmark_layer_list_is_the_unets_own():
    """benchmark.py --layers times the U-Net's convolutions: the same names and kernel shapes as the model's."""
    import jax
    import jax.numpy as jnp
    from jaxdenoise import benchmark, models
    model = models.create(models.default_config("unet"))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))["params"]
    listed = {name: (3, 3, cin, cout) for name, _, _, cin, cout in benchmark.unet_conv_layers()}
    assert listed == {name: p["kernel"].shape for name, p in params.items()}
