"""Fault injection for the reliability tests and the fault trials (docs/reliability.md).

Inert unless ``HIERLAB_FAULTS`` is set. The real code paths call :func:`hit` at a few
named points (a write about to be published, a training step boundary); a matching fault
then does what the real fault would do at that moment (a full disk, a kill, a SIGTERM), so
the tests exercise the real handling, not a mock of it. The syntax of
``HIERLAB_FAULTS``: ``docs/design-pipeline.md``.
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
    """Fire a configured fault that matches this point of the real code; no-op by default.

    Args:
        point: ``write`` (the final ``path`` is about to be published), ``published``
            (right after it was) or ``train`` (after optimizer step ``step``).
        path: the final path written, at ``write`` and ``published``.
        step: the optimizer step just taken, at ``train``.
        rank: this process's torchrun rank, for a fault aimed at one rank.

    Raises:
        OSError: ENOSPC, for a matching ``enospc`` fault. A ``kill`` or ``killafter``
            fault kills the process instead, and ``sigterm`` sends it SIGTERM.
    """
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
