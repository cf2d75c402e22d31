"""Keep glibc from handing freed tensor memory back to the kernel between runs, for steady timings.

With glibc's defaults an activation buffer above malloc's mmap threshold is unmapped when freed
and mapped and zero-filled again on the next forward pass, which costs thousands of page faults
a pass; worse, glibc adapts the threshold to the process's allocation history, so an isolated
conv block and the same conv inside a model land in different regimes that no calibration can
bridge (figures: docs/latency.md, "Allocator pinned"). Pinning the thresholds keeps freed memory
in the heap, as tuned CPU serving does anyway (jemalloc/tcmalloc, or these same settings). It is
process-wide and idempotent; anything that times latency (profiling, lut-check, the measured
result of a prune) must run under it, or its numbers are not comparable with the table's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)


@functools.cache
def pin_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; False where libc has no mallopt (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
