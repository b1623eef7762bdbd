"""Preemption: SIGTERM or SIGINT stops a stage at its next safe point, never mid-write.

A cluster scheduler preempts with SIGTERM, a user with Ctrl-C (SIGINT). While a stage
runs under :func:`stoppable` the first such signal is only recorded; the stage stops at its
next safe point with :class:`~hierlab.errors.Preempted`, whose one line says where it
stopped and how to resume. A second signal stops at once. Each stage's safe points:
``docs/design-pipeline.md``.
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
    """The name a user knows a signal by, for messages.

    Args:
        signum: the signal's number.

    Returns:
        Its name, e.g. ``SIGTERM``.
    """
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
    """Record SIGTERM/SIGINT instead of dying, for the block.

    Only the main thread can install signal handlers, so elsewhere this does nothing;
    nested blocks share the outer one, and the previous handlers are restored at its end.

    Yields:
        Nothing; :func:`requested` and :func:`stop` read what was recorded.
    """
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


def stoppable(stage: F) -> F:
    """Decorate a stage function: signals are recorded while it runs (see :func:`handling`).

    Args:
        stage: the stage function; it calls :func:`stop` at its safe points.

    Returns:
        The wrapped function, same signature.
    """

    @functools.wraps(stage)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with handling():
            return stage(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def requested() -> int | None:
    """The signal received since the stage started, if any.

    Returns:
        Its number, or None when no stop was asked for.
    """
    return _state["signum"]


def stop(what: str) -> None:
    """At a safe point: stop the stage if a signal came, else do nothing.

    Args:
        what: where it stopped and what is kept, the start of the one-line message.

    Raises:
        Preempted: a signal was recorded; the message ends with how to resume.
    """
    signum = requested()
    if signum is not None:
        raise Preempted(f"{what} ({signal_name(signum)}); {resume_hint()}", signum)


def agreed(dist: Any, device: Any) -> int | None:
    """The stop signal every torchrun rank agrees on at this step, so all stop together.

    Args:
        dist: the process group's facts (:class:`hierlab.train.dist.Dist`).
        device: where the all-reduced flag lives (the backend's device).

    Returns:
        The highest signal number recorded on any rank (the local one on a single
        process), or None when no rank was signalled. A rank signalled only through this
        records the signal as its own.
    """
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
    """This process's command line, to tell a user how to resume or who holds a lock.

    Returns:
        ``hierlab ...`` as a shell would read it, or None when the process is not the
        ``hierlab`` CLI (a notebook, a test).
    """
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    ours = os.path.basename(argv0) == "hierlab" or (  # the script, or python -m hierlab
        os.path.basename(argv0) == "__main__.py"
        and os.path.basename(os.path.dirname(argv0)) == "hierlab")
    if ours and len(sys.argv) > 1:
        return shlex.join(["hierlab", *sys.argv[1:]])
    return None


def resume_hint() -> str:
    """How to resume: the same command again.

    Returns:
        The end of a stop message, quoting the command when it is known.
    """
    cmd = command_line()
    return f"re-run `{cmd}` to resume" if cmd else "run the same command again to resume"


@contextlib.contextmanager
def forward_to(pids: Callable[[], Any]) -> Iterator[None]:
    """While the block runs, a recorded signal is also sent to the processes ``pids()``.

    For a sweep's or a corpus's workers when only the parent was signalled; a signal sent
    to the whole group reaches them twice and counts once.

    Args:
        pids: called when the signal comes; returns the process ids to forward it to.

    Yields:
        Nothing.
    """
    _state["forward"].append(pids)
    try:
        yield
    finally:
        _state["forward"].remove(pids)


def ignore_in_workers() -> None:
    """Pool initializer: workers ignore SIGINT/SIGTERM sent to the whole process group.

    Each worker then finishes its current unit and the parent decides (it cancels the
    rest).
    """
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
