"""The model zoo (registry, U-Net, DnCNN, NAFNet), EMA, patch training from full-size stores, real-noise pairs."""
import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxdenoise
import pytest
from PIL import Image

from jaxdenoise import baselines, checkpointing, config as config_lib, evaluate, models, steps, train
from jaxdenoise.inference import denoiser, files as denoise_files, tiling
from jaxdenoise.data import builtin, prepare, store
from jaxdenoise.models.nafnet import pixel_shuffle
from tests.test_train import tiny_config

# parameters of each model's documented default (module docstrings, docs/quality.md)
DEFAULT_PARAMS = {"paper": 51_494, "unet": 518_563, "dncnn": 557_443, "nafnet": 288_691, "drunet": 1_042_112}
TINY = {"unet": dict(widths=(8, 16)), "dncnn": dict(depth=4, width=8),
        "nafnet": dict(width=8, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,)),
        "drunet": dict(widths=(8, 16), blocks=1)}


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_every_model_declares_its_geometry_and_keeps_shapes(name):
    model = models.create(models.default_config(name))
    assert models.param_count(model) == DEFAULT_PARAMS[name]
    assert isinstance(model.stride, int) and model.stride >= 1
    assert isinstance(model.receptive_field, int) and model.receptive_field > 1
    side = 2 * model.stride
    x = jax.ShapeDtypeStruct((2, side, 3 * side, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(1), x)
    y = jax.eval_shape(model.apply, params, x)  # shapes only: no compilation of the full-size models
    assert y.shape == x.shape and y.dtype == jnp.float32
    if name != "paper":  # a tiny variant runs for real: residual models start near the identity
        tiny = models.create(models.default_config(name, **TINY[name]))
        xs = jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 3))
        out = tiny.apply(tiny.init(jax.random.PRNGKey(1), xs), xs)
        assert out.shape == xs.shape and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("name", ["unet", "dncnn", "drunet"])
def test_receptive_field_bounds_what_one_pixel_changes(name):
    model = models.create(models.default_config(name, **TINY[name]))
    n = 48
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, n, n, 3))
    # random (not zero) biases and kernels: every path is live; jitted: one compilation, not one per operation
    params = jax.jit(lambda x: jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape),
                                            model.init(jax.random.PRNGKey(1), x)))(x)
    apply = jax.jit(model.apply)
    y0 = apply(params, x)
    y1 = apply(params, x.at[0, n // 2, n // 2, 0].add(1.0))
    changed = np.argwhere(np.abs(np.asarray(y1 - y0))[0].max(-1) > 0)
    extent = changed.max(0) - changed.min(0) + 1
    assert extent.max() > 1  # the field is not trivial
    assert extent.max() <= model.receptive_field, (extent, model.receptive_field)


def test_drunets_2x2_down_and_up_are_flaxs_strided_conv_and_transposed_conv():
    """The space-to-depth matmul and the matmul-then-depth-to-space equal nn.Conv / nn.ConvTranspose with a
    2x2 kernel, stride 2, 'VALID', on the same parameters, forward and gradients."""
    import flax.linen as nn

    from jaxdenoise.models import drunet
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 3))
    p = {"params": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (2, 2, 3, 5))}}
    pairs = [(drunet.Down2x2(5), nn.Conv(5, (2, 2), strides=2, padding="VALID", use_bias=False)),
             (drunet.Up2x2(5), nn.ConvTranspose(5, (2, 2), strides=(2, 2), padding="VALID", use_bias=False))]
    for ours, flax_ in pairs:
        np.testing.assert_allclose(ours.apply(p, x), flax_.apply(p, x), atol=1e-5)
        loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
        for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), (0, 1))(p, x)),
                        jax.tree.leaves(jax.grad(loss(flax_), (0, 1))(p, x)), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)


def test_drunet_exports_and_loads_back_equal(tmp_path):
    """The new model's exported file (``export.export_bytes``, read back without flax) gives the model's own
    output."""
    import ml_collections

    from jaxdenoise.inference import export, exported
    cfg = models.default_config("drunet", **TINY["drunet"])
    model = models.create(cfg)
    img = np.asarray(_photos()[0][1][:64, :64], np.float32) / 255.0  # a whole bucket: both pad alike
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(img[None, :16, :16]))["params"]
    path = tmp_path / "drunet.jaxdn"
    path.write_bytes(export.export_bytes(ml_collections.ConfigDict(dict(model=cfg)), params, model,
                                         {"stride": model.stride}, platforms=("cpu",)))
    den = exported.load_exported(str(path))
    whole = tiling.denoise(denoiser.make_apply(model, params), img, model.stride, tile=0)
    np.testing.assert_allclose(den.run(img, tile=0), whole, atol=1e-5)
    assert den.receptive_field == model.receptive_field and den.stride == model.stride


def test_pixel_shuffle_matches_torch_channel_order():
    x = np.arange(1 * 2 * 2 * 8).reshape(1, 2, 2, 8)
    y = np.asarray(pixel_shuffle(jnp.asarray(x)))
    # PyTorch: out[c, 2h + i, 2w + j] = in[c * 4 + i * 2 + j, h, w]
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert y[0, i, 2 + j, c] == x[0, 0, 1, c * 4 + i * 2 + j]


def test_registry_passes_fields_and_models_check_their_own():
    m = models.create(models.default_config("dncnn", depth=5, width=7))
    assert (m.depth, m.width) == (5, 7)
    with pytest.raises(ValueError, match="model.latent is not a field of model 'unet'"):
        c = models.default_config("paper")
        c.name = "unet"
        models.create(c)
    with pytest.raises(ValueError, match="has no field 'depth'"):
        models.default_config("unet", depth=3)
    c = config_lib.base_config()
    c.model = models.default_config("nafnet", enc_blocks=(1, 1), dec_blocks=(1,))
    with pytest.raises(ValueError, match="config: model.enc_blocks and model.dec_blocks"):
        config_lib.validate(c)
    c.model = models.default_config("unet", widths=(8, 16, 32))
    c.data.patch = 34
    with pytest.raises(ValueError, match="data.patch=34 must be a multiple of 4"):
        config_lib.validate(c)


def _tiny(cache, name, **kw):
    c = tiny_config(cache, noise="gaussian:50", **kw)  # strong noise: a few steps show a clear gain
    c.model = models.default_config(name, **TINY[name])
    c.data.size = 32
    c.data.patch = 16
    c.learning_rate = 3e-3
    return c


@pytest.mark.parametrize("name", ["unet", "dncnn", "nafnet", "drunet"])
def test_each_new_model_learns_to_beat_its_noisy_input(tmp_path, cache, name):
    ema = 0.9 if name == "unet" else 0.0
    c = _tiny(cache, name, num_epochs=1, steps_per_epoch=40, ema_decay=ema)
    res = train.train_and_evaluate(c, str(tmp_path / name))
    assert res["psnr"] > res["noisy_psnr"] + 1.0, res
    if ema:
        # evaluate restores the EMA weights: they are in the checkpoint beside, and unlike, the raw ones
        _, state, _, _ = checkpointing.load_state(str(tmp_path / name), "latest")
        ts = state["train_state"]
        _, params, _, kind = checkpointing.load_params(str(tmp_path / name), "latest", with_kind=True)
        assert kind == "ema"
        for e, p, r in zip(jax.tree.leaves(ts.ema), jax.tree.leaves(params), jax.tree.leaves(ts.params)):
            np.testing.assert_array_equal(np.asarray(e), np.asarray(p))
        assert any(not np.array_equal(np.asarray(e), np.asarray(r))
                   for e, r in zip(jax.tree.leaves(ts.ema), jax.tree.leaves(ts.params)))
        assert "raw_psnr" in res
        rows = evaluate.run(str(tmp_path / name), "latest", limit=2)
        assert "EMA" in rows[1]["method"]


def test_ema_update_warms_up_then_follows_the_decay():
    ema, p = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    first = steps.ema_update(ema, p, jnp.int32(0), 0.999)["w"]
    np.testing.assert_allclose(first, 0.9, rtol=1e-6)  # d = min(0.999, 1/10)
    late = steps.ema_update(ema, p, jnp.int32(10**6), 0.999)["w"]
    np.testing.assert_allclose(late, 0.001, rtol=1e-3)


def _photos():
    """[(stem, uint8 [H, W, 3])] of the built-in photos."""
    out = []
    for pkg, name in builtin.TRAIN_PHOTOS + builtin.VAL_PHOTOS:
        with Image.open(builtin.photo_path(pkg, name)) as im:
            out.append((os.path.splitext(name)[0], np.asarray(im.convert("RGB"))))
    return out


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Built-in photos at their own sizes (and a too-small one), as files."""
    d = tmp_path_factory.mktemp("photos")
    for i, (name, img) in enumerate(_photos()):
        img = img[: 40 + 8 * i, : 56 + 4 * i]
        Image.fromarray(img).save(d / f"{name}.png")
    Image.fromarray(np.zeros((20, 90, 3), np.uint8)).save(d / "thin.png")
    return d


@pytest.mark.imagemagick
def test_full_size_store_keeps_sizes_and_skips_small_images(tmp_path, photo_folder):
    m = prepare.prepare_folder(str(photo_folder), str(tmp_path / "s"), size=32, val_fraction=0.3, mode="full",
                               max_side=50, progress=False)
    assert m["layout"] == "ragged" and m["max_side"] == 50
    assert [s["path"] for s in m["skipped"]] == ["thin.png"] and "short side" in m["skipped"][0]["reason"]
    imgs = store.open_split(str(tmp_path / "s"), "train")
    assert isinstance(imgs, store.RaggedImages)
    assert imgs.sizes.max() <= 50 and imgs.sizes.min() >= 32 and len(set(map(tuple, imgs.sizes))) > 1
    assert store.foreign_file(str(tmp_path / "s")) is None
    crops = imgs.center_crops(32)
    assert crops[np.arange(len(imgs))].shape == (len(imgs), 32, 32, 3)


@pytest.mark.imagemagick
def test_patch_training_from_a_full_size_store_resumes_bitwise(tmp_path, cache, photo_folder, monkeypatch):
    """Random patches, flips and rotations from a ragged store, EMA on, stopped mid-epoch (step 4 of 3-step
    epochs): the resumed run is the unbroken one, bit for bit (all state, data position, metrics rows)."""
    from tests.helpers import resumes_bitwise

    def cfg(epochs):
        c = _tiny(cache, "unet", num_epochs=epochs, steps_per_epoch=3, ema_decay=0.9)
        c.data.source, c.data.dir, c.data.resize_mode, c.data.max_side = "dir", str(photo_folder), "full", 64
        c.data.cache_dir = str(tmp_path / "stores")
        c.data.flips = c.data.rot90 = True
        c.batch_size = 2
        c.eval_batch_size = 2
        return c
    _, resumed = resumes_bitwise(monkeypatch, lambda: cfg(2), tmp_path, stop=4)
    assert checkpointing.load_state(str(resumed), "latest")[2] == 6


@pytest.mark.imagemagick
def test_several_data_folders_train_together_and_resume_bitwise(tmp_path, cache, photo_folder, monkeypatch):
    """data.dir naming two folders: each prepared into its own store in the workdir, split on its own, the
    splits joined; a run stopped mid-epoch resumes to the unbroken run bit for bit."""
    from tests.helpers import resumes_bitwise
    other = tmp_path / "other"
    other.mkdir()
    for i, (name, img) in enumerate(_photos()[:3]):
        Image.fromarray(img[: 48 + 4 * i, : 40 + 8 * i]).save(other / f"b_{name}.png")

    def cfg():
        c = _tiny(cache, "unet", num_epochs=2, steps_per_epoch=3)
        c.data.source, c.data.dir, c.data.resize_mode, c.data.max_side = "dir", f"{photo_folder},{other}", "full", 64
        c.data.cache_dir = ""
        c.data.flips = True
        c.batch_size = c.eval_batch_size = 2
        return c
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.train_and_evaluate(cfg(), str(straight))
    stores = sorted(os.listdir(straight / "data"))
    assert stores == ["0-" + os.path.basename(str(photo_folder)), "1-other"]
    parts = [store.open_split(str(straight / "data" / n), "train") for n in stores]
    joined = store.open_splits([str(straight / "data" / n) for n in stores], "train")
    assert len(joined) == sum(len(p) for p in parts) and all(len(p) for p in parts)
    np.testing.assert_array_equal(joined[len(parts[0])], parts[1][0])  # store 1's images follow store 0's
    val = store.open_splits([str(straight / "data" / n) for n in stores], "val").center_crops(32)
    assert val[np.arange(len(val))].shape == (len(val), 32, 32, 3)
    resumes_bitwise(monkeypatch, cfg, tmp_path, stop=4, straight=straight)
    # the same folders named in another order are another run: its resume is refused, naming the field
    c = cfg()
    c.data.dir = f"{other},{photo_folder}"
    with pytest.raises(ValueError, match="data.dir"):
        train.train_and_evaluate(c, str(resumed))
    for bad, why in ((f"{photo_folder},,{other}", "empty folder name"), (f"{photo_folder},{photo_folder}/", "twice")):
        c.data.dir = bad
        with pytest.raises(ValueError, match=why):
            config_lib.validate(c)


def test_estimate_sigma_reads_gaussian_noise():
    rng = np.random.default_rng(0)
    clean = np.asarray(_photos()[0][1][:128, :128], np.float32) / 255.0
    for sigma in (10, 25, 50):
        noisy = np.clip(clean + rng.normal(0, sigma / 255.0, clean.shape), 0, 1).astype(np.float32)
        assert abs(baselines.estimate_sigma(noisy) * 255.0 - sigma) < 0.15 * sigma + 1.0


@pytest.mark.imagemagick
def test_real_noise_pairs_are_scored_by_name(tmp_path, own_run, capsys):
    clean_dir, noisy_dir = tmp_path / "clean", tmp_path / "noisy"
    clean_dir.mkdir()
    noisy_dir.mkdir()
    rng = np.random.default_rng(0)
    expected = []
    for i, (name, img) in enumerate(_photos()[:2]):
        img = img[:48, :40]
        noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(clean_dir / f"{name}.png")
        Image.fromarray(noisy).save(noisy_dir / f"{name}.bmp")  # another format, same name
        mse = np.mean((img / 255.0 - noisy / 255.0) ** 2)
        expected.append(10 * np.log10(1 / mse))
    (noisy_dir / "stray.bmp").write_bytes((noisy_dir / f"{_photos()[0][0]}.bmp").read_bytes())
    rows = evaluate.run(own_run, "latest", data=str(clean_dir), noisy=str(noisy_dir), baselines=["nlm"])
    assert [r["method"].split(" ")[0] for r in rows] == ["noisy", rows[1]["method"].split(" ")[0], "nlm"]
    assert all(r["noise"] == "real:noisy" and r["images"] == 2 for r in rows)
    np.testing.assert_allclose(rows[0]["psnr"], np.mean(expected), atol=0.01)
    assert rows[2]["psnr"] > rows[0]["psnr"]  # NLM at the estimated level removes noise
    assert "no clean reference for noisy stray.bmp" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no noisy file"):
        evaluate.run(own_run, "latest", data=str(clean_dir), noisy=str(tmp_path))


@pytest.mark.parametrize("name", ["unet", "dncnn", "nafnet", "drunet"])
def test_new_models_denoise_in_tiles_and_run_in_bfloat16(name):
    """Tiled inference (origins on the model's stride, overlap from its receptive field) matches whole-image
    inference; the bfloat16 model gives the float32 model's output to bfloat16 precision."""
    cfg = models.default_config(name, **TINY[name])
    model = models.create(cfg)
    img = np.asarray(_photos()[0][1][:72, :88], np.float32) / 255.0
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(img[None, :16, :16]))["params"]
    if name == "nafnet":  # a fresh NAFNet is the identity (beta = gamma = 0, ending conv zero): give every
        # block a real path and the ending conv a kernel (scales of 0.05-0.1 change the output by far more than
        # the tolerance below, yet keep the random net out of saturation, where every error would be clipped)
        fresh = tiling.denoise(denoiser.make_apply(model, params), img, model.stride, tile=0)
        np.testing.assert_array_equal(fresh, np.clip(img, 0, 1))
        rng = np.random.default_rng(0)
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.asarray(rng.uniform(0.05, 0.1, x.shape), x.dtype)
            if path[-1].key in ("beta", "gamma") else x, params)
        params["ending"]["kernel"] = jnp.asarray(rng.normal(0, 0.05, params["ending"]["kernel"].shape), jnp.float32)
    apply = denoiser.make_apply(model, params)
    whole = tiling.denoise(apply, img, model.stride, tile=0)
    if name == "nafnet":
        assert metrics_psnr(fresh, whole) < 25  # the blocks now change the output
    ov = tiling.min_overlap(8, model.receptive_field)
    tiled = tiling.denoise(apply, img, model.stride, tile=112, overlap=ov, batch=4)
    assert whole.shape == tiled.shape == img.shape
    # NAFNet's channel attention pools over each tile: tiles see other means, so only close, not equal
    assert metrics_psnr(whole, tiled) > (35 if name == "nafnet" else 45)
    bf16 = denoiser.make_apply(models.create(cfg, "bfloat16"), params)
    out = tiling.denoise(bf16, img, model.stride, tile=0)
    assert out.dtype == np.float32 and metrics_psnr(whole, out) > 30


def metrics_psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((np.asarray(a) - np.asarray(b)) ** 2), 1e-12)))


def test_noise_level_maps_follow_the_noise_parameters():
    from jaxdenoise import noise
    y = jnp.full((1, 4, 4, 3), 0.3)
    np.testing.assert_allclose(noise.level_map("gaussian:25", y), 25 / 255, rtol=1e-6)
    np.testing.assert_allclose(noise.level_map("poisson:30", y), np.sqrt(0.3 / 30), rtol=1e-6)
    np.testing.assert_allclose(noise.level_map("poisson_gaussian:30,10", y), np.sqrt(0.01 + (10 / 255) ** 2),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="one value"):
        noise.level_map("poisson:5-60", y)
    # sampling: the same noisy images as __call__, and each image's map is its own component's level
    x = jax.random.uniform(jax.random.PRNGKey(0), (64, 8, 8, 3))
    mix = noise.parse("gaussian:5+gaussian:50")
    key = jax.random.PRNGKey(3)
    noisy, level = mix.sample(key, x)
    np.testing.assert_array_equal(np.asarray(noisy), np.asarray(mix(key, x)))
    per_image = np.asarray(level)[:, 0, 0, 0] * 255
    assert level.shape == (64, 8, 8, 1) and set(np.round(per_image, 3)) == {5.0, 50.0}
    resid = np.asarray(noisy - x).reshape(64, -1).std(1) * 255
    assert np.all(np.where(per_image > 10, resid > 30, resid < 10))  # the map names the noise each image got


@pytest.mark.imagemagick
def test_non_blind_model_takes_the_level_map_everywhere(tmp_path, cache, photo_folder):
    """``model.noise_level``: a 4th input channel in training, evaluation (drawn map) and denoising of photos
    (map from --noise-level or estimated); the map changes the output."""
    c = _tiny(cache, "dncnn", num_epochs=1, steps_per_epoch=40)
    c.model.noise_level = True
    c.noise, c.eval_noise = "gaussian:30-60", "gaussian:50"
    res = train.train_and_evaluate(c, str(tmp_path / "run"))
    assert res["psnr"] > res["noisy_psnr"] + 1.0, res
    _, params, _ = checkpointing.load_params(str(tmp_path / "run"), "latest")
    assert params["conv0"]["kernel"].shape[2] == 4  # image + level map
    rows = evaluate.run(str(tmp_path / "run"), "latest", noise_specs=["gaussian:40"], limit=4)
    assert rows[1]["psnr"] > rows[0]["psnr"]
    den = jaxdenoise.load(str(tmp_path / "run"), "latest")
    img = np.asarray(_photos()[0][1][:40, :40], np.float32) / 255.0
    low, high = (den(img, noise_level=s) for s in ("gaussian:5", "gaussian:50"))
    assert np.abs(low - high).mean() > 1e-3
    est = denoiser.with_level(img, 4)
    assert est.shape == (40, 40, 4) and np.all(est[..., 3] == est[0, 0, 3])
    res = denoise_files.denoise_paths(str(tmp_path / "run"), str(photo_folder), str(tmp_path / "out"), "latest",
                                progress=False, noise_level="gaussian:25")
    assert res["written"]
    with pytest.raises(ValueError, match="one value"):
        denoise_files.denoise_paths(str(tmp_path / "run"), str(photo_folder), str(tmp_path / "out2"), "latest",
                              noise_level="gaussian:5-50")
