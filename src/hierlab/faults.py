"""Fault injection for the reliability tests and ``benchmarks/fault_trials.py``.

Inert unless ``HIERLAB_FAULTS`` is set. The real code paths call :func:`hit` at a few
named points (a write about to be published, a training step boundary); a matching fault
then does what the real fault would do at that moment:

* ``enospc@GLOB`` -- the write whose final path matches ``GLOB`` (``fnmatch`` on the
  path, or on its name) fails with ``OSError(ENOSPC)`` after its bytes went to the
  temporary file, as a disk filling up mid-write;
* ``kill@GLOB`` -- the process writing that path is ``SIGKILL``-ed mid-write (a lost Dask
  worker, an OOM kill);
* ``killafter@GLOB`` -- the process is ``SIGKILL``-ed right after that path is published
  (renamed into place), before it does anything else (a checkpoint boundary);
* ``sigterm@train:STEP[:RANK]`` -- the process (rank ``RANK`` only, under torchrun) sends
  itself ``SIGTERM`` after optimizer step ``STEP`` (a scheduler's preemption, on one rank);
* a ``#N`` suffix lets a fault fire ``N`` times (default once); ``#0`` = every time.

Items are comma-separated. A fault fires at most ``N`` times across every process that
shares ``HIERLAB_FAULT_DIR`` (claimed by creating a file there, so a Dask task retried on
another worker is not killed again); without it the count is per process.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
from pathlib import Path

__all__ = ["ENV", "ENV_DIR", "hit"]

ENV = "HIERLAB_FAULTS"
ENV_DIR = "HIERLAB_FAULT_DIR"
_fired: dict[str, int] = {}


def _claim(item: str, times: int) -> bool:
    """True if fault ``item`` may fire once more (and count it)."""
    if times == 0:
        return True
    shared = os.environ.get(ENV_DIR)
    if not shared:
        if _fired.get(item, 0) >= times:
            return False
        _fired[item] = _fired.get(item, 0) + 1
        return True
    safe = "".join(c if c.isalnum() else "_" for c in item)
    for i in range(times):
        try:
            os.close(os.open(Path(shared) / f"{safe}.{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False


def _items() -> list[tuple[str, str, int, str]]:
    """(kind, target, times, raw item) of every configured fault."""
    out = []
    for raw in os.environ.get(ENV, "").split(","):
        raw = raw.strip()
        if not raw or "@" not in raw:
            continue
        body, sep, times = raw.rpartition("#")
        if not sep or not times.isdigit():
            body, times = raw, "1"
        kind, _, target = body.partition("@")
        out.append((kind, target, int(times), raw))
    return out


def hit(point: str, path: str | Path | None = None, *, step: int | None = None,
        rank: int = 0) -> None:
    """Called by the real code at ``point`` (``write`` with the final ``path`` about to be
    published, ``published`` right after it was, or ``train`` after ``step``); fires a
    configured fault that matches. No-op by default."""
    if ENV not in os.environ:
        return
    for kind, target, times, raw in _items():
        at_write = point == "write" and kind in ("enospc", "kill")
        if (at_write or (point == "published" and kind == "killafter")) and path is not None:
            p = str(path)
            if not (fnmatch.fnmatch(p, target) or fnmatch.fnmatch(Path(p).name, target)):
                continue
            if not _claim(raw, times):
                continue
            if kind in ("kill", "killafter"):
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), p)
        if point == "train" and kind == "sigterm" and step is not None:
            parts = target.split(":")
            if parts[0] != "train" or int(parts[1]) != step:
                continue
            if len(parts) > 2 and int(parts[2]) != rank:
                continue
            if _claim(raw, times):
                os.kill(os.getpid(), signal.SIGTERM)
