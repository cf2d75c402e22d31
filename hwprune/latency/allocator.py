"""Keep glibc from handing freed tensor memory back to the kernel between runs, for steady timings.

Measured on this machine (torch-cpu, ResNet-20, batch 32, 2 threads): with glibc's defaults every
forward pass takes ~8000 minor page faults, because each activation buffer is above malloc's
mmap threshold and is unmapped when freed, then mapped and zero-filled again on the next call.
That costs 2 s of system time per 100 runs (37 ms a run instead of 26 ms) and, worse, depends on
the process's allocation history (glibc adapts the threshold as it goes), so an isolated conv
block and the same conv inside a model land in different regimes and no calibration can bridge
them. Pinning the thresholds makes freed memory stay in the heap, which is what tuned CPU
serving does anyway (jemalloc/tcmalloc, or these same settings). It is process-wide and
idempotent; anything that times latency (profiling, lut-check, the measured result of a prune)
must run under it, or its numbers are not comparable with the table's.
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
