"""Training targets (jaxdenoise.targets): the neighbour sub-sampler against Huang et al.'s definition, each
loss against its formula, and every target trained a few steps on the built-in photos beating the noisy input."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdenoise import config as config_lib, losses, models, noise, steps, targets, train
from jaxdenoise.data import builtin, store

from test_pairs import write_pairs
from test_train import set_fields


def test_neighbour_subsampler_halves_never_share_a_pixel_and_are_adjacent():
    b, h, w = 3, 16, 24
    p1, p2 = targets.neighbour_positions(jax.random.key(0), b, h, w)
    p1, p2 = np.asarray(p1), np.asarray(p2)
    assert p1.shape == p2.shape == (b, h // 2, w // 2)
    assert np.all(p1 != p2)
    r1, c1, r2, c2 = p1 // 2, p1 % 2, p2 // 2, p2 % 2
    assert np.all(np.abs(r1 - r2) + np.abs(c1 - c2) == 1)  # horizontal or vertical neighbours in the cell
    seen = {(a, c) for a, c in zip(p1.ravel(), p2.ravel())}
    assert seen == set(targets.NEIGHBOUR_PAIRS)  # all eight ordered pairs are drawn
    # the sub-images: [B, H/2, W/2, C], each pixel the one its position names, channels together
    x = jnp.arange(b * h * w * 3, dtype=jnp.float32).reshape(b, h, w, 3)
    g1, g2 = np.asarray(targets.subsample(x, jnp.asarray(p1))), np.asarray(targets.subsample(x, jnp.asarray(p2)))
    assert g1.shape == g2.shape == (b, h // 2, w // 2, 3)
    xn = np.asarray(x)
    for i, j, k in [(0, 0, 0), (1, 3, 7), (2, 7, 11)]:
        np.testing.assert_array_equal(g1[i, j, k], xn[i, 2 * j + r1[i, j, k], 2 * k + c1[i, j, k]])
        np.testing.assert_array_equal(g2[i, j, k], xn[i, 2 * j + r2[i, j, k], 2 * k + c2[i, j, k]])
    assert not set(g1[..., 0].ravel()) & set(g2[..., 0].ravel())  # no pixel in both halves
    with pytest.raises(ValueError, match="even image sides"):
        targets.neighbour_positions(jax.random.key(0), 1, 15, 16)


def test_neighbor2neighbor_loss_is_the_papers_formula():
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.random((2, 8, 8, 3)), jnp.float32)
    level = jnp.zeros((2, 8, 8, 1))
    forward = lambda p, x, lv: p * x + 0.1 * x ** 2  # a stand-in network
    f = targets.loss_fn("neighbor2neighbor", losses.mse, forward, gamma=2.0)
    key = jax.random.key(3)
    value, (out, view) = f(jnp.float32(0.7), y, level, None, key, jnp.float32(0.25), y)
    p1, p2 = targets.neighbour_positions(key, 2, 8, 8)
    g1, g2 = targets.subsample(y, p1), targets.subsample(y, p2)
    full = forward(0.7, y, level)
    diff = forward(0.7, g1, None) - g2
    expect = np.mean((diff) ** 2) + 2.0 * 0.25 * np.mean((diff - (targets.subsample(full, p1)
                                                                  - targets.subsample(full, p2))) ** 2)
    assert float(value) == pytest.approx(float(expect), rel=1e-5)
    np.testing.assert_allclose(out, full, rtol=1e-6)
    assert view is y
    # f(y) is held constant: the gradient is that of the reconstruction term plus the regulariser's through
    # f(g1(y)) only
    grad = jax.grad(lambda p: f(p, y, level, None, key, jnp.float32(0.25), y)[0])(jnp.float32(0.7))
    held = lambda p: (jnp.mean(jnp.square(forward(p, g1, None) - g2))
                      + 0.5 * jnp.mean(jnp.square(forward(p, g1, None) - g2 - jax.lax.stop_gradient(
                          targets.subsample(full, p1) - targets.subsample(full, p2)))))
    assert float(grad) == pytest.approx(float(jax.grad(held)(jnp.float32(0.7))), rel=1e-4)
    # at the start of the run the regulariser weighs nothing
    v0, _ = f(jnp.float32(0.7), y, level, None, key, jnp.float32(0.0), y)
    assert float(v0) == pytest.approx(float(np.mean(diff ** 2)), rel=1e-5)
    # gamma 0: the reconstruction term alone, and the full-size input never enters the model: the output is
    # the denoised sub-image, beside the clean image's same sub-image
    calls = []
    counted = lambda p, x, lv: (calls.append(x.shape), forward(p, x, lv))[1]
    clean = y * 0.5
    v, (out, view) = targets.loss_fn("neighbor2neighbor", losses.mse, counted, gamma=0.0)(
        jnp.float32(0.7), y, level, None, key, jnp.float32(0.9), clean)
    assert float(v) == pytest.approx(float(np.mean(diff ** 2)), rel=1e-5)
    assert calls == [(2, 4, 4, 3)]
    np.testing.assert_allclose(out, forward(0.7, g1, None), rtol=1e-6)
    np.testing.assert_array_equal(view, targets.subsample(clean, p1))


def test_noise2noise_target_is_an_independent_draw_and_pairs_swap_shots():
    x = jnp.full((4, 16, 16, 3), 0.5)
    nz = noise.parse("gaussian:25:noclip")
    noisy, _ = nz.sample(jax.random.key(1), x)
    a, b = targets.second_draw(jax.random.key(2), nz, x, x, noisy)
    np.testing.assert_array_equal(a, noisy)
    d1, d2 = np.asarray(a - x).ravel(), np.asarray(b - x).ravel()
    assert abs(np.corrcoef(d1, d2)[0, 1]) < 0.05 and np.std(d2) == pytest.approx(25 / 255, rel=0.05)
    shot1, shot2 = jnp.zeros((64, 2, 2, 3)), jnp.ones((64, 2, 2, 3))
    inp, tgt = targets.second_draw(jax.random.key(3), noise.parse("none"), shot1, shot1, shot2)
    inp, tgt = np.asarray(inp), np.asarray(tgt)
    assert np.all(inp + tgt == 1)  # one shot each, never the same one twice
    assert 0 < inp[:, 0, 0, 0].sum() < 64  # swapped for some images, not all
    with pytest.raises(ValueError, match="not one of"):
        targets.check("noise2void")


def test_config_checks_the_target():
    c = config_lib.base_config()
    c.target = "n2n"
    with pytest.raises(ValueError, match="target='n2n' is not one of"):
        config_lib.validate(c)
    c = set_fields(config_lib.base_config(), {"target": "neighbor2neighbor", "data.size": 36,
                                              "model": models.default_config("unet", widths=(8, 16, 32))})
    with pytest.raises(ValueError, match="half-size sub-images"):
        config_lib.validate(c)
    c.data.size = 32
    config_lib.validate(c)


@pytest.mark.parametrize("target", [t for t in targets.TARGETS if t != "clean"])  # clean: test_first_steps.py
def test_every_target_trains_to_beat_the_noisy_input(target):
    """A U-Net trained 50 steps with each self-supervised target at poisson:10 on 32x32 built-in crops (batch
    8, 2 micro-batches) denoises held-out crops better than their noisy input, though no clean image enters
    its loss (measured 2026-12-06: noise2noise +4.5 dB, neighbor2neighbor +3.8, recorrupted, on the unclipped
    noise its split needs, +4.6; at 80 steps +5.3 / +5.0 / +6.1)."""
    photos = [builtin.load_photo(builtin.photo_path(p, n)) for p, n in builtin.TRAIN_PHOTOS]
    rng = np.random.default_rng(0)
    crops = np.stack([c for ph in photos for c in builtin.random_crops(ph, 16, 32, rng)])
    held = jnp.asarray(np.stack([c for ph in photos for c in builtin.random_crops(ph, 2, 32, rng)]))
    model = models.create(models.default_config("unet", widths=(16, 32), residual=True))
    c = set_fields(config_lib.base_config(), {"warmup_steps": 10, "learning_rate": 3e-3})
    tx = steps.make_optimizer(c, total_steps=50)
    nz = noise.parse("poisson:10:noclip" if target == "recorrupted" else "poisson:10")  # a split needs it unclipped
    state = steps.init_state(model, tx, jax.random.PRNGKey(0), (32, 32, 3))
    fn = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=nz, chunks=2, target=target,
                            total_steps=50))
    for i in range(50):
        state, m = fn(state, jnp.asarray(crops[rng.integers(0, len(crops), 8)]), jax.random.PRNGKey(1))
        assert np.isfinite(float(m["loss"])), (target, i)
    x = steps.to_float(held)
    y, _ = nz.sample(jax.random.key(9), x)
    out = jnp.clip(model.apply({"params": state.params}, y), 0, 1)
    psnr = lambda a: float(jnp.mean(-10 * jnp.log10(jnp.mean(jnp.square(a - x), axis=(1, 2, 3)))))
    assert psnr(out) > psnr(y) + 1.0, (target, psnr(out), psnr(y))


def test_noisy_photos_alone_train_with_neighbor2neighbor_and_validate_on_a_pairs_folder(tmp_path):
    """data.dir: noisy shots only (no clean image anywhere in training); data.val_dir: real pairs. The run
    trains on every noisy photo, scores the pairs and ends above their noisy input."""
    pairs = tmp_path / "pairs"
    write_pairs(pairs, n=12, side=48)
    noisy_only = tmp_path / "noisy_only"
    noisy_only.mkdir()
    for f in sorted((pairs / "noisy").glob("*.bmp")):
        (noisy_only / f.name).write_bytes(f.read_bytes())
    c = set_fields(config_lib.base_config(), {
        "model": models.default_config("unet", widths=(16, 32), residual=True),
        "data.source": "dir", "data.dir": str(noisy_only), "data.val_dir": str(pairs),
        "data.resize_mode": "full", "data.size": 32, "data.patch": 32, "data.flips": True,
        "noise": "none", "target": "neighbor2neighbor", "batch_size": 4, "steps_per_epoch": 40, "num_epochs": 2,
        "learning_rate": 3e-3, "warmup_steps": 5, "ema_decay": 0.9, "eval_batch_size": 2, "log_every_steps": 10,
        "checkpoint_every_steps": 0, "num_grid_images": 2})
    for bad, match in ((dict(target="clean"), "needs target='neighbor2neighbor'"),
                       ({"data.val_dir": ""}, "give data.val_dir"),
                       ({"data.val_dir": str(noisy_only)}, "also in data.dir")):
        with pytest.raises(ValueError, match=match):
            config_lib.validate(set_fields(c.copy_and_resolve_references(), bad))
    res = train.train_and_evaluate(c, str(tmp_path / "run"))
    assert res["psnr"] > res["noisy_psnr"] + 0.3, res
    stores = sorted(p.name for p in (tmp_path / "run" / "data").iterdir())
    assert stores == ["0-noisy_only", "val-pairs"]
    man = store.read_manifest(str(tmp_path / "run" / "data" / "0-noisy_only"))
    trained = store.open_splits(str(tmp_path / "run" / "data" / "0-noisy_only"), "all")
    assert trained.shape[0] == man["train_count"] + man["val_count"] == 8 and man["val_count"] > 0  # all trained on


def test_a_separate_clean_validation_folder_is_used_whole_and_by_evaluate(tmp_path):
    """data.val_dir of clean photos with synthetic noise: every data.dir photo is trained on, every val_dir
    photo validated on (during training and by evaluate.py's default), at the run's eval noise."""
    from jaxdenoise import evaluate
    from PIL import Image
    photos = [builtin.load_photo(builtin.photo_path(*p)) for p in builtin.TRAIN_PHOTOS]
    rng = np.random.default_rng(1)
    for name, n in (("train_photos", 6), ("val_photos", 3)):
        (tmp_path / name).mkdir()
        for i, crop in enumerate(c for ph in photos for c in builtin.random_crops(ph, 1, 40, rng)):
            if i < n:
                Image.fromarray(crop).save(tmp_path / name / f"{i}.png")
    c = set_fields(config_lib.base_config(), {
        "model": models.default_config("unet", widths=(8, 16), residual=True),
        "data.source": "dir", "data.dir": str(tmp_path / "train_photos"), "data.val_dir": str(tmp_path / "val_photos"),
        "data.resize_mode": "full", "data.size": 32, "data.patch": 16, "noise": "gaussian:25",
        "batch_size": 2, "steps_per_epoch": 3, "num_epochs": 1, "eval_batch_size": 2, "log_every_steps": 1,
        "checkpoint_every_steps": 0, "num_grid_images": 0})
    train.train_and_evaluate(c, str(tmp_path / "run"))
    log = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in log if r["kind"] == "eval"] == [3]
    assert store.open_splits(str(tmp_path / "run" / "data" / "0-train_photos"), "all").shape[0] == 6
    rows = evaluate.run(str(tmp_path / "run"), "latest")
    assert {r["images"] for r in rows} == {3} and {r["noise"] for r in rows} == {"gaussian:25"}
    bad = set_fields(c.copy_and_resolve_references(), {"eval_noise": "none"})
    with pytest.raises(ValueError, match="they are clean images"):
        train.train_and_evaluate(bad, str(tmp_path / "run2"))


# ---------------------------------------------------------------------------------------------------------
# the fixed-noise setting (config.noise_fixed)
def _fixed_loader(images, epochs, **kw):
    """The fixed-noise loader over ``images`` (batch 4) for ``epochs`` epochs, and its number of batches."""
    from jaxdenoise.data import loader
    n = len(images) // 4 * epochs
    return iter(loader.make_loader(images, 4, 0, n, fixed=True, num_threads=1, **kw)), n


def _fixed_batches(images, epochs, **kw):
    """Every batch of ``epochs`` epochs of the fixed-noise loader over ``images``."""
    it, n = _fixed_loader(images, epochs, **kw)
    return [next(it) for _ in range(n)]


def test_fixed_noise_gives_each_image_one_noisy_version_across_epochs_crops_and_a_resume():
    """With noise_fixed every crop of image i, in any epoch, flipped or turned, is a window of one and the same
    noisy image (drawn once from i), and the loader's crops and turns are the ones it makes without fixed
    noise; a loader restored from a saved position yields the same noisy batches as the one that went on."""
    from jaxdenoise.data import loader
    images = (np.random.default_rng(0).random((12, 16, 16, 3)) * 255).astype(np.uint8)
    nz = noise.parse("gaussian:25:noclip+poisson:30:noclip")
    rng = jax.random.PRNGKey(3)
    whole = steps.eval_noisy(nz, jax.random.fold_in(rng, steps.FIXED_NOISE_SALT), steps.to_float(jnp.asarray(images)),
                             jnp.arange(12))[0]
    kw = dict(patch=8, flips=True, rot90=True)
    fixed = {p: jax.jit(lambda b, p=p: steps.fixed_noisy(nz, rng, b, p)) for p in (0, 8)}
    place = jax.jit(lambda x, m, p: steps.turn(steps.crop(x, m, p), m), static_argnums=2)
    batches = _fixed_batches(images, 3, **kw)
    plain = iter(loader.make_loader(images, 4, 0, len(batches), num_threads=1, **kw))
    seen = {}
    for b in batches:
        parts = fixed[8](b)
        meta = jnp.asarray(b["meta"])
        np.testing.assert_allclose(np.asarray(parts["clean"]), next(plain) / 255.0, atol=1e-7)
        np.testing.assert_allclose(parts["noisy"], place(whole[meta[:, 0]], meta, 8), atol=1e-6)
        for i in b["meta"][:, 0]:
            seen[int(i)] = seen.get(int(i), 0) + 1
    assert len(seen) == 12 and min(seen.values()) == 3  # every image, once per epoch
    assert len({tuple(m) for b in batches for m in b["meta"][:, 1:]}) > 12  # crops and turns do vary
    # whole images, no turns: the same noisy array for the same index in every epoch (not a re-draw)
    batches = _fixed_batches(images, 2)
    noisy = {}
    for b in batches:
        out = np.asarray(fixed[0](b)["noisy"])
        for i, img in zip(b["meta"][:, 0], out):
            if int(i) in noisy:
                np.testing.assert_array_equal(noisy[int(i)], img)
            noisy[int(i)] = img
    assert np.abs(noisy[0] - images[0] / 255.0).mean() > 0.03  # it is noisy
    # a resume: the position saved after batch 4 replays batches 5.. exactly
    batches = _fixed_batches(images, 3, **kw)
    it, _ = _fixed_loader(images, 3, **kw)
    for _ in range(4):
        next(it)
    saved = it.get_state()
    again, _ = _fixed_loader(images, 3, **kw)
    again.set_state(saved)
    for b in batches[4:]:
        r = next(again)
        np.testing.assert_array_equal(r["meta"], b["meta"])
        np.testing.assert_array_equal(r["image"], b["image"])


def test_recorrupted_target_config_checks():
    c = set_fields(config_lib.base_config(), {"target": "recorrupted", "noise": "poisson:30"})
    with pytest.raises(ValueError, match="target='recorrupted': noise 'poisson:30' is clipped"):
        config_lib.validate(c)
    c.noise = "camera:100-1600:noclip"
    with pytest.raises(ValueError, match="needs Gaussian or shot"):
        config_lib.validate(c)
    c.noise, c.target_alpha = "gaussian:25:noclip+poisson:30:noclip", 1.0
    with pytest.raises(ValueError, match=r"target_alpha must be in \(0, 1\)"):
        config_lib.validate(c)
    c.target_alpha = 0.5
    config_lib.validate(c)


def test_fixed_noise_hands_the_recorrupted_split_each_images_own_parameters():
    """The fixed-noise batch carries the peak and sigma each image's one noise drew (by its index, whatever
    the crop and turn), which the level map of its Gaussian images shows."""
    images = (np.random.default_rng(0).random((12, 16, 16, 3)) * 255).astype(np.uint8)
    nz = noise.parse("gaussian:5-50:noclip+poisson:5-60:noclip")
    rng = jax.random.PRNGKey(3)
    b = _fixed_batches(images, 1, patch=8, flips=True, rot90=True)[0]
    parts = jax.jit(lambda b: steps.fixed_noisy(nz, rng, b, 8, parameters=True))(b)
    peak, sigma = map(np.asarray, parts["parameters"])
    keys = steps.image_keys(jax.random.fold_in(rng, steps.FIXED_NOISE_SALT), jnp.asarray(b["meta"][:, 0]))
    for k, p, s in zip(keys, peak, sigma):
        np.testing.assert_allclose(np.asarray(nz.parameters(k, 1)), [[p], [s]], rtol=1e-6)  # jit vs eager rounding
    gauss = sigma > 0
    assert 0 < gauss.sum() < len(gauss)
    np.testing.assert_allclose(np.asarray(parts["level"])[gauss].max(axis=(1, 2, 3)), sigma[gauss], rtol=1e-6)


def test_fixed_noise_config_checks():
    c = set_fields(config_lib.base_config(), {"noise_fixed": True, "data.source": "dir", "data.dir": "/x",
                                              "data.resize_mode": "full", "data.size": 64, "data.patch": 32})
    with pytest.raises(ValueError, match="noise_fixed=True needs a fixed-size store"):
        config_lib.validate(c)
    c = set_fields(config_lib.base_config(), {"noise_fixed": True, "data.device_resident": True})
    with pytest.raises(ValueError, match="noise_fixed=True needs the grain loader"):
        config_lib.validate(c)
    c = set_fields(config_lib.base_config(), {"noise_fixed": True, "data.channels": True})
    with pytest.raises(ValueError, match="data.channels does not combine with noise_fixed=True"):
        config_lib.validate(c)
    c = set_fields(config_lib.base_config(), {"noise_fixed": True})
    config_lib.validate(c)


def test_fixed_noise_training_resumes_bitwise_and_every_row_records_the_setting(tmp_path, monkeypatch):
    """neighbor2neighbor on fixed noise through train_and_evaluate: stopped mid-epoch and resumed, the same run
    bit for bit as one that never stopped; config.json and every train and eval row say ``fixed``."""
    from tests.helpers import resumes_bitwise
    from test_train import tiny_config
    from jaxdenoise import run_io
    cfg = lambda: tiny_config(tmp_path / "cache", noise_fixed=True, target="neighbor2neighbor", ema_decay=0.9,
                              log_every_steps=1, **{"data.flips": True, "data.rot90": True})
    straight, _ = resumes_bitwise(monkeypatch, cfg, tmp_path, stop=4)
    assert json.load(open(straight / "config.json"))["noise_fixed"] is True
    rows = [r for r in run_io.read_rows(str(straight)) if r["kind"] in ("train", "eval")]
    assert rows and {r["noise_setting"] for r in rows} == {"fixed"}
