"""The C heap's policy while training: keep freed memory instead of handing it back.

A training step frees and re-allocates the same activation buffers every step. glibc hands
a freed block back to the operating system when it was mmap-ed (above the mmap threshold,
128 KiB in a fresh process, raised only once a large block has been freed) or sits at the
top of the heap (trim threshold), so a fresh ``hierlab train`` re-faulted ~10,000 pages
(~40 MB) per step of the quickstart model: ~20 ms of kernel time in a step that takes
~35 ms without it. A process that had freed a large array before (the in-process
benchmark, after generating its corpus) did not pay it. :func:`keep_freed_memory` fixes
both thresholds; the process then keeps its peak heap until it exits.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
#: the largest mmap threshold glibc accepts on 64-bit (its dynamic threshold's ceiling)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30

_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Keep freed blocks below 32 MiB (and up to 1 GiB of free heap top) in the process,
    so training steps reuse their pages; once per process.

    Returns:
        True where it applied (Linux with glibc); False elsewhere (macOS, musl), where the
        allocator is left as it is.
    """
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("allocator thresholds left as they are (no glibc mallopt)")
    _done.append(ok)
    return ok
