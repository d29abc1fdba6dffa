"""Keep freed host memory in the process (glibc malloc settings), so that XLA's CPU buffers are not
returned to the OS and faulted back in on every step.

XLA's CPU runtime allocates each step's temporaries (hundreds of MB for the paper model at batch 16) from
malloc and frees them at the end of the call. With glibc's defaults those big blocks come from mmap (or
from per-thread arenas that are trimmed), so every step pays ~100,000 page faults and the kernel zeroing
the pages again: ~25 % of the step on the 2-core dev CPU (376 -> 282 ms, docs/benchmarks.md). One arena,
no mmap for big blocks and no trimming keep the pages mapped; the cost is that the process's RSS stays at
its peak.

Must run before other threads start allocating (the arena limit is fixed when the second arena is made),
so the training/benchmark scripts call it before importing anything heavy. Set
``JAXDENOISE_RETAIN_MEMORY=0`` to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc <malloc.h>
_TRIM_THRESHOLD = 2**31 - 1

# The same settings as environment variables, for child processes (e.g. the PyTorch reference run by the
# benchmark, so that both sides of a comparison may have them).
GLIBC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD)}


def retain_freed_memory() -> bool:
    """Apply the settings above; returns True when applied (Linux with glibc, not disabled by the env)."""
    if os.environ.get("JAXDENOISE_RETAIN_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))
