"""Progress bars: the one place that decides whether a bar is drawn.

A bar is drawn only where someone watches it: on a terminal, or in a Jupyter kernel (as a
widget). Anywhere else -- a CI log, a pipe, a file, a captured subprocess -- it is off,
since each redraw would land in the log as another line of carriage returns. Every long
loop (corpus shards, training steps, probe checkpoints, sweep runs) takes its bar here.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm.auto import tqdm

__all__ = ["bars_enabled", "progress_bar"]


def bars_enabled(stream: IO[str] | None = None) -> bool:
    """Whether a bar on ``stream`` would be seen.

    Args:
        stream: where the bar is drawn (default: ``sys.stderr``, tqdm's default).

    Returns:
        True on a terminal or in a Jupyter kernel; False otherwise.
    """
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget, not text
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Any = None, *, enabled: bool | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar that draws only when :func:`bars_enabled` (or ``enabled``) says so.

    Args:
        iterable: what to iterate over, as for ``tqdm``.
        enabled: force the bar on or off (None: :func:`bars_enabled`); a caller that is not
            the one to report (a torchrun rank other than 0) passes False.
        **kwargs: tqdm's own options (``total``, ``desc``, ``unit``, ``position`` ...).

    Returns:
        The bar; a disabled one still counts, so callers never need to check.
    """
    on = bars_enabled(kwargs.get("file")) if enabled is None else enabled
    return tqdm(iterable, disable=not on, **kwargs)
