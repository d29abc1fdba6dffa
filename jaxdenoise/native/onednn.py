"""oneDNN convolutions for XLA's CPU backend: ``onednn_conv.cc`` built once, loaded, and called through
``jax.ffi``.

On the 2-core Intel Xeon the project trains on, oneDNN (what PyTorch's CPU convolutions run on) computes
the U-Net's 3x3 convolutions at 2-3x the rate XLA's own CPU convolutions reach, and their kernel gradients
faster still (``docs/benchmarks.md``, "Where the U-Net step's time goes"). The three products of a
convolution (forward, input gradient, kernel gradient) are FFI handlers; ``models.layers`` calls them
from its 3x3 and transposed-conv layers when ``enabled`` says so, and XLA's own convolutions otherwise.

The library is compiled on first use (a few seconds, ``g++``) against jaxlib's FFI headers and the
``onednn-cpu-gomp`` wheel, into ``$JAXDENOISE_NATIVE_DIR`` (default ``~/.cache/jaxdenoise/native``), one
file per source, jaxlib and oneDNN version; ``python -m jaxdenoise.native.onednn`` builds it ahead of time
(``make setup`` does). Where it cannot be built or loaded (no compiler, another CPU architecture, the wheel
missing), ``enabled`` is False and the models run XLA's convolutions, with one log line saying why.

``JAXDENOISE_ONEDNN=0`` turns it off. It is never used on GPUs, with more than one device (XLA cannot
shard a custom call over a mesh), for dtypes other than float32 and bfloat16, or inside ``xla_only()`` (what
``jax.export`` traces: an exported model must not name a handler of this process). bfloat16 runs through it
only where the CPU has bfloat16 arithmetic (AVX512-BF16 / AMX).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
TARGETS = ("JdConvForward", "JdConvBackwardData", "JdConvBackwardWeights")  # float32; + "Bf16": bfloat16
_RUNTIME, _HEADERS = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"

# A call of at most this many multiply-adds runs on one thread: splitting it over the cores costs more than it
# saves (a thin layer of one micro-batch, e.g. NAFNet's 3 -> 16 intro conv on a 64x64 patch: 1.8 M). Every
# larger call uses all cores: XLA's CPU runtime runs the step's calls one after another, not side by side
# (measured: two independent chains of calls take as long together as one after the other), so a call
# left on one thread leaves the other cores idle (the U-Net's 16-px 128 -> 128 layer at batch 8 on one
# thread: 5.9 ms, against PyTorch's 2.9 ms on two).
ONE_THREAD_MACS = 8 * 2**20

_state = {"loaded": None, "why_not": "", "xla_only": 0}
_lock = threading.Lock()


def _files(dist: str, suffix: str) -> Optional[str]:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        path = os.path.normpath(str(f.locate()))
        if path.replace(os.sep, "/").endswith(suffix):
            return path
    return None


def _locate() -> Tuple[str, str, str]:
    """(include dir, library dir, oneDNN version) of the installed wheels; raises OSError naming what is
    missing."""
    lib = _files(_RUNTIME, "lib/libdnnl.so")
    header = _files(_HEADERS, "include/oneapi/dnnl/dnnl.hpp")
    if not lib or not header:
        missing = [d for d, p in ((_RUNTIME, lib), (_HEADERS, header)) if not p]
        raise OSError(f"the {' and '.join(missing)} wheel is not installed")
    return (os.path.dirname(os.path.dirname(os.path.dirname(header))), os.path.dirname(lib),
            importlib.metadata.version(_RUNTIME))


def library_path() -> str:
    """Where the built library for this source, jaxlib and oneDNN lives (it may not exist yet)."""
    include, libdir, version = _locate()
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read() + f"{jax.__version__}|{version}|{libdir}".encode()).hexdigest()[:16]
    root = os.environ.get("JAXDENOISE_NATIVE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                   "jaxdenoise", "native")
    return os.path.join(root, f"libjdconv-{digest}.so")


def build(path: Optional[str] = None) -> str:
    """Compile ``SOURCE`` into ``path`` (default ``library_path()``) unless it is there; returns the path.
    Concurrent builders are safe: each writes its own temporary file and renames it into place."""
    path = path or library_path()
    if os.path.isfile(path):
        return path
    include, libdir, _ = _locate()
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise OSError("no C++ compiler (g++) on PATH")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".libjdconv-", suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w", SOURCE, f"-I{include}",
           f"-I{jax.ffi.include_dir()}", f"-L{libdir}", "-ldnnl", f"-Wl,-rpath,{libdir}", "-o", tmp]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            tail = (out.stderr.strip().splitlines() or ["?"])[-1]
            raise OSError(f"compiling {os.path.basename(SOURCE)} failed: {tail}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load() -> bool:
    """Build (if needed), load and register the handlers once per process; False, with ``why_not()``
    saying why, where that is not possible here."""
    with _lock:
        if _state["loaded"] is None:
            try:
                if os.environ.get("JAXDENOISE_ONEDNN", "1") == "0":
                    raise OSError("JAXDENOISE_ONEDNN=0")
                if sys.platform != "linux":
                    raise OSError(f"not built for {sys.platform}")
                lib = ctypes.cdll.LoadLibrary(build())
                for name in TARGETS + tuple(t + "Bf16" for t in TARGETS):
                    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
                _state["loaded"] = True
            except (OSError, AttributeError) as e:
                _state["loaded"], _state["why_not"] = False, str(e)
                logging.getLogger("jaxdenoise").info("oneDNN convolutions off (XLA's are used): %s", e)
    return _state["loaded"]


def why_not() -> str:
    """Why ``load`` failed ('' when it did not, or has not run)."""
    return _state["why_not"]


@contextlib.contextmanager
def xla_only():
    """Trace with XLA's own convolutions inside this block (``jax.export``: an exported model must run in
    any process, where these handlers are not registered)."""
    _state["xla_only"] += 1
    try:
        yield
    finally:
        _state["xla_only"] -= 1


def bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): oneDNN emulates it otherwise,
    slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def enabled(dtype) -> bool:
    """Whether a convolution traced now, on ``dtype`` activations, runs through oneDNN: float32, or
    bfloat16 where the CPU has bfloat16 arithmetic (``bf16_native``), on a single CPU device, outside
    ``xla_only``, with the library loaded."""
    dtype = jnp.dtype(dtype)
    if _state["xla_only"] or dtype not in (jnp.float32, jnp.bfloat16):
        return False
    if dtype == jnp.bfloat16 and not bf16_native():
        return False
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        return False
    return load()


def _threads(macs: int) -> int:
    return 1 if macs <= ONE_THREAD_MACS else 0


def _macs(x_shape: Sequence[int], w_shape: Sequence[int], y_shape: Sequence[int]) -> int:
    """Multiply-adds of a convolution (the same for its three products)."""
    return y_shape[0] * y_shape[1] * y_shape[2] * w_shape[0] * w_shape[1] * w_shape[2] * w_shape[3]


def _call(target: str, shape: Sequence[int], a, b, stride: int, lo: int, hi: int, macs: int):
    if not load():
        raise RuntimeError(f"oneDNN convolutions are not available here: {why_not()}")
    dtype = jnp.result_type(a)
    if jnp.result_type(b) != dtype or dtype not in (jnp.float32, jnp.bfloat16):
        raise TypeError(f"oneDNN convolution: both operands float32 or both bfloat16, got {dtype}, "
                        f"{jnp.result_type(b)}")
    suffix = "Bf16" if dtype == jnp.bfloat16 else ""
    return jax.ffi.ffi_call(target + suffix, jax.ShapeDtypeStruct(tuple(shape), dtype), vmap_method="sequential")(
        a, b, stride=int(stride), lo=int(lo), hi=int(hi), threads=_threads(macs))


def _out_side(side: int, k: int, stride: int, lo: int, hi: int) -> int:
    return (side + lo + hi - k) // stride + 1


def conv(x, w, stride: int = 1, lo: int = 1, hi: int = 1):
    """``[N, IH, IW, IC]``, ``[KH, KW, IC, OC]`` -> ``[N, OH, OW, OC]`` (float32 or bfloat16): the cross-correlation of
    ``lax.conv_general_dilated(x, w, (stride, stride), ((lo, hi), (lo, hi)))`` in NHWC / HWIO."""
    n, ih, iw, _ = x.shape
    kh, kw, _, oc = w.shape
    oh, ow = _out_side(ih, kh, stride, lo, hi), _out_side(iw, kw, stride, lo, hi)
    return _call("JdConvForward", (n, oh, ow, oc), x, w, stride, lo, hi, _macs(x.shape, w.shape, (n, oh, ow, oc)))


def conv_backward_data(g, w, x_shape: Sequence[int], stride: int = 1, lo: int = 1, hi: int = 1):
    """The gradient of ``conv(x, w, ...)`` with respect to ``x`` (shape ``x_shape``) for output gradient
    ``g``: also the transposed convolution of ``g``."""
    return _call("JdConvBackwardData", x_shape, g, w, stride, lo, hi, _macs(x_shape, w.shape, g.shape))


def conv_backward_weights(x, g, w_shape: Sequence[int], stride: int = 1, lo: int = 1, hi: int = 1):
    """The gradient of ``conv(x, w, ...)`` with respect to ``w`` (shape ``w_shape``) for output gradient
    ``g``."""
    return _call("JdConvBackwardWeights", w_shape, x, g, stride, lo, hi, _macs(x.shape, w_shape, g.shape))


if __name__ == "__main__":  # ahead-of-time build (make setup): prints where, or why not
    try:
        print(f"oneDNN convolutions: {build()}")
    except OSError as e:
        print(f"oneDNN convolutions not built ({e}); XLA's convolutions will be used")
