"""Preparation never deletes or overwrites what it did not write, and a crash never loses a store.

Each test here failed before the store was built aside: ``StoreWriter`` emptied ``--out`` in place first.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from jaxdenoise.data import imageio, prepare, store

pytestmark = pytest.mark.imagemagick  # reads or writes images through Wand

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "prepare_data.py")


def _write_pngs(folder, n, side=16, seed=0, prefix="img"):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"{prefix}{i:04d}.png"), compress_level=1)


def _prepare(src, out, **kw):
    kw = {"size": 8, "val_fraction": 0.3, "workers": 1, "progress": False, **kw}
    return prepare.prepare_folder(str(src), str(out), **kw)


def _cli(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _asides(out):
    """Names of the hidden siblings a preparation of ``out`` writes aside."""
    parent, name = os.path.split(str(out))
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}.jaxdenoise-"))


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in last, last


# ----------------------------------------------------------------------------------------------------------
# refusals: the source, and folders that are not ours, are never touched
# ----------------------------------------------------------------------------------------------------------
def test_src_inside_out_named_clean_is_refused_and_kept(tmp_path, odd_images, hash_tree):
    # the reported defect: --src X/clean --out X deleted every source image, kept file included
    x = tmp_path / "x"
    odd_images(x / "clean")
    (x / "clean" / "keep_me.png").write_bytes(b"not ours")
    before = hash_tree(x)
    result = _cli("--src", x / "clean", "--out", x, "--size", 8)
    _assert_one_line_error(result, "contains --src")
    assert hash_tree(x) == before


@pytest.mark.parametrize("where", ["equal", "inside", "containing"])
def test_out_overlapping_src_is_refused(tmp_path, hash_tree, where):
    src = tmp_path / "a" / "src"
    _write_pngs(src, 3)
    out = {"equal": src, "inside": src / "store", "containing": tmp_path / "a"}[where]
    before = hash_tree(tmp_path)
    with pytest.raises(ValueError, match="inside|contains") as e:
        _prepare(src, out)
    assert "\n" not in str(e.value)
    assert hash_tree(tmp_path) == before
    assert not os.path.exists(src / "store")


def test_non_store_out_is_refused_and_kept(tmp_path, hash_tree):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_pngs(src, 3)
    _write_pngs(out / "clean" / "train", 2, prefix="")  # looks like a store's PNGs, but no manifest
    (out / "notes.txt").write_text("mine")
    before = hash_tree(tmp_path)
    with pytest.raises(ValueError, match="not a jaxdenoise store") as e:
        _prepare(src, out)
    assert "\n" not in str(e.value)
    assert hash_tree(tmp_path) == before
    (out / "file").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        _prepare(src, out / "file")


def test_store_with_a_foreign_file_is_refused_and_names_it(tmp_path, hash_tree):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_pngs(src, 6)
    _prepare(src, out)
    for written, named in (("clean/train/keep_me.png", "clean/train/keep_me.png"), ("notes.txt", "notes.txt"),
                           ("clean/extra/000000.png", "clean/extra")):
        path = out / written
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"mine")
        before = hash_tree(tmp_path)
        with pytest.raises(ValueError, match="did not write") as e:
            _prepare(src, out, seed=1)
        assert named in str(e.value) and "\n" not in str(e.value)
        assert hash_tree(tmp_path) == before
        if os.path.isdir(out / named):
            shutil.rmtree(out / named)
        else:
            os.remove(out / named)


def test_unwritable_out_is_a_one_line_error(tmp_path):
    src = tmp_path / "src"
    _write_pngs(src, 2)
    (tmp_path / "plain_file").write_bytes(b"")
    result = _cli("--src", src, "--out", tmp_path / "plain_file" / "out", "--size", 8)
    _assert_one_line_error(result, str(tmp_path / "plain_file"))


# ----------------------------------------------------------------------------------------------------------
# replacing a store
# ----------------------------------------------------------------------------------------------------------
def test_rebuild_over_a_store_equals_a_fresh_build(tmp_path, hash_tree):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_pngs(a, 12, seed=1)
    _write_pngs(b, 5, seed=2, prefix="other")
    src_before = hash_tree(b)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    _prepare(a, out)
    m = _prepare(b, out)
    _prepare(b, fresh)
    assert hash_tree(out) == hash_tree(fresh)
    assert m["store"] == store.MARK and m["train_count"] + m["val_count"] == 5
    assert _asides(out) == [] and sorted(os.listdir(tmp_path)) == ["a", "b", "fresh", "out"]
    assert hash_tree(b) == src_before


def test_empty_out_folder_becomes_the_store(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_pngs(src, 4)
    out.mkdir()
    m = _prepare(src, out)
    assert store.open_split(out, "train").shape[0] == m["train_count"]
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_legacy_store_is_recognised_and_replaced(tmp_path, hash_tree):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_pngs(src, 6)
    _prepare(src, out)
    with open(out / store.MANIFEST) as f:
        manifest = json.load(f)
    del manifest["store"]  # written before the marker existed
    (out / store.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    assert store.is_store(out)
    assert store.open_split(out, "train").shape[0] == manifest["train_count"]
    assert prepare.ensure_prepared(str(src), str(out), 8, 0.3, 0) == str(out)  # reused as it is
    _prepare(src, out, seed=1)  # and replaceable
    assert store.read_manifest(out)["seed"] == 1


def test_killed_preparation_keeps_the_old_store_and_is_cleaned_next_time(tmp_path, hash_tree):
    old_src, src, out = tmp_path / "old_src", tmp_path / "src", tmp_path / "out"
    _write_pngs(old_src, 4, seed=3)
    _prepare(old_src, out)
    old = hash_tree(out)
    _write_pngs(src, 600, side=96)  # a few seconds with one process
    src_before = hash_tree(src)
    proc = subprocess.Popen([sys.executable, SCRIPT, "--src", str(src), "--out", str(out), "--size", "64",
                             "--workers", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            asides = _asides(out)
            pngs = os.path.join(tmp_path, asides[0], "clean", "train") if asides else None
            if pngs and os.path.isdir(pngs) and len(os.listdir(pngs)) >= 20:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the preparation ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _asides(out), "the killed run's aside folder should still be there"
    assert hash_tree(out) == old
    assert store.open_split(out, "train").shape[1:] == (8, 8, 3)

    m = _prepare(src, out, size=8, workers=2)
    assert _asides(out) == []
    assert m["train_count"] + m["val_count"] == 600 and store.open_split(out, "val").shape[0] == m["val_count"]
    assert hash_tree(src) == src_before


def test_crash_between_the_renames_of_a_swap_restores_the_old_store(tmp_path, hash_tree):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_pngs(src, 6)
    _prepare(src, out)
    before = hash_tree(out)
    # the state after step 1 of a swap by a writer that died: the store renamed away, the new one complete
    tag = f"{store._HOST}.{_dead_pid()}"
    os.rename(out, tmp_path / f".out.jaxdenoise-old.{tag}")
    _prepare(src, tmp_path / "elsewhere", seed=1)
    os.rename(tmp_path / "elsewhere", tmp_path / f".out.jaxdenoise-new.{tag}")
    assert not out.exists()
    # the cache matches: restored and reused as it was, not rebuilt
    assert prepare.ensure_prepared(str(src), str(out), 8, 0.3, 0) == str(out)
    assert hash_tree(out) == before and _asides(out) == []


def test_recovery_touches_only_dead_writers_leftovers_of_ours(tmp_path):
    out = tmp_path / "out"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = tmp_path / f".out.jaxdenoise-new.{store._HOST}.{sleeper.pid}"
        unmarked = tmp_path / f".out.jaxdenoise-new.{store._HOST}.{_dead_pid()}"  # no marker: not ours
        other_host = tmp_path / f".out.jaxdenoise-new.elsewhere.example.{_dead_pid()}"
        dead = tmp_path / f".out.jaxdenoise-new.{store._HOST}.{_dead_pid()}"
        for folder in (live, unmarked, other_host, dead):
            folder.mkdir()
            (folder / "data").write_bytes(b"x")
        for folder in (live, other_host, dead):
            (folder / store.WRITING).write_text("{}")
        store.recover(out)
        assert sorted(_asides(out)) == sorted(p.name for p in (live, unmarked, other_host))
    finally:
        sleeper.kill()
        sleeper.wait()


# ----------------------------------------------------------------------------------------------------------
# image reader: sizes from the header
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width,height", [(100000, 100000), (70000, 10)])
def test_huge_header_says_too_large(png_with_size, width, height):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(imageio.ImageReadError) as e:
        imageio.decode(png_with_size(buf.getvalue(), width, height))
    reason = str(e.value)
    assert "too large" in reason and f"{width}x{height}" in reason and "delegate" not in reason, reason
