"""Safe image reading (imageio), preparation of a folder into a store (prepare, store) and built-in data."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxdenoise.data import builtin, imageio, prepare, store

pytestmark = pytest.mark.imagemagick  # reads or writes images through Wand

SIZE = 16
SEED = 3
VAL_FRACTION = 0.4


# ----------------------------------------------------------------------------------------------------------
# one preparation of the odd-image folder, shared by the module
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory, odd_images, hash_tree):
    base = tmp_path_factory.mktemp("prep")
    odd = odd_images(base / "src")
    before = hash_tree(odd.root)
    out = str(base / "out")
    manifest = prepare.prepare_folder(odd.root, out, size=SIZE, val_fraction=VAL_FRACTION, seed=SEED,
                                      mode="center_crop", workers=2, progress=False)
    return dict(odd=odd, out=out, manifest=manifest, before=before, base=base)


def _image(prepared, rel):
    """The prepared ``uint8 [SIZE, SIZE, 3]`` image of source file ``rel``, from the split's .npy."""
    m = prepared["manifest"]
    for split in store.SPLITS:
        if rel in m[f"{split}_files"]:
            arr = np.load(os.path.join(prepared["out"], f"{split}.npy"), mmap_mode="r")
            return np.asarray(arr[m[f"{split}_files"].index(rel)]).astype(int)
    raise AssertionError(f"{rel} was not prepared")


def test_every_bad_file_is_skipped_once_with_a_reason(prepared):
    odd, m = prepared["odd"], prepared["manifest"]
    skipped = [s["path"] for s in m["skipped"]]
    assert sorted(skipped) == sorted(odd.bad), "each bad file must be skipped exactly once, and nothing else"
    for s in m["skipped"]:
        assert isinstance(s["reason"], str) and s["reason"].strip(), s
        assert "\n" not in s["reason"], s
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert "MP limit" in reasons["huge.png"] and "10000x10000" in reasons["huge.png"]
    for rel in ("z.png", "sub/w.png", "y.jpg"):  # SVG, PostScript, text: stopped by the magic bytes
        assert "magic bytes" in reasons[rel], reasons[rel]
    assert "empty" in reasons["x.png"]
    assert "too small" in reasons["tiny.png"]
    assert "truncated" in reasons["sub/truncated.jpg"]


def test_every_good_file_is_prepared_into_its_split(prepared):
    odd, m = prepared["odd"], prepared["manifest"]
    train, val = m["train_files"], m["val_files"]
    assert m["train_count"] == len(train) and m["val_count"] == len(val)
    assert m["train_count"] + m["val_count"] == len(odd.good)
    assert sorted(train + val) == sorted(odd.good), "recursion into subfolders, every good file once"
    assert train and val
    for rel in train:
        assert not prepare.is_val(rel, SEED, VAL_FRACTION)
    for rel in val:
        assert prepare.is_val(rel, SEED, VAL_FRACTION)
    assert m["size"] == SIZE and m["seed"] == SEED and m["val_fraction"] == VAL_FRACTION
    assert m["mode"] == "center_crop"


def test_store_arrays_and_clean_pngs(prepared):
    out, m = prepared["out"], prepared["manifest"]
    for split in store.SPLITS:
        n = m[f"{split}_count"]
        arr = np.load(os.path.join(out, f"{split}.npy"), mmap_mode="r")
        assert isinstance(arr, np.memmap)
        assert arr.dtype == np.uint8 and arr.shape == (n, SIZE, SIZE, 3)
        pngs = sorted(os.listdir(os.path.join(out, "clean", split)))
        assert pngs == [f"{i:06d}.png" for i in range(n)]
        for i, name in enumerate(pngs):  # the PNGs are the same pixels as the array
            with Image.open(os.path.join(out, "clean", split, name)) as im:
                assert im.mode == "RGB"
                np.testing.assert_array_equal(np.asarray(im), arr[i])
        opened = store.open_split(out, split)
        np.testing.assert_array_equal(opened, arr)
        assert not opened.flags.writeable
    assert not [f for f in os.listdir(out) if f.endswith(".partial")]
    with open(os.path.join(out, store.MANIFEST)) as f:
        assert json.load(f) == m


def test_source_folder_is_unchanged(prepared, hash_tree):
    assert hash_tree(prepared["odd"].root) == prepared["before"]


def test_rerun_is_byte_identical(prepared, hash_tree):
    odd = prepared["odd"]
    out2 = str(prepared["base"] / "out2")
    m2 = prepare.prepare_folder(odd.root, out2, size=SIZE, val_fraction=VAL_FRACTION, seed=SEED,
                                mode="center_crop", workers=1, progress=False)  # another process count too
    assert m2 == prepared["manifest"]
    first, second = hash_tree(prepared["out"]), hash_tree(out2)
    assert sorted(first) == sorted(second)
    assert len(first) == 3 + len(odd.good)
    assert first == second


def test_known_pixel_values(prepared):
    red = _image(prepared, "red.png")
    assert np.all(np.abs(red - [255, 0, 0]) <= 2)
    # fully transparent RGBA is composited over white
    assert np.all(_image(prepared, "clear_rgba.png") >= 253)
    grey16 = _image(prepared, "grey16.png")  # 30000 / 65535 of full scale
    assert np.array_equal(grey16[..., 0], grey16[..., 1]) and np.array_equal(grey16[..., 1], grey16[..., 2])
    assert np.all(np.abs(grey16 - 30000 / 65535 * 255) <= 2)
    grey = _image(prepared, "sub/grey.jpg")
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    # first GIF frame (green), not the second (blue)
    gif = _image(prepared, "anim.gif")
    assert np.all(np.abs(gif - [0, 255, 0]) <= 2)


def test_exif_orientation_applied_in_center_crop(prepared):
    # source: 32 wide x 16 high, left half red, right half blue, orientation 6 (90 degrees clockwise):
    # upright it is 16 wide x 32 high with red on top, so the centred square is red above blue
    img = _image(prepared, "sub/orient6.jpg")
    top, bottom = img[: SIZE // 2 - 2].reshape(-1, 3).mean(0), img[SIZE // 2 + 2:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


# ----------------------------------------------------------------------------------------------------------
# imageio directly
# ----------------------------------------------------------------------------------------------------------
def test_load_rgb_own_size_and_orientation(tmp_path, odd_images):
    odd = odd_images(tmp_path)
    for rel in odd.good:
        arr = imageio.load_rgb(os.path.join(odd.root, rel))
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, rel
    arr = imageio.load_rgb(os.path.join(odd.root, "sub/orient6.jpg")).astype(int)
    assert arr.shape == (32, 16, 3), "EXIF orientation 6 must swap width and height"
    assert arr[:14].mean(axis=(0, 1))[0] > 200 and arr[18:].mean(axis=(0, 1))[2] > 200
    assert imageio.load_rgb(os.path.join(odd.root, "red.png")).shape == (20, 24, 3)
    resized = imageio.load_rgb(os.path.join(odd.root, "red.png"), size=10, mode="resize")
    assert resized.shape == (10, 10, 3) and np.all(np.abs(resized.astype(int) - [255, 0, 0]) <= 2)
    for rel in odd.bad:
        with pytest.raises(imageio.ImageReadError) as e:
            imageio.load_rgb(os.path.join(odd.root, rel), size=16)
        assert str(e.value).strip() and "\n" not in str(e.value), rel
    with pytest.raises(ValueError, match="unknown resize mode 'stretch'"):
        imageio.load_rgb(os.path.join(odd.root, "red.png"), size=8, mode="stretch")
    with pytest.raises(imageio.ImageReadError, match="No such file"):
        imageio.load_rgb(os.path.join(odd.root, "does-not-exist.png"))


def test_sniff_format():
    assert imageio.sniff_format(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "png"
    assert imageio.sniff_format(b"\xff\xd8\xff\xe0" + b"\0" * 12) == "jpeg"
    assert imageio.sniff_format(b"II*\x00" + b"\0" * 12) == "tiff"
    assert imageio.sniff_format(b"MM\x00*" + b"\0" * 12) == "tiff"
    assert imageio.sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert imageio.sniff_format(b"GIF89a" + b"\0" * 10) == "gif"
    assert imageio.sniff_format(b"P6\n4 4\n255\n") == "pnm"
    for head in (b"", b"<svg xmlns=", b"%!PS-Adobe", b"%PDF-1.4", b"P7\n", b"RIFF\0\0\0\0WAVEfmt ", b"hello"):
        assert imageio.sniff_format(head) is None, head


def test_huge_header_rejected_before_decoding(png_with_size):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    data = png_with_size(buf.getvalue(), 10000, 10000)
    with pytest.raises(imageio.ImageReadError, match="MP limit"):
        imageio.decode(data)
    # a claim within the limit gets past the header check, then fails to decode the (too short) pixel data
    with pytest.raises(imageio.ImageReadError, match="corrupt"):
        imageio.decode(png_with_size(buf.getvalue(), 64, 64))


def test_jpeg_completeness_check():
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()
    assert imageio._jpeg_complete(data)
    assert not imageio._jpeg_complete(data[:-2])
    assert not imageio._jpeg_complete(data[: len(data) // 2])


# ----------------------------------------------------------------------------------------------------------
# split rule
# ----------------------------------------------------------------------------------------------------------
def _write_pngs(folder, names, rng):
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def test_adding_files_never_moves_existing_ones(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    first = [f"a/img{i:02d}.png" for i in range(10)] + [f"b{i}.png" for i in range(10)]
    _write_pngs(src, first, rng)
    m1 = prepare.prepare_folder(str(src), str(tmp_path / "out1"), size=8, val_fraction=0.3, seed=5,
                                workers=2, progress=False)
    added = [f"a/new{i:02d}.png" for i in range(10)] + [f"c/{i}.png" for i in range(10)]
    _write_pngs(src, added, rng)
    m2 = prepare.prepare_folder(str(src), str(tmp_path / "out2"), size=8, val_fraction=0.3, seed=5,
                                workers=2, progress=False)
    assert m1["train_files"] and m1["val_files"]
    assert set(m1["train_files"]) <= set(m2["train_files"])
    assert set(m1["val_files"]) <= set(m2["val_files"])
    assert sorted(m2["train_files"] + m2["val_files"]) == sorted(first + added)
    # the images of the old files are unchanged too
    for split in store.SPLITS:
        a1 = np.load(tmp_path / "out1" / f"{split}.npy")
        a2 = np.load(tmp_path / "out2" / f"{split}.npy")
        for i, rel in enumerate(m1[f"{split}_files"]):
            np.testing.assert_array_equal(a1[i], a2[m2[f"{split}_files"].index(rel)])


def test_split_fraction_and_seed_dependence():
    paths = [f"photos/{i // 100}/IMG_{i:05d}.jpg" for i in range(2000)]
    val0 = {p for p in paths if prepare.is_val(p, 0, 0.2)}
    # binomial(2000, 0.2): standard deviation ~17.9 images
    assert abs(len(val0) - 400) < 4 * 17.9, len(val0)
    val1 = {p for p in paths if prepare.is_val(p, 1, 0.2)}
    assert abs(len(val1) - 400) < 4 * 17.9
    assert val0 != val1
    assert len(val0 & val1) < 200  # independent seeds overlap by ~0.2 * 400
    assert [prepare.is_val(p, 0, 0.2) for p in paths] == [prepare.is_val(p, 0, 0.2) for p in paths]
    assert not any(prepare.is_val(p, 0, 0.0) for p in paths)
    # a larger fraction only adds images to val (monotone in the fraction)
    assert val0 <= {p for p in paths if prepare.is_val(p, 0, 0.3)}


# ----------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------
def test_prepare_argument_errors(tmp_path):
    src = tmp_path / "src"
    _write_pngs(src, ["a.png"], np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"--src \S+missing does not exist"):
        prepare.prepare_folder(str(tmp_path / "missing"), str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match="inside"):
        prepare.prepare_folder(str(src), str(src / "prepared"), size=8, progress=False)
    with pytest.raises(ValueError, match="inside"):
        prepare.prepare_folder(str(src), str(src), size=8, progress=False)
    with pytest.raises(ValueError, match=r"--val-fraction must be in \[0, 1\), got 1.0"):
        prepare.prepare_folder(str(src), str(tmp_path / "out"), size=8, val_fraction=1.0, progress=False)
    with pytest.raises(ValueError, match=r"--size must be in \[8, 4096\], got 4"):
        prepare.prepare_folder(str(src), str(tmp_path / "out"), size=4, progress=False)
    with pytest.raises(ValueError, match="unknown resize mode 'stretch'"):
        prepare.prepare_folder(str(src), str(tmp_path / "out"), size=8, mode="stretch", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        prepare.prepare_folder(str(tmp_path / "empty"), str(tmp_path / "out"), size=8, progress=False)
    assert not (tmp_path / "out").exists(), "argument errors must not create the output"
    assert sorted(os.listdir(src)) == ["a.png"]


def test_rerun_into_same_folder_replaces_the_store(tmp_path):
    rng = np.random.default_rng(1)
    big, small = tmp_path / "big", tmp_path / "small"
    _write_pngs(big, [f"{i}.png" for i in range(12)], rng)
    _write_pngs(small, ["only.png"], rng)
    out = tmp_path / "out"
    prepare.prepare_folder(str(big), str(out), size=8, val_fraction=0.0, workers=1, progress=False)
    assert len(os.listdir(out / "clean" / "train")) == 12
    m = prepare.prepare_folder(str(small), str(out), size=8, val_fraction=0.0, workers=1, progress=False)
    assert m["train_count"] == 1 and m["val_count"] == 0
    assert os.listdir(out / "clean" / "train") == ["000000.png"], "stale PNGs of the previous store"
    assert os.listdir(out / "clean" / "val") == []
    assert store.open_split(str(out), "train").shape == (1, 8, 8, 3)
    with pytest.raises(store.StoreError, match="empty"):
        store.open_split(str(out), "val")


def test_open_split_errors(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        for split in store.SPLITS:
            with pytest.raises(store.StoreError) as e:
                store.open_split(str(path), split)
            assert str(e.value).strip() and "\n" not in str(e.value)
    with pytest.raises(store.StoreError, match="unknown split"):
        store.open_split(str(tmp_path), "test")
    assert not store.is_store(str(tmp_path))


def test_open_split_rejects_a_count_mismatch(tmp_path):
    src = tmp_path / "src"
    _write_pngs(src, [f"{i}.png" for i in range(3)], np.random.default_rng(2))
    out = tmp_path / "out"
    prepare.prepare_folder(str(src), str(out), size=8, val_fraction=0.0, workers=1, progress=False)
    np.save(out / "train.npy", np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(store.StoreError, match="manifest"):
        store.open_split(str(out), "train")
    os.remove(out / "train.npy")
    with pytest.raises(store.StoreError, match="lacks"):
        store.open_split(str(out), "train")


def test_ensure_prepared_reuses_a_matching_cache(tmp_path):
    src = tmp_path / "src"
    _write_pngs(src, [f"{i}.png" for i in range(4)], np.random.default_rng(3))
    cache = str(tmp_path / "cache")
    assert prepare.ensure_prepared(str(src), cache, size=8, val_fraction=0.0, seed=0) == cache
    mtime = os.stat(os.path.join(cache, store.MANIFEST)).st_mtime_ns
    assert prepare.ensure_prepared(str(src), cache, size=8, val_fraction=0.0, seed=0) == cache
    assert os.stat(os.path.join(cache, store.MANIFEST)).st_mtime_ns == mtime
    # a store passed as the source is used as it is, and a size mismatch is an error
    assert prepare.ensure_prepared(cache, str(tmp_path / "other"), size=8, val_fraction=0.0, seed=0) == cache
    with pytest.raises(ValueError, match="holds 8px images but the config asks for 16px"):
        prepare.ensure_prepared(cache, str(tmp_path / "other"), size=16, val_fraction=0.0, seed=0)


# ----------------------------------------------------------------------------------------------------------
# built-in data
# ----------------------------------------------------------------------------------------------------------
def test_builtin_store(tmp_path):
    path = builtin.builtin_store(size=32, train_crops_per_photo=4, val_crops_per_photo=2, cache_dir=str(tmp_path))
    m = store.read_manifest(path)
    n_train, n_val = len(builtin.TRAIN_PHOTOS), len(builtin.VAL_PHOTOS)
    assert m["size"] == 32
    assert m["train_count"] == n_train * 4 and m["val_count"] == n_val * (2 + 1)
    val_prefixes = tuple(f"{p}:{n}#" for p, n in builtin.VAL_PHOTOS)
    train_prefixes = tuple(f"{p}:{n}#" for p, n in builtin.TRAIN_PHOTOS)
    assert all(f.startswith(val_prefixes) for f in m["val_files"])
    assert not any(f.startswith(train_prefixes) for f in m["val_files"])
    assert all(f.startswith(train_prefixes) for f in m["train_files"])
    assert not set(builtin.TRAIN_PHOTOS) & set(builtin.VAL_PHOTOS)
    for package, name in builtin.VAL_PHOTOS:  # each held-out photo whole, plus its own crops
        assert f"{package}:{name}#whole" in m["val_files"]
    train, val = store.open_split(path, "train"), store.open_split(path, "val")
    assert train.shape == (n_train * 4, 32, 32, 3) and val.shape == (n_val * 3, 32, 32, 3)
    assert train.std() > 10 and val.std() > 10  # real photos, not blank
    assert len(os.listdir(os.path.join(path, "clean", "train"))) == n_train * 4
    assert [f for f in os.listdir(tmp_path) if ".partial" in f] == []

    mtime = os.stat(os.path.join(path, store.MANIFEST)).st_mtime_ns
    again = builtin.builtin_store(size=32, train_crops_per_photo=4, val_crops_per_photo=2,
                                  cache_dir=str(tmp_path))
    assert again == path
    assert os.stat(os.path.join(path, store.MANIFEST)).st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]
