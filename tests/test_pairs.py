"""Training on real noisy/clean pairs: the pairs store, bad pairs skipped, training with noise 'none', exact
resume, evaluation of the validation pairs, and the oracle-sigma baselines."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from jaxdenoise import baselines, config as config_lib, evaluate, fsutil, noise, train
from jaxdenoise.data import builtin, prepare, store

from test_train import set_fields
from tests.helpers import resumes_bitwise


def write_pairs(root, n=10, side=48, seed=0):
    """``root/clean`` and ``root/noisy``: ``n`` crops of the built-in photos (PNG) and their noisy shots (BMP:
    pairs are matched by name, not format), with pixel-independent shot + read noise (a camera's raw noise;
    a tiny model learns it in a few steps, unlike demosaiced noise), plus a noisy shot with no partner, a
    clean image with no partner and a pair of different sizes."""
    rng = np.random.default_rng(seed)
    photos = [builtin.load_photo(builtin.photo_path(*p)) for p in builtin.TRAIN_PHOTOS]
    os.makedirs(root / "clean" / "sub")
    os.makedirs(root / "noisy" / "sub")
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        crops.append(photo[y:y + side, x:x + side + 8 * (i % 2)])  # some not square
    model = noise.parse("poisson_gaussian:20,10")
    for i, c in enumerate(crops):
        n_img = model(jax.random.PRNGKey(i), c[None].astype(np.float32) / 255.0)[0]
        n_u8 = np.asarray(np.round(np.asarray(n_img) * 255), np.uint8)
        rel = f"sub/{i:03d}" if i % 3 == 0 else f"{i:03d}"
        Image.fromarray(c).save(root / "clean" / f"{rel}.png")
        Image.fromarray(n_u8).save(root / "noisy" / f"{rel}.bmp")  # another format: matched by name
    Image.fromarray(crops[0]).save(root / "clean" / "lonely.png")
    Image.fromarray(crops[1]).save(root / "noisy" / "orphan.png")
    Image.fromarray(crops[0]).save(root / "clean" / "mismatch.png")
    Image.fromarray(crops[0][:40, :40]).save(root / "noisy" / "mismatch.png")
    Image.fromarray(crops[2]).save(root / "clean" / "grey.png")
    Image.fromarray(crops[2]).convert("L").save(root / "noisy" / "grey.png")  # a grey shot of a colour scene
    return crops


def pairs_config(src, **kw):
    c = config_lib.base_config()
    c.model = config_lib.models.default_config("unet", widths=(8, 16), residual=True)
    c.data.source, c.data.dir, c.data.pairs = "dir", str(src), True
    c.data.resize_mode, c.data.size, c.data.patch = "full", 32, 16
    c.data.val_fraction = 0.3
    c.data.flips = c.data.rot90 = True
    c.noise = "none"
    c.batch_size, c.steps_per_epoch, c.num_epochs = 4, 3, 2
    c.eval_batch_size, c.log_every_steps, c.checkpoint_every_steps, c.num_grid_images = 2, 1, 0, 2
    c.learning_rate = 3e-3
    return set_fields(c, kw)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    write_pairs(root)
    return root


def test_pairs_store_keeps_both_halves_aligned_and_skips_bad_pairs_with_their_reason(pairs_dir, tmp_path):
    before = fsutil.tree_digests(pairs_dir)
    m = prepare.prepare_folder(str(pairs_dir), str(tmp_path / "store"), size=32, mode="full", pairs=True,
                               workers=1, progress=False)
    assert fsutil.tree_digests(pairs_dir) == before  # sources untouched
    assert m["pairs"] is True and m["channels"] == 6 and m["train_count"] + m["val_count"] == 10
    why = {s["path"]: s["reason"] for s in m["skipped"]}
    assert "no noisy shot" in why["clean/lonely.png"] and "no clean reference" in why["noisy/orphan.png"]
    assert "aligned" in why["mismatch.png"] and "40x40" in why["mismatch.png"]
    assert "the noisy shot is greyscale, the clean reference colour" in why["grey.png"]
    train_split = store.open_split(tmp_path / "store", "train")
    img = train_split[0]
    assert img.shape[-1] == 6
    clean = np.asarray(Image.open(pairs_dir / "clean" / m["train_files"][0]).convert("RGB"))
    noisy = np.asarray(Image.open(pairs_dir / "noisy" / (os.path.splitext(m["train_files"][0])[0] + ".bmp")))
    np.testing.assert_array_equal(img[..., :3], clean)
    np.testing.assert_array_equal(img[..., 3:], noisy)
    # crops of a pairs store cut both halves at the same place (the loader's crop / flips act on all 6)
    crop = train_split.crop(0, 3, 5, 16)
    np.testing.assert_array_equal(crop[..., 3:], noisy[3:19, 5:21])
    with pytest.raises(ValueError, match="mode 'full'"):
        prepare.prepare_folder(str(pairs_dir), str(tmp_path / "s2"), size=32, mode="resize", pairs=True)
    with pytest.raises(ValueError, match="has no clean/"):
        prepare.prepare_folder(str(pairs_dir / "clean"), str(tmp_path / "s3"), size=16, mode="full", pairs=True)


def test_pairs_configs_need_noise_none_and_full_size(pairs_dir):
    config_lib.validate(pairs_config(pairs_dir))
    for kw, msg in [({"noise": "poisson:30"}, "noise='none'"), ({"eval_noise": "gaussian:25"}, "eval_noise='none'"),
                    ({"data.resize_mode": "resize", "data.patch": 0}, "resize_mode='full'")]:
        with pytest.raises(ValueError, match=msg):
            config_lib.validate(pairs_config(pairs_dir, **kw))
    c = config_lib.base_config()
    c.noise = "none"
    with pytest.raises(ValueError, match="for real noisy/clean pairs set data.pairs"):
        config_lib.validate(c)
    with pytest.raises(ValueError, match="cannot be mixed"):
        noise.parse("none+gaussian:25")


def test_training_on_real_pairs_beats_the_noisy_input_and_resumes_bitwise(pairs_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    cfg = lambda: pairs_config(pairs_dir, num_epochs=3, steps_per_epoch=10, ema_decay=0.9, learning_rate=5e-3,
                               **{"data.patch": 32})
    res = train.train_and_evaluate(cfg(), str(straight))
    assert res["psnr"] > res["noisy_psnr"] + 0.5, res
    resumes_bitwise(monkeypatch, cfg, tmp_path, stop=7, straight=straight)
    # evaluate.py scores the validation pairs by default: the real shots, no synthetic noise; oracle baseline
    table = evaluate.run(str(straight), "latest", baselines=["nlm", "nlm:oracle"])
    by = {r["method"]: r for r in table}
    assert {r["noise"] for r in table} == {"real:val (pairs store)"}
    model = next(r for m, r in by.items() if m.startswith("unet"))
    assert model["psnr"] > by["noisy input"]["psnr"] and "min_gain" in model and "min_gain" not in by["noisy input"]
    assert "nlm (oracle sigma)" in by
    assert json.loads((straight / "config.json").read_text())["data"]["pairs"] is True


def test_oracle_sigma_is_the_true_noise_level():
    rng = np.random.default_rng(0)
    clean = rng.random((32, 32, 3)).astype(np.float32)
    noisy = clean + rng.normal(0, 0.05, clean.shape).astype(np.float32)
    assert abs(baselines.oracle_sigma(noisy, clean) - 0.05) < 0.003
    baselines.check("bm3d:oracle")
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.check("bm4d:oracle")
    assert baselines.label("nlm:oracle") == "nlm (oracle sigma)"
