"""The image-reader fuzzer (scripts/tools/fuzz.py): reproducible cases, a clean real run, and every kind of
failure detected, counted and saved when a target misbehaves on purpose.

The misbehaving targets live here; the fuzzer's worker imports them as ``tests.test_fuzz:NAME`` (pytest runs
from the repository root, which the worker inherits on its module path).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxdenoise.data import imageio
from tools import fuzz

pytestmark = pytest.mark.imagemagick  # reads or writes images through Wand

HERE = "tests.test_fuzz"


# ----------------------------------------------------------------------------------------------------------
# targets that misbehave on purpose (run in the fuzzer's worker process)
# ----------------------------------------------------------------------------------------------------------
def crash(path):
    os.abort()


def hang(path):
    time.sleep(600)


def allocate_past_the_bound(path):
    bytearray(8 << 30)


def multi_line_reason(path):
    raise imageio.ImageReadError("first line\nsecond line")


def empty_reason(path):
    raise imageio.ImageReadError("")


def other_exception(path):
    raise KeyError("not a reader error")


def touch_300_mb(path):
    np.ones(300 << 20, np.uint8).sum()


def crash_on_odd_sizes(path):
    if os.path.getsize(path) % 2:
        os.abort()


# ----------------------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------------------
def _digest(seed, cases):
    h = hashlib.sha256()
    for case in range(cases):
        fmt, data, applied = fuzz.case_input(seed, case)
        h.update(f"{fmt}{applied}".encode() + data)
    return h.hexdigest()


def test_cases_are_reproducible_from_seed_and_index():
    first = [fuzz.case_input(7, case) for case in range(40)]
    fuzz.seed_images.cache_clear()
    assert [fuzz.case_input(7, case) for case in range(40)] == first
    assert fuzz.case_input(7, 3) == first[3]  # one case alone, without the ones before it
    assert len({data for _, data, _ in first}) == len(first)
    assert [fuzz.case_input(8, case) for case in range(40)] != first
    # another process (fresh encoders, fresh hash seed) makes the same bytes
    code = "import sys; sys.path.insert(0, 'scripts'); from tests.test_fuzz import _digest; print(_digest(7, 40))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert other.stdout.strip() == _digest(7, 40)


def test_seeds_are_valid_images_of_every_format(tmp_path):
    seeds = fuzz.seed_images()
    assert {fmt for _, fmt, _ in seeds} == {"png", "jpeg", "tiff", "webp", "gif", "bmp"}
    for name, fmt, data in seeds:
        path = tmp_path / name
        path.write_bytes(data)
        assert imageio.sniff_format(data[:16]) == fmt, name
        arr = imageio.load_rgb(str(path))
        assert arr.dtype == np.uint8 and arr.ndim == 3 and min(arr.shape[:2]) >= imageio.MIN_SIDE, name
        # the reader's own header parse agrees with ImageMagick (up to EXIF rotation)
        assert sorted(imageio.header_size(data, fmt)) == sorted(arr.shape[:2]), name


def test_mutations_change_bytes_and_keep_png_crcs_valid():
    seeds = fuzz.seed_images()
    png = bytearray(seeds[0][2])
    rng = np.random.default_rng(0)
    for mutation, _ in fuzz.MUTATIONS:
        assert mutation(bytearray(png), rng, seeds) != png or mutation is fuzz.splice, mutation.__name__
    patched = fuzz.png_header(bytearray(png), np.random.default_rng(1), seeds)
    assert bytes(fuzz.png_fix_crcs(bytearray(patched))) == bytes(patched), "png_header recomputes the IHDR CRC"


# ----------------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------------
def test_real_reader_run_is_clean(tmp_path):
    summary = fuzz.fuzz_reader(60, seed=0, out_dir=str(tmp_path))
    assert json.loads(json.dumps(summary)) == summary
    assert summary["failures"] == [], summary["failures"]
    assert summary["crashes"] == summary["hangs"] == summary["errors"] == summary["memory"] == 0
    assert summary["images"] > 0 and summary["skips"] > 0
    assert summary["images"] + summary["skips"] == 60
    assert len(summary["by_format"]) >= 5
    assert sum(sum(c.values()) for c in summary["by_format"].values()) == 60
    assert 0 < summary["peak_rss_mb"] < 3072
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("target,kind,detail", [
    ("crash", "crashes", "SIGABRT"),
    ("hang", "hangs", "no answer within 1 s"),
    ("allocate_past_the_bound", "memory", "MemoryError"),
    ("multi_line_reason", "errors", "ImageReadError of 2 lines: first line"),
    ("empty_reason", "errors", "ImageReadError of 0 lines"),
    ("other_exception", "errors", "KeyError"),
])
def test_each_failure_is_detected_counted_and_saved(tmp_path, target, kind, detail):
    summary = fuzz.fuzz_reader(2, seed=5, out_dir=str(tmp_path), timeout_s=1.0, memory_mb=1024,
                               target=f"{HERE}:{target}")
    assert summary[kind] == 2, summary
    assert summary["images"] == summary["skips"] == 0
    for case, failure in enumerate(summary["failures"]):
        assert failure["case"] == case and detail in failure["detail"], failure
        with open(failure["saved_path"], "rb") as f:  # the saved input replays the case
            assert f.read() == fuzz.case_input(5, case)[1]


def test_worker_is_replaced_after_a_crash():
    summary = fuzz.fuzz_reader(12, seed=2, target=f"{HERE}:crash_on_odd_sizes")
    odd = sum(len(fuzz.case_input(2, case)[1]) % 2 for case in range(12))
    assert 0 < odd < 12
    assert summary["crashes"] == odd and summary["images"] == 12 - odd
    assert [f["case"] for f in summary["failures"]] == [c for c in range(12) if len(fuzz.case_input(2, c)[1]) % 2]


def test_peak_rss_is_measured():
    summary = fuzz.fuzz_reader(1, target=f"{HERE}:touch_300_mb", memory_mb=2048)
    assert summary["images"] == 1 and 300 <= summary["peak_rss_mb"] < 2048


def test_bad_target_is_a_one_line_error():
    with pytest.raises(ValueError, match="module:function"):
        fuzz.fuzz_reader(1, target="no_colon")
    with pytest.raises(ValueError, match="did not start") as e:
        fuzz.fuzz_reader(1, target=f"{HERE}:no_such_function")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------------------
# reader bugs the fuzzer found
# ----------------------------------------------------------------------------------------------------------
# found by fuzz_reader(seed=0) as case 97 (under an earlier mix of mutations): a 2-frame WebP from
# seed_images() with 6 bytes changed. ImageMagick decodes it to a 16x16 image without pixel data, Wand's
# make_blob then returns None, and to_array raised TypeError.
DAMAGED_ANIMATED_WEBP = base64.b64decode(
    "UklGRs4BAABXRUJQVlA4WAoAAAACAAAADwAADwAAQU5JTQYAAAAAAAAAAABBTk1G0ggAAAAAAAAAAA8AAA8AAAAAAAJWUDgg"
    "ugAAADACAJ0BKhAAEAABQCYllAADYk/cbGw3IgoAAP7+d1/eJLMhZXXY/0+x/ZBidjnH45nwbx7/Nb2Dy/j9yvS5ZWurR9EC"
    "Z87+coAYN3sG3rg4oyH8KxKSskDURZ9KznRTuKXs/l1EHBygTxoUWVwfSwAOVSYMFNyx/65EjeZuya9JLK36RfjeHQhAURFA"
    "JWqr5+9ajlH/nnmJeRXDAgK/GssEu4PrFZaR3olu7trTpOW4b63USDp+7AAAAEFOTUbIAAAAAAAAAAAADwAADwAAAAAAAFZQ"
    "GCCwAAAAVAIAnQEqEAAQAAAAJiWMAANimHLyc+G8ANgAAP7+jAHaFHAHcE5BLqWXt8p1AFdhmGo0Zl0/H7A++vMsyzel+MH6"
    "vTPCgG0s6MZSU3L2623P0aXQMlF1drXW7BIX5pp8Yx4KlloyYZqlS6l7bT+oq9XzQf8mCiIy9CqZdjjSVDTydMcb/Gj/dO7j"
    "z019iHleUPe/YCnMWCMuOm0ynbACwClIYPy3iOAvB/LF8hwOUAA="
)


def test_damaged_animated_webp_is_a_skip_not_a_type_error(tmp_path):
    path = tmp_path / "case.webp"
    path.write_bytes(DAMAGED_ANIMATED_WEBP)
    with pytest.raises(imageio.ImageReadError, match="without pixel data") as e:
        imageio.load_rgb(str(path))
    assert "\n" not in str(e.value)
