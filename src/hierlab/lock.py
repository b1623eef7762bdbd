"""One writer per run folder: a ``filelock`` lock plus a note of who holds it.

Every stage that writes into a run or sweep folder holds ``FOLDER/.hierlab.lock`` (an OS
``flock``, which the kernel releases however its process dies) and notes its pid, host and
command beside it, so a second writer refuses at once with a one-line
:class:`~hierlab.errors.LockedError`. Readers take no lock: every artefact is published by
an atomic rename. Stale notes, re-entry and torchrun: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from hierlab.errors import LockedError
from hierlab.io import atomic_write_json, read_json
from hierlab.preempt import command_line

__all__ = ["HOLDER", "LOCK", "run_lock", "writes"]

log = logging.getLogger(__name__)
LOCK = ".hierlab.lock"
HOLDER = ".hierlab.lock.json"
_held: dict[Path, int] = {}  # folders this process holds -> nesting depth
F = TypeVar("F", bound=Callable[..., Any])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _who(h: dict[str, Any]) -> str:
    return (f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started "
            f"{h.get('started', '?')}: {h.get('command', '?')}")


def _dead_here(h: dict[str, Any] | None) -> bool:
    """The note names a process of this host that no longer runs."""
    return bool(h) and h.get("host") == socket.gethostname() and not _alive(int(h["pid"]))


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold the writer lock of ``folder`` for the block.

    Re-entrant within a process; under torchrun only rank 0 locks. A lock held by a live
    process is a :class:`~hierlab.errors.LockedError`; one left by a dead process of this
    host is taken over with a warning.

    Args:
        folder: the run or sweep folder (created if missing).

    Yields:
        Nothing; the lock is released and the holder note removed when the block ends.
    """
    folder = Path(folder).resolve()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        yield  # torchrun: rank 0 holds the lock for the job
        return
    if folder in _held:
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / HOLDER
    lock = FileLock(folder / LOCK, timeout=0)
    for attempt in range(2):
        try:
            lock.acquire()
            break
        except Timeout:
            holder = read_json(note)
            if attempt == 0 and _dead_here(holder) and holder is not None:
                # a soft lock file (no flock on this filesystem) outlived its process
                log.warning("%s: removing the lock left by %s (no longer running)", folder,
                            _who(holder))
                (folder / LOCK).unlink(missing_ok=True)
                continue
            raise LockedError(
                f"{folder}: already being written by another hierlab process "
                f"({_who(holder or {})}); wait for it to finish or stop it, or use another "
                "--out"
            ) from None
    try:
        previous = read_json(note)
        if previous and int(previous.get("pid", -1)) != os.getpid():
            how = ("no longer running" if _dead_here(previous)
                   else "its lock was released")
            log.warning("%s: taking over the lock left by %s (%s)", folder, _who(previous), how)
        atomic_write_json(note, {
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "command": (command_line() or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))[:300],
            "time": time.time(),
        })
    except BaseException:
        lock.release()
        raise
    _held[folder] = 1
    try:
        yield
    finally:
        del _held[folder]
        note.unlink(missing_ok=True)
        lock.release()


def writes(param: str) -> Callable[[F], F]:
    """Decorate a stage function: hold :func:`run_lock` on one of its arguments while it runs.

    Args:
        param: the name of the parameter that holds the run or sweep folder.

    Returns:
        The decorator; the decorated function keeps its signature.
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            with run_lock(bound.arguments[param]):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
