"""Training: model table, train step, end-to-end run, exact resume, NaN stop, config errors, signals."""
import json
import os
import signal
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdenoise import checkpointing, config as config_lib, fsutil, models, noise, steps, train
from jaxdenoise.models.layers import Conv3x3, ConvTranspose2x, max_pool_2x2
from tests.helpers import assert_same_run, resumes_bitwise, script, stop_at  # noqa: F401 (others import them here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")  # the tiny run, shared with the fault suite


def tiny_config(cache_dir, **overrides):
    """``configs/tiny.py`` with its data cache in ``cache_dir`` and ``{"a.b": value}`` overrides."""
    c = config_lib.load_file(TINY_CONFIG)
    c.data.cache_dir = str(cache_dir)
    return set_fields(c, overrides)


def set_fields(c, overrides):
    """``c`` with ``{"a.b": value}`` overrides set (dotted names reach nested fields)."""
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def final_params(workdir, which="latest"):
    _, params, step = checkpointing.load_params(str(workdir), which)
    return params, step


# ---------------------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------------------
def test_paper_model_matches_the_table():
    mc = ml_collections.ConfigDict(dict(name="paper", widths=(64, 32), latent=3))
    model = models.create(mc)
    x = jnp.zeros((2, 128, 128, 3))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == 51_494
    shapes = {name: p["kernel"].shape for name, p in params.items()}
    assert shapes == {"E1": (3, 3, 3, 64), "E3": (3, 3, 64, 32), "E5": (3, 3, 32, 3), "D1": (3, 3, 3, 32),
                      "D2": (3, 3, 32, 32), "D3": (3, 3, 32, 64), "D4": (3, 3, 64, 3)}
    # intermediate shapes: capture each layer's output
    _, inter = model.apply({"params": params}, x, capture_intermediates=True)
    out_shapes = {k: v["__call__"][0].shape[1:] for k, v in inter["intermediates"].items() if k != "__call__"}
    assert out_shapes == {"E1": (128, 128, 64), "E3": (64, 64, 32), "E5": (32, 32, 3), "D1": (32, 32, 32),
                          "D2": (64, 64, 32), "D3": (128, 128, 64), "D4": (128, 128, 3)}
    y = model.apply({"params": params}, jax.random.uniform(jax.random.PRNGKey(1), (2, 128, 128, 3)))
    assert y.shape == (2, 128, 128, 3) and y.dtype == jnp.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_subpixel_transposed_conv_equals_flax_conv_transpose():
    import flax.linen as nn
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 4))
    ref = nn.ConvTranspose(7, (3, 3), strides=(2, 2), padding="SAME")
    params = ref.init(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero bias
    ours = ConvTranspose2x(7)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)


@pytest.mark.parametrize("cin,cout", [(64, 3), (3, 8)])  # 64 -> 3 takes the matmul kernel gradient
def test_conv3x3_equals_flax_conv_forward_and_backward(cin, cout):
    import flax.linen as nn
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, cin))
    ref = nn.Conv(cout, (3, 3), padding="SAME")
    params = jax.tree.map(lambda p: p + 0.1, ref.init(jax.random.PRNGKey(1), x))
    ours = Conv3x3(cout)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))  # a non-uniform output gradient
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)
    got = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    want = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_max_pool_gradient_goes_to_the_first_maximum_like_select_and_scatter():
    import flax.linen as nn
    # ReLU outputs rounded to 0.1: many exact ties, zeros included
    x = jnp.round(jnp.maximum(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 5)), 0), 1)
    g = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 3, 5))
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
    np.testing.assert_array_equal(jax.vjp(max_pool_2x2, x)[1](g)[0], jax.vjp(ref, x)[1](g)[0])


def test_unknown_model_and_dtype_are_errors():
    with pytest.raises(ValueError, match="model.name"):
        models.create(ml_collections.ConfigDict(dict(name="unet9", widths=(4, 4), latent=3)))
    with pytest.raises(ValueError, match="dtype"):
        models.create(ml_collections.ConfigDict(dict(name="paper", widths=(4, 4), latent=3)), "float8")


# ---------------------------------------------------------------------------------------------------------
# train step
# ---------------------------------------------------------------------------------------------------------
def _step_setup(opt="adam", **kw):
    c = config_lib.base_config()
    c.optimizer = opt
    for k, v in kw.items():
        c[k] = v
    model = models.create(ml_collections.ConfigDict(dict(name="paper", widths=(8, 4), latent=3)))
    tx = steps.make_optimizer(c, total_steps=10)
    state = steps.init_state(model, tx, jax.random.PRNGKey(0), (16, 16, 3))
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), np.uint8))
    fn = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=noise.parse("gaussian:25")))
    return state, batch, fn


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_train_step_reduces_loss_and_reports_metrics(opt):
    state, batch, fn = _step_setup(opt, learning_rate=1e-2, schedule="cosine", warmup_steps=2, grad_clip=1.0)
    rng = jax.random.PRNGKey(3)
    losses = []
    for _ in range(10):
        state, m = fn(state, batch, rng)
        losses.append(float(m["loss"]))
    assert set(m) == {"loss", "psnr", "noisy_psnr", "grad_norm"}
    assert int(state.step) == 10
    assert losses[-1] < losses[0]
    assert np.isfinite(float(m["grad_norm"])) and float(m["noisy_psnr"]) > 15


def test_train_step_is_deterministic_and_noise_follows_the_step():
    state, batch, fn = _step_setup()
    rng = jax.random.PRNGKey(3)
    s1, m1 = fn(state, batch, rng)
    s2, m2 = fn(state, batch, rng)
    assert float(m1["loss"]) == float(m2["loss"])
    # the noise key is fold_in(rng, step): a later step draws different noise for the same batch
    s3, m3 = fn(s1.replace(params=state.params, opt_state=state.opt_state), batch, rng)
    assert float(m3["noisy_psnr"]) != float(m1["noisy_psnr"])


# ---------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------
def test_end_to_end_run_writes_the_workdir(tmp_path, cache):
    wd = tmp_path / "run"
    res = train.train_and_evaluate(tiny_config(cache), str(wd))
    assert {"psnr", "ssim", "mse", "noisy_psnr"} <= set(res)
    for name in ("config.json", "metrics.jsonl", "grid.png", "psnr_per_epoch.png", "mse_per_epoch.png"):
        assert (wd / name).is_file(), name
    assert any((wd / "tb").iterdir())
    rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2]
    for r in evals:
        assert {"step", "epoch", "psnr", "mse", "ssim", "noisy_psnr"} <= set(r)
        assert np.isclose(r["psnr"], res["psnr"]) or r["epoch"] == 1
    assert all("loss" in r and "step" in r for r in rows if r["kind"] == "train")
    # evaluation noise is fixed: the noisy PSNR is the same at every epoch
    assert evals[0]["noisy_psnr"] == evals[1]["noisy_psnr"]
    saved = json.loads((wd / "config.json").read_text())
    assert saved["batch_size"] == 8 and saved["data"]["size"] == 16
    params, step = final_params(wd)
    assert step == 6


def test_resume_mid_epoch_is_bitwise_identical(tmp_path, cache, monkeypatch):
    """Stopped inside an epoch (step 4 of 3-step epochs) and resumed: the same parameters, optimiser state,
    EMA, rng, data position and metrics rows as the run that never stopped."""
    cfg = lambda: tiny_config(cache, num_epochs=2, ema_decay=0.9, log_every_steps=1)
    straight, resumed = resumes_bitwise(monkeypatch, cfg, tmp_path, stop=4)
    assert final_params(resumed)[1] == 6
    # the same command again: nothing to do, nothing changes
    before = fsutil.tree_digests(resumed / "checkpoints")
    train.train_and_evaluate(cfg(), str(resumed))
    assert fsutil.tree_digests(resumed / "checkpoints") == before
    assert_same_run(straight, resumed)


def test_latest_and_best_checkpoints_are_both_kept(tmp_path):
    ck = checkpointing.Checkpointer(str(tmp_path / "ck"), async_save=False)
    tree = {"w": jnp.arange(3.0)}
    ck.save(1, tree, {"next_index": 1}, metrics={"psnr": 30.0})
    ck.save(2, tree, {"next_index": 2}, metrics={"psnr": 20.0})   # worse than step 1
    ck.save(3, tree, {"next_index": 3})                            # periodic, no metrics
    ck.save(4, tree, {"next_index": 4}, metrics={"psnr": 25.0})
    ck.save(5, tree, {"next_index": 5})
    ck.wait()
    assert ck.latest_step() == 5 and ck.best_step() == 1
    assert sorted(ck.all_steps()) == [1, 5]
    restored, data = ck.restore(5, checkpointing.abstract_like(tree), with_data=True)
    assert data == {"next_index": 5}
    np.testing.assert_array_equal(restored["w"], np.arange(3.0))
    assert checkpointing.resolve_step(ck, "best") == 1 and checkpointing.resolve_step(ck, "latest") == 5
    with pytest.raises(checkpointing.CheckpointError, match="step 2"):
        checkpointing.resolve_step(ck, "2")
    ck.close()


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(checkpointing.CheckpointError, match="not a training workdir"):
        checkpointing.load_params(str(tmp_path))


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, cache):
    wd, retry = tmp_path / "run", tmp_path / "retry"
    train.train_and_evaluate(tiny_config(cache, num_epochs=1, optimizer="sgd", momentum=0.0), str(wd))
    good, _ = final_params(wd)
    # the learning rate of a run is fixed: a retry with another one starts a new workdir from its checkpoint
    cfg = tiny_config(cache, num_epochs=3, optimizer="sgd", learning_rate=1e30, momentum=0.0, init_from=str(wd))
    with pytest.raises(train.TrainingDiverged, match=r"step \d+") as e:
        train.train_and_evaluate(cfg, str(retry))
    assert f"--config.init_from={retry}:" not in str(e.value)  # no checkpoint of its own was saved
    kept, step = final_params(wd)
    assert step == 3
    for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(kept), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_steps_per_call_trains_the_same_as_single_steps(tmp_path, cache):
    a, b = tmp_path / "k1", tmp_path / "k3"
    train.train_and_evaluate(tiny_config(cache, num_epochs=1, steps_per_call=1), str(a))
    train.train_and_evaluate(tiny_config(cache, num_epochs=1, steps_per_call=3), str(b))
    pa, _ = final_params(a)
    pb, _ = final_params(b)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,value,match", [
    ("noise", "poisson:abc", "noise"),
    ("optimizer", "lbfgs", "optimizer"),
    ("loss", "huber", "loss='huber' is not one of mse, l1, charbonnier, psnr"),
    ("b2", 1.0, "b2 must be in"),
    ("weight_decay", 1e-4, "weight_decay=0.0001 needs optimizer='adamw'"),
    ("model.name", "unet9", "model.name"),
    ("data.source", "s3", "data.source"),
    ("batch_size", 0, "batch_size"),
    ("data.size", 30, "data.size"),
    ("steps_per_call", 2, "steps_per_call"),  # does not divide 3 steps per epoch
])
def test_bad_config_values_are_one_line_errors(tmp_path, cache, field, value, match):
    with pytest.raises(ValueError, match=match) as e:
        train.train_and_evaluate(tiny_config(cache, **{field: value}), str(tmp_path / "run"))
    assert "\n" not in str(e.value)


def test_dir_source_without_dir_is_an_error(tmp_path, cache):
    with pytest.raises(ValueError, match="data.dir"):
        train.train_and_evaluate(tiny_config(cache, **{"data.source": "dir"}), str(tmp_path / "run"))


def _run_script(args, **kw):
    return script("train.py", *args, **kw)


def test_command_line_rejects_unknown_fields(tmp_path):
    r = _run_script(["--config", os.path.join(REPO, "configs", "demo.py"), "--workdir", str(tmp_path / "w"),
                     "--config.batchsize=8"])
    assert r.returncode != 0
    assert "batchsize" in r.stderr


def test_sigterm_saves_a_checkpoint_and_exits_nonzero(tmp_path, cache):
    wd = tmp_path / "run"
    args = ["--config", TINY_CONFIG, "--workdir", str(wd), f"--config.data.cache_dir={cache}",
            "--config.steps_per_epoch=100000", "--config.num_epochs=1", "--config.log_every_steps=1"]
    env = dict(os.environ, PYTHONPATH=REPO)

    def stop_once_under_way(signum, rows):
        """Start the command, wait for ``rows`` lines of metrics.jsonl, send ``signum``; (stderr, latest step)."""
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "train.py")] + args, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = threading.Event()
        for _ in range(600):
            if (wd / "metrics.jsonl").is_file() and (wd / "metrics.jsonl").read_text().count("\n") >= rows:
                break
            deadline.wait(0.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0 and err.strip().splitlines()[-1].startswith("error: "), err[-2000:]
        ck = checkpointing.Checkpointer(str(wd / "checkpoints"), read_only=True)
        latest = ck.latest_step()
        ck.close()
        return err, latest
    err, first = stop_once_under_way(signal.SIGTERM, 2)
    assert "SIGTERM" in err and "checkpoint" in err and first is not None and first > 0
    # the same command resumes; Ctrl-C (SIGINT) stops it the same way, at a later step
    rows = (wd / "metrics.jsonl").read_text().count("\n")
    err, second = stop_once_under_way(signal.SIGINT, rows + 2)
    assert "SIGINT" in err and "resume" in err and second > first, (first, second, err[-500:])
