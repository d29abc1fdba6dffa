"""Fuzzing the image reader: mutated bytes of valid images must each give an image or a one-line skip.

Every case is reproducible from (seed, case index): ``case_input(seed, case)`` takes one of the seed images
(``seed_images``: PNG, JPEG, TIFF, WebP, GIF and BMP files of several sizes and modes, made in memory with PIL)
and applies 1 to 4 mutations (mostly one) drawn from ``np.random.default_rng([seed, case])``: bit flips,
interesting byte values, truncation, deleted / duplicated / inserted byte ranges, a splice of two seeds, and
structure-aware patches that get past each decoder's first checks (PNG IHDR fields with the CRC recomputed,
JPEG frame header and segment lengths, TIFF directory entries, GIF / BMP / WebP header fields). PNG chunk CRCs
are usually recomputed after the mutations, so that libpng parses what was mutated instead of stopping at a
bad CRC.

Cases run in a persistent worker process under ``RLIMIT_AS = memory_mb``, so that a segfault or an abort in
ImageMagick kills the worker, not the caller. Each case ends as one of
  image   the target returned
  skip    ``ImageReadError`` with a one-line message
  error   any other exception, or an ``ImageReadError`` whose message is empty or spans lines
  memory  ``MemoryError``: the target needed more than the memory bound
  crash   the worker died (the detail gives its signal or exit status); a new worker takes over
  hang    no answer within ``timeout_s``: the worker is killed and replaced
Everything but image and skip is a failure; with ``out_dir`` its input is saved there, and
``case_input(seed, case)`` regenerates it in any case.
"""
from __future__ import annotations

import functools
import importlib
import io
import json
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from jaxdenoise import fsutil
from jaxdenoise.data import imageio

DEFAULT_TARGET = "jaxdenoise.data.imageio:load_rgb"
KINDS = {"image": "images", "skip": "skips", "error": "errors", "memory": "memory", "crash": "crashes",
         "hang": "hangs"}  # outcome -> its count in the summary
FAILURES = ("error", "memory", "crash", "hang")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "tiff": "tif", "webp": "webp", "gif": "gif", "bmp": "bmp"}
STARTUP_S = 120.0  # a worker imports numpy and the target before its first case; generous on a busy machine

INTERESTING = {1: (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF),
               2: (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF),
               4: (0, 1, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)}
SIDES = (0, 1, 7, 8, 9, 16, 31, 64, 255, 256, 1000, 4096, 15999, 16000, 16001, 46341, 65535, 65536, 100000,
         2**31 - 1, 2**32 - 1)  # image sides: around the reader's limits and the integer widths
MAX_LEN = 1 << 20  # mutated files stay under 1 MiB


# ----------------------------------------------------------------------------------------------------------
# seeds
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def seed_images() -> Tuple[Tuple[str, str, bytes], ...]:
    """(name, format, bytes) of valid images, made in memory with PIL from a fixed generator."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def photo(h: int, w: int, c: int = 3) -> np.ndarray:
        """A gradient with noise: compresses like a photo, not like pure noise or a flat colour."""
        grad = np.add.outer(np.linspace(0, 160, h), np.linspace(0, 80, w))[..., None]
        return np.clip(grad + rng.normal(0, 25, (h, w, c)), 0, 255).astype(np.uint8)

    def encode(img, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    def rgb(h: int, w: int, c: int = 3):
        return Image.fromarray(photo(h, w, c))

    def grey(h: int, w: int, dtype=np.uint8):
        return Image.fromarray(photo(h, w, 1)[..., 0].astype(dtype) * (257 if dtype == np.uint16 else 1))

    def palette(h: int, w: int):
        return rgb(h, w).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    cmyk = Image.frombytes("CMYK", (16, 16), photo(16, 16, 4).tobytes())
    gif_frames = [rgb(16, 16).convert("P") for _ in range(2)]
    tiff_pages, webp_frames = [rgb(16, 20) for _ in range(2)], [rgb(16, 16) for _ in range(2)]

    return (
        ("png-rgb", "png", encode(rgb(24, 32), "PNG")),
        ("png-rgba", "png", encode(rgb(20, 20, 4), "PNG")),
        ("png-grey", "png", encode(grey(40, 16), "PNG")),
        ("png-grey16", "png", encode(grey(16, 24, np.uint16), "PNG")),
        ("png-palette-trns", "png", encode(palette(24, 24), "PNG", transparency=0)),
        ("png-1bit", "png", encode(grey(24, 24).convert("1"), "PNG")),
        ("png-la", "png", encode(rgb(16, 16, 4).convert("LA"), "PNG")),
        ("jpeg-baseline", "jpeg", encode(rgb(32, 40), "JPEG", quality=90)),
        ("jpeg-progressive", "jpeg", encode(rgb(40, 48), "JPEG", quality=80, progressive=True)),
        ("jpeg-grey", "jpeg", encode(grey(24, 24), "JPEG")),
        ("jpeg-cmyk", "jpeg", encode(cmyk, "JPEG")),
        ("jpeg-444-optimized", "jpeg", encode(rgb(32, 32), "JPEG", subsampling=0, optimize=True)),
        ("jpeg-exif-rotated", "jpeg", encode(rgb(16, 32), "JPEG", exif=exif.tobytes())),
        ("tiff-rgb", "tiff", encode(rgb(24, 24), "TIFF")),
        ("tiff-rgba-lzw", "tiff", encode(rgb(16, 16, 4), "TIFF", compression="tiff_lzw")),
        ("tiff-grey-deflate", "tiff", encode(grey(16, 24), "TIFF", compression="tiff_adobe_deflate")),
        ("tiff-grey16", "tiff", encode(grey(16, 16, np.uint16), "TIFF")),
        ("tiff-jpeg", "tiff", encode(rgb(16, 16), "TIFF", compression="jpeg")),
        ("tiff-2-pages", "tiff", encode(tiff_pages[0], "TIFF", save_all=True, append_images=tiff_pages[1:])),
        ("webp-lossless", "webp", encode(rgb(24, 24), "WEBP", lossless=True)),
        ("webp-lossy", "webp", encode(rgb(32, 32), "WEBP", quality=70)),
        ("webp-rgba", "webp", encode(rgb(24, 24, 4), "WEBP", quality=70)),
        ("webp-2-frames", "webp", encode(webp_frames[0], "WEBP", save_all=True, append_images=webp_frames[1:])),
        ("gif", "gif", encode(palette(24, 24), "GIF")),
        ("gif-2-frames", "gif", encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:],
                                       duration=50, loop=0)),
        ("bmp-rgb", "bmp", encode(rgb(20, 24), "BMP")),
        ("bmp-palette", "bmp", encode(palette(16, 16), "BMP")),
        ("bmp-1bit", "bmp", encode(grey(16, 16).convert("1"), "BMP")),
        ("bmp-rgba", "bmp", encode(rgb(16, 16, 4), "BMP")),
    )


# ----------------------------------------------------------------------------------------------------------
# mutations: each takes (bytearray, generator, seeds) and returns the mutated bytearray
# ----------------------------------------------------------------------------------------------------------
Mutation = Callable[[bytearray, np.random.Generator, tuple], bytearray]


def _pos(rng: np.random.Generator, d: bytearray) -> int:
    return int(rng.integers(0, max(1, len(d))))


def _span(rng: np.random.Generator) -> int:
    """A byte-range length: mostly short, sometimes a few hundred bytes."""
    return int(rng.choice((1, 2, 4, 8, 16, 64, 256))) * int(rng.integers(1, 3))


def _put(d: bytearray, at: int, value: int, width: int, order: str) -> None:
    """Write ``value`` (cut to ``width`` bytes, ``order`` "big" or "little") at ``at`` when it fits."""
    if at + width <= len(d):
        d[at:at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, order)


def bit_flips(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    for _ in range(int(rng.integers(1, 9))):
        if d:
            d[_pos(rng, d)] ^= 1 << int(rng.integers(8))
    return d


def interesting_values(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    for _ in range(int(rng.integers(1, 5))):
        width = int(rng.choice((1, 2, 4)))
        _put(d, _pos(rng, d), int(rng.choice(INTERESTING[width])), width, str(rng.choice(("big", "little"))))
    return d


def truncate(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    return d[:int(rng.integers(1, len(d)))] if len(d) > 1 else d


def delete_range(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    at = _pos(rng, d)
    del d[at:at + _span(rng)]
    return d


def duplicate_range(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    at, src = _pos(rng, d), _pos(rng, d)
    d[at:at] = d[src:src + _span(rng)] * int(rng.integers(1, 4))
    return d


def insert_bytes(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    n = _span(rng)
    fill = rng.bytes(n) if rng.random() < 0.5 else bytes([int(rng.choice(INTERESTING[1]))]) * n
    at = _pos(rng, d)
    d[at:at] = fill
    return d


def splice(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    other = seeds[int(rng.integers(len(seeds)))][2]
    return d[:_pos(rng, d)] + other[int(rng.integers(len(other))):]


def _png_chunks(d: bytearray) -> List[Tuple[int, int]]:
    """(offset, length) of each whole chunk of a PNG, in order, up to the first that does not fit."""
    out, i = [], 8
    while i + 12 <= len(d):
        n = int.from_bytes(d[i:i + 4], "big")
        if i + 12 + n > len(d):
            break
        out.append((i, n))
        i += 12 + n
    return out


def png_fix_crcs(d: bytearray) -> bytearray:
    for at, n in _png_chunks(d):
        d[at + 8 + n:at + 12 + n] = struct.pack(">I", zlib.crc32(bytes(d[at + 4:at + 8 + n])) & 0xFFFFFFFF)
    return d


def png_header(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    """A patched IHDR field: a side, bit depth, colour type, compression, filter or interlace method."""
    if d[12:16] != b"IHDR" or len(d) < 33:
        return bit_flips(d, rng, seeds)
    field = int(rng.integers(0, 7))
    if field < 2:
        d[16 + 4 * field:20 + 4 * field] = struct.pack(">I", int(rng.choice(SIDES)) & 0xFFFFFFFF)
    else:
        d[24 + field - 2] = int(rng.choice((0, 1, 2, 3, 4, 6, 7, 8, 16, 255)))
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])) & 0xFFFFFFFF)
    return d


_SOF = re.compile(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]")
_SEGMENT = re.compile(rb"\xff[\xc0-\xcf\xda-\xfe]")


def jpeg_frame(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    """A patched start-of-frame field: precision, a side, the component count or a component's bytes."""
    m = _SOF.search(d)
    if m is None:
        return bit_flips(d, rng, seeds)
    at = m.start()
    field = int(rng.integers(0, 4))
    if field == 0:
        _put(d, at + 4, int(rng.choice((0, 1, 8, 12, 16, 255))), 1, "big")
    elif field in (1, 2):
        _put(d, at + 5 + 2 * (field - 1), int(rng.choice(SIDES)), 2, "big")
    elif rng.random() < 0.5:
        _put(d, at + 9, int(rng.choice((0, 1, 2, 3, 4, 5, 255))), 1, "big")
    else:  # a component's id, sampling factors or quantisation table
        _put(d, at + 10 + int(rng.integers(0, 9)), int(rng.choice(INTERESTING[1] + (0x11, 0x22, 0x44))), 1, "big")
    return d


def jpeg_segment_length(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    starts = [m.start() for m in _SEGMENT.finditer(d)]
    if not starts:
        return bit_flips(d, rng, seeds)
    _put(d, starts[int(rng.integers(len(starts)))] + 2, int(rng.choice(INTERESTING[2])), 2, "big")
    return d


def tiff_entry(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    """A patched field (type, count or value) of one entry of the first image directory."""
    order = "little" if d[:2] == b"II" else "big"
    ifd = int.from_bytes(d[4:8], order)
    count = int.from_bytes(d[ifd:ifd + 2], order) if ifd + 2 <= len(d) else 0
    if count == 0 or ifd + 2 + 12 * count > len(d):
        return bit_flips(d, rng, seeds)
    entry = ifd + 2 + 12 * int(rng.integers(count))
    field = int(rng.integers(0, 3))
    if field == 0:
        d[entry + 2:entry + 4] = int(rng.choice((0, 1, 2, 3, 4, 5, 7, 12, 13, 16, 0xFFFF))).to_bytes(2, order)
    else:
        value = int(rng.choice(SIDES + INTERESTING[4]))
        d[entry + 4 * field:entry + 4 * field + 4] = (value & 0xFFFFFFFF).to_bytes(4, order)
    return d


# (offset, width) of little-endian header fields: GIF screen and flags; BMP offset, header size, sides, planes,
# depth, compression, colours; WebP RIFF size, VP8X canvas, VP8L packed sides
_HEADER_FIELDS = {
    "gif": ((6, 2), (8, 2), (10, 1), (11, 1)),
    "bmp": ((10, 4), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2), (30, 4), (46, 4)),
    "webp": ((4, 4), (16, 4), (24, 3), (27, 3), (21, 4)),
}


def header_field(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    fields = _HEADER_FIELDS.get(imageio.sniff_format(bytes(d[:16])) or "")
    if not fields:
        return bit_flips(d, rng, seeds)
    at, width = fields[int(rng.integers(len(fields)))]
    values = SIDES if rng.random() < 0.5 else INTERESTING[4 if width == 3 else width]
    _put(d, at, int(rng.choice(values)), width, "little")
    return d


def structured(d: bytearray, rng: np.random.Generator, seeds: tuple) -> bytearray:
    """The structure-aware mutation that fits the bytes' current format."""
    fmt = imageio.sniff_format(bytes(d[:16]))
    if fmt == "png":
        return png_header(d, rng, seeds)
    if fmt == "jpeg":
        return (jpeg_frame if rng.random() < 0.6 else jpeg_segment_length)(d, rng, seeds)
    if fmt == "tiff":
        return tiff_entry(d, rng, seeds)
    return header_field(d, rng, seeds)


MUTATIONS: Tuple[Tuple[Mutation, float], ...] = (  # (mutation, weight)
    (bit_flips, 3), (interesting_values, 2), (truncate, 1), (delete_range, 1), (duplicate_range, 1),
    (insert_bytes, 1), (splice, 0.5), (structured, 3),
)


def case_input(seed: int, case: int) -> Tuple[str, bytes, List[str]]:
    """(seed image's format, mutated bytes, names of the seed and of the mutations) of case ``case``."""
    rng = np.random.default_rng([seed, case])
    seeds = seed_images()
    name, fmt, data = seeds[int(rng.integers(len(seeds)))]
    weights = np.array([w for _, w in MUTATIONS])
    d, applied = bytearray(data), [name]
    for _ in range(int(rng.choice(4, p=(0.5, 0.25, 0.15, 0.1))) + 1):  # mostly one: deeper into the decoders
        mutation = MUTATIONS[int(rng.choice(len(MUTATIONS), p=weights / weights.sum()))][0]
        d = mutation(d, rng, seeds)[:MAX_LEN]
        applied.append(mutation.__name__)
    if d.startswith(b"\x89PNG") and rng.random() < 0.75:  # else libpng stops at the first bad CRC
        d = png_fix_crcs(d)
        applied.append("png_fix_crcs")
    return fmt, bytes(d), applied


# ----------------------------------------------------------------------------------------------------------
# the worker process
# ----------------------------------------------------------------------------------------------------------
def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _outcome(fn: Callable, path: str) -> Dict[str, str]:
    try:
        fn(path)
    except imageio.ImageReadError as e:
        text = str(e)
        if text.strip() and "\n" not in text and "\r" not in text:
            return {"kind": "skip"}
        return {"kind": "error", "detail": f"{type(e).__name__} of {len(text.splitlines())} lines: "
                                           f"{fsutil.first_line(e)}"}
    except MemoryError:
        return {"kind": "memory", "detail": "MemoryError"}
    except Exception as e:  # noqa: BLE001 - the point: any other exception is a finding
        return {"kind": "error", "detail": f"{type(e).__name__}: {fsutil.first_line(e)}"}
    return {"kind": "image"}


def _worker() -> None:
    """Worker main: argv = [target, memory_mb, folder]; cases arrive on stdin, one JSON answer per line."""
    target, memory_mb, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is counted, not dumped
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the target prints must not mix with the answers
    fn = _resolve(target)
    path = os.path.join(folder, f"case-{os.getpid()}")
    answers.write('{"kind": "ready"}\n')
    cases = sys.stdin.buffer
    while len(head := cases.read(4)) == 4:
        with open(path, "wb") as f:
            f.write(cases.read(int.from_bytes(head, "big")))
        answer = _outcome(fn, path)
        answer["rss_mb"] = _peak_rss_mb()
        answers.write(json.dumps(answer) + "\n")


def _peak_rss_mb() -> float:
    """This process's peak resident set since exec (Linux VmHWM). ``ru_maxrss`` would also count the parent's
    pages touched between fork and exec: a worker started from a large process (a test run with JAX
    loaded) would report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_WORKER_MAIN = "from tools.fuzz import _worker; _worker()"  # scripts/ is on the path the worker inherits


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, target: str, memory_mb: int, folder: str):
        self.stderr = tempfile.TemporaryFile(dir=folder)
        # the worker finds the target as this process does (tests pass targets from their own modules)
        paths = [os.getcwd()] + [os.path.abspath(p) for p in sys.path if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, target, str(memory_mb), folder],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.buffer = b""
        self.peak_rss_mb = 0.0
        ready = self._answer(STARTUP_S)
        if ready.get("kind") != "ready":
            raise ValueError(f"the fuzz worker for {target} did not start: {ready.get('detail')}")

    def ask(self, data: bytes, timeout_s: float) -> Dict:
        """The outcome of one case; after a crash or a hang this worker is gone."""
        try:
            self.proc.stdin.write(len(data).to_bytes(4, "big") + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died()
        answer = self._answer(timeout_s)
        self.peak_rss_mb = max(self.peak_rss_mb, answer.get("rss_mb", 0.0))
        return answer

    def _answer(self, timeout_s: float) -> Dict:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.proc.kill()
                self._reap()
                self.stderr.close()
                return {"kind": "hang", "detail": f"no answer within {timeout_s:g} s"}
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return self._died()
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def _died(self) -> Dict:
        code = self._reap()
        if code < 0:
            how = f"killed by {signal.Signals(-code).name if -code in signal.valid_signals() else -code}"
        else:
            how = f"exited with status {code}"
        self.stderr.seek(0)
        last = [line for line in self.stderr.read()[-4096:].decode(errors="replace").splitlines() if line.strip()]
        self.stderr.close()
        return {"kind": "crash", "detail": how + (f" ({last[-1].strip()[:200]})" if last else "")}

    def _reap(self) -> int:
        """Wait for the worker; its peak memory came with each answer (``_peak_rss_mb``)."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except BrokenPipeError:
                pass
        _, status, _ = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode

    def close(self) -> None:
        """End of cases: the worker returns at the end of its input (it is killed if it does not)."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + 10
        while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
            if not os.read(fd, 1 << 16):  # end of file: the worker has exited
                break
        else:
            self.proc.kill()
        self._reap()
        self.stderr.close()


def fuzz_reader(cases: int, seed: int = 0, out_dir: Optional[str] = None, timeout_s: float = 20.0,
                memory_mb: int = 3072, target: str = DEFAULT_TARGET) -> Dict:
    """Run ``cases`` mutated images through ``target`` (``"module:function"``, called with a file path).

    Returns a JSON-able summary: cases, seed, target, the count of each outcome (images, skips, errors,
    memory, crashes, hangs), peak_rss_mb (the workers' largest resident set), seconds, by_format
    ({seed format: {outcome: count}}) and failures ([{case, format, kind, detail, mutations, saved_path}]).
    """
    if ":" not in target:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    counts = dict.fromkeys(KINDS, 0)
    by_format: Dict[str, Dict[str, int]] = {}
    failures = []
    peak = 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxdenoise-fuzz-") as folder:
        worker = None
        try:
            for case in range(cases):
                fmt, data, applied = case_input(seed, case)
                if worker is None:
                    worker = _Worker(target, memory_mb, folder)
                answer = worker.ask(data, timeout_s)
                kind = answer["kind"]
                if kind in ("crash", "hang"):
                    peak, worker = max(peak, worker.peak_rss_mb), None
                counts[kind] += 1
                per_format = by_format.setdefault(fmt, dict.fromkeys(KINDS, 0))
                per_format[kind] += 1
                if kind in FAILURES:
                    saved = None
                    if out_dir:
                        saved = os.path.join(out_dir, f"seed{seed}-case{case:06d}-{kind}.{EXTENSIONS[fmt]}")
                        fsutil.atomic_write(saved, data, fsync=False)
                    failures.append({"case": case, "format": fmt, "kind": kind, "detail": answer.get("detail", ""),
                                     "mutations": applied, "saved_path": saved})
        finally:
            if worker is not None:
                worker.close()
                peak = max(peak, worker.peak_rss_mb)
    return {"cases": cases, "seed": seed, "target": target,
            **{KINDS[k]: n for k, n in counts.items()},
            "peak_rss_mb": round(peak, 1), "seconds": round(time.perf_counter() - t0, 2),
            "by_format": {f: {KINDS[k]: n for k, n in c.items()} for f, c in sorted(by_format.items())},
            "failures": failures}
