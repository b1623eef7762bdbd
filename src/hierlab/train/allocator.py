"""The C heap's policy while training: keep freed memory instead of handing it back.

A training step frees and re-allocates the same activation buffers every step; with glibc's
default thresholds a fresh ``hierlab train`` returned them to the operating system and
re-faulted them every step, which cost more than half a step in kernel time on the
quickstart model. :func:`keep_freed_memory` raises the thresholds once per process. The
measurement: ``docs/design-pipeline.md``.
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
