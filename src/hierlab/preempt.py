"""Preemption: SIGTERM or SIGINT stops a stage at its next safe point, never mid-write.

A cluster scheduler preempts with SIGTERM (SLURM, Kubernetes, torchrun's agent forward it),
a user with Ctrl-C (SIGINT). While a stage runs under :func:`stoppable`, the first such
signal only records itself; the stage checks at its safe points and stops there with
:class:`~hierlab.errors.Preempted`, whose one line says where it stopped and how to resume
(the CLI prints it and exits ``128 + signal``: 143 for SIGTERM, 130 for SIGINT). A second
signal stops at once (``KeyboardInterrupt``); every artefact is still atomic.

Safe points: ``train`` after an optimizer step (a resume point checkpoint is saved there and
every torchrun rank stops at the same step: the flag is all-reduced each step), ``probe``
between (checkpoint, probe, variant) units, ``corpus`` between shards (running shard
workers finish theirs) and ``sweep`` between runs (each run stops at its own safe point).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from hierlab.errors import Preempted

__all__ = ["Preempted", "forward_to", "ignore_in_workers", "requested", "resume_hint",
           "signal_name", "stop", "stoppable"]

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)
F = TypeVar("F", bound=Callable[..., Any])
_state: dict[str, Any] = {"signum": None, "at": 0.0, "depth": 0, "forward": []}
_SAME_SIGNAL_S = 2.0  # a repeat within this is the same signal (group + forwarded)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _on_signal(signum: int, _frame: Any) -> None:
    if _state["signum"] is not None:
        if time.monotonic() - _state["at"] < _SAME_SIGNAL_S:
            return  # the same stop, delivered twice (to the group and forwarded by a parent)
        raise KeyboardInterrupt  # a second signal: stop now (writes stay atomic)
    _state["signum"], _state["at"] = signum, time.monotonic()
    for pids in _state["forward"]:
        for pid in list(pids()):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
    log.warning("%s received: stopping at the next safe point (send it again to stop at once)",
                signal_name(signum))


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Record SIGTERM/SIGINT instead of dying, for the block (main thread only; nested
    blocks share the outer one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"]:
        _state["depth"] += 1
        try:
            yield
        finally:
            _state["depth"] -= 1
        return
    before = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _state["depth"], _state["signum"] = 1, None
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        _state["depth"], _state["signum"] = 0, None


def stoppable(fn: F) -> F:
    """Decorate a stage function: signals are recorded while it runs (see :func:`handling`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with handling():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def requested() -> int | None:
    """The signal received since the stage started, if any."""
    return _state["signum"]


def stop(what: str) -> None:
    """At a safe point: raise :class:`Preempted` (``what`` says where it stopped) if a
    signal came."""
    signum = requested()
    if signum is not None:
        raise Preempted(f"{what} ({signal_name(signum)}); {resume_hint()}", signum)


def agreed(dist: Any, device: Any) -> int | None:
    """The stop signal every torchrun rank agrees on at this step (max over ranks), so all
    stop at the same step; the local one on a single process."""
    if dist.world <= 1:
        return requested()
    import torch

    flag = torch.tensor([requested() or 0], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    value = int(flag.item())
    if value and requested() is None:
        _state["signum"] = value  # another rank was signalled: stop here too
    return value or None


def command_line() -> str | None:
    """This process's ``hierlab ...`` command line (None when it is not the CLI)."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    ours = os.path.basename(argv0) == "hierlab" or (  # the script, or python -m hierlab
        os.path.basename(argv0) == "__main__.py"
        and os.path.basename(os.path.dirname(argv0)) == "hierlab")
    if ours and len(sys.argv) > 1:
        return shlex.join(["hierlab", *sys.argv[1:]])
    return None


def resume_hint() -> str:
    """How to resume: the same command again."""
    cmd = command_line()
    return f"re-run `{cmd}` to resume" if cmd else "run the same command again to resume"


@contextlib.contextmanager
def forward_to(pids: Callable[[], Any]) -> Iterator[None]:
    """While the block runs, a recorded signal is also sent to the processes ``pids()``
    (a sweep's or corpus's workers, when only the parent was signalled)."""
    _state["forward"].append(pids)
    try:
        yield
    finally:
        _state["forward"].remove(pids)


def ignore_in_workers() -> None:
    """Pool initializer: workers ignore SIGINT/SIGTERM sent to the whole process group, so
    each finishes its current unit and the parent decides (it cancels the rest)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
