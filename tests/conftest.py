"""Shared test helpers. Every file a test reads is generated here, inside pytest's temporary folders."""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

# the repository's own tools (scripts/tools: the fault suite, the reader fuzzer, the GPU check, the zoo builder)
# are not part of the package; tests import them as the scripts do
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

# One persistent XLA compilation cache for the session, inherited by every subprocess the tests start: the
# suite compiles the same tiny train/eval steps in dozens of processes (a tiny train.py run: 22 s -> 8 s).
# Cached executables are the same programs, so results are unchanged. Set before anything imports jax.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JCC = tempfile.mkdtemp(prefix="jaxdenoise-tests-xla-cache-")
    atexit.register(shutil.rmtree, _JCC, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_JCC, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
# Tests compile hundreds of tiny programs and run each a few steps: on the CPU, XLA's backend optimisation and
# LLVM's expensive passes cost more compile time than they save in run time (test_first_steps.py +
# test_targets.py: 273 -> 160 s; see docs/benchmarks.md). Speed is measured by scripts/benchmark.py, never
# here. Left as they are where XLA_FLAGS already sets them, and where a CUDA plugin is installed (the GPU check
# runs this suite on the GPU, whose kernels the level also shapes). XLA_FLAGS=--xla_backend_optimization_level=3
# runs the suite at XLA's defaults.
def _cuda_plugin() -> bool:
    import importlib.util
    return any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "") and not _cuda_plugin():
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()

import dataclasses
import io
import struct
import zlib
from typing import Callable, Dict

import numpy as np
import pytest

from jaxdenoise import fsutil


def _png(img, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (CRC recomputed), pixel data unchanged."""
    assert data[12:16] == b"IHDR"
    chunk = bytearray(data[12:29])  # chunk type + 13 data bytes
    chunk[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(chunk)) & 0xFFFFFFFF)
    return data[:12] + bytes(chunk) + crc + data[33:]


@dataclasses.dataclass
class OddImages:
    """What ``make_odd_images`` wrote: relative paths of readable files and of files that must be skipped."""
    root: str
    good: Dict[str, str]  # relpath -> short description
    bad: Dict[str, str]   # relpath -> why it must be rejected

    @property
    def all(self):
        return sorted({**self.good, **self.bad})


def write_odd_images(root: str) -> OddImages:
    """Write a folder (with a subfolder) of awkward but readable images plus files a reader must reject."""
    from PIL import Image

    rng = np.random.default_rng(1234)
    os.makedirs(os.path.join(root, "sub", "deeper"), exist_ok=True)
    good: Dict[str, str] = {}
    bad: Dict[str, str] = {}

    def noise(h, w, c=3):
        return rng.integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)

    def save(rel, img, fmt, why, **kw):
        img.save(os.path.join(root, rel), format=fmt, **kw)
        good[rel] = why

    def write(rel, data, why, ok=False):
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
        (good if ok else bad)[rel] = why

    red = np.zeros((20, 24, 3), np.uint8)
    red[..., 0] = 255
    save("red.png", Image.fromarray(red), "PNG", "solid red RGB")
    clear = np.zeros((16, 18, 4), np.uint8)
    clear[..., :3] = 10  # dark colour, fully transparent -> white over a white background
    save("clear_rgba.png", Image.fromarray(clear), "PNG", "RGBA, alpha 0")
    save("grey16.png", Image.fromarray(np.full((16, 20), 30000, np.uint16)), "PNG", "16-bit grey (I;16)")
    save("sub/palette.png", Image.fromarray(noise(16, 16)).convert("P"), "PNG", "palette")
    save("sub/grey.jpg", Image.fromarray(noise(16, 16, 0)), "JPEG", "greyscale JPEG")
    save("sub/cmyk.jpg", Image.frombytes("CMYK", (16, 16), noise(16, 16, 4).tobytes()), "JPEG", "CMYK JPEG")
    # landscape 32x16, left half red, right half blue, EXIF orientation 6 (rotate 90 degrees clockwise)
    lr = np.zeros((16, 32, 3), np.uint8)
    lr[:, :16, 0] = 255
    lr[:, 16:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    save("sub/orient6.jpg", Image.fromarray(lr), "JPEG", "EXIF orientation 6", exif=exif.tobytes(), quality=95)
    save("sub/deeper/photo.tif", Image.fromarray(noise(12, 14)), "TIFF", "TIFF")
    save("sub/deeper/photo.bmp", Image.fromarray(noise(12, 10)), "BMP", "BMP")
    save("photo.webp", Image.fromarray(noise(16, 16)), "WEBP", "WebP", lossless=True)
    save("photo.ppm", Image.fromarray(noise(9, 11)), "PPM", "PPM")
    save("grey.pgm", Image.fromarray(noise(10, 9, 0)), "PPM", "PGM")
    frame0 = np.zeros((16, 16, 3), np.uint8)
    frame0[..., 1] = 255  # green first frame
    frame1 = np.zeros((16, 16, 3), np.uint8)
    frame1[..., 2] = 255  # blue second frame
    save("anim.gif", Image.fromarray(frame0), "GIF", "2-frame GIF", save_all=True,
         append_images=[Image.fromarray(frame1)], duration=100, loop=0)

    full_png = _png(Image.fromarray(noise(64, 64)))
    write("sub/truncated.png", full_png[: len(full_png) // 2], "truncated PNG")
    jpeg = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(jpeg, format="JPEG", quality=90)
    write("sub/truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "truncated JPEG")
    write("x.png", b"", "zero bytes")
    write("y.jpg", b"hello, this is not a JPEG\n" * 4, "text file")
    write("tiny.png", _png(Image.fromarray(noise(1, 1))), "1x1 PNG")
    write("huge.png", patch_png_size(_png(Image.fromarray(noise(16, 16))), 10000, 10000), "header claims 100 MP")
    write("z.png", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                   b'<rect width="64" height="64" fill="red"/></svg>\n', "SVG named .png")
    write("sub/w.png", b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto showpage\n",
          "PostScript named .png")
    return OddImages(root=root, good=good, bad=bad)


def tree_hashes(root: str) -> Dict[str, str]:
    """relpath -> sha256 of every file under ``root`` (hidden files included)."""
    return {rel: digest for rel, (_, digest) in fsutil.tree_digests(root).items()}


@pytest.fixture(scope="session")
def odd_images() -> Callable[[str], OddImages]:
    """``odd_images(root)`` writes the odd-image folder under ``root`` and says which files are good / bad."""
    return lambda root: write_odd_images(os.fspath(root))


@pytest.fixture(scope="session")
def hash_tree() -> Callable[[str], Dict[str, str]]:
    """``hash_tree(root)``: relpath -> sha256 of every file under ``root``."""
    return tree_hashes


@pytest.fixture(scope="session")
def png_with_size() -> Callable[[bytes, int, int], bytes]:
    """``png_with_size(png_bytes, width, height)``: the PNG with its IHDR size patched (valid CRC)."""
    return patch_png_size


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One data cache per test worker: the built-in stores (``configs/tiny.py``'s and others) are prepared
    once and shared. Tests read them; none changes a file in it."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache):
    """A finished 1-epoch tiny run (``tests.test_train.tiny_config``, checkpoint at step 3) and what it printed.
    Shared by the whole session: tests read it, or copy it before they change anything (checked at the end:
    a test that changed a file of it fails the session's teardown)."""
    import contextlib

    from jaxdenoise import train
    from tests.test_train import tiny_config
    base = tmp_path_factory.mktemp("trained")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.train_and_evaluate(tiny_config(cache, num_epochs=1), str(base / "run"))
    before = tree_hashes(str(base / "run"))
    yield base / "run", out.getvalue()
    after = tree_hashes(str(base / "run"))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared run (copy it first): {changed}"


@pytest.fixture(scope="session")
def run_dir(trained) -> str:
    """The shared trained run's workdir, as a string."""
    return str(trained[0])


@pytest.fixture()
def own_run(run_dir, tmp_path_factory) -> str:
    """A copy of the shared trained run, for a test that writes into it (an evaluation adds its table to
    the run's model card); outside the test's ``tmp_path``, which it may use as an image folder."""
    import shutil
    wd = tmp_path_factory.mktemp("own_run") / "run"
    shutil.copytree(run_dir, wd)
    return str(wd)


# The files that take longest (minutes of subprocesses each) run first: with ``--dist loadfile`` a worker
# takes the next file when it is free, so the longest first keeps both workers busy to the end instead of
# one finishing the fault suite alone (docs/benchmarks.md, "The test suite").
SLOW_FIRST = ("test_faultcheck.py", "test_gpu_check.py", "test_scaling.py", "test_targets.py", "test_first_steps.py")


def pytest_collection_modifyitems(config, items):
    """The slow files first (``SLOW_FIRST``). Tests marked ``imagemagick`` read or write images through Wand:
    skipped, with the reason, where ImageMagick's library is missing (the GPU image;
    ``JAXDENOISE_NO_IMAGEMAGICK=1`` imitates it)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))
    from jaxdenoise.data import imageio
    if imageio.has_imagemagick():
        return
    skip = pytest.mark.skip(reason="needs ImageMagick's library (Wand), which this machine lacks")
    for item in items:
        if "imagemagick" in item.keywords:
            item.add_marker(skip)
