"""``run_sweep``: load, execute and summarise a sweep in one call.

The one entry point of the ``hierlab sweep`` command and of notebooks, so both plan, run
and summarise a sweep alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierlab.errors import ConfigError
from hierlab.sweep.execute import RunResult, execute
from hierlab.sweep.spec import load_sweep

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["run_sweep"]


def run_sweep(
    path: str | Path,
    out: str | Path | None = None,
    *,
    parallel: int | None = None,
    only: list[str] | None = None,
    summary_only: bool = False,
    cores: int | None = None,
    progress: bool | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[RunResult]]:
    """Load, run (unless ``summary_only``) and summarise a sweep, resumably.

    Runs that name an arm and a seed also get the emergence statistics
    (``emergence.csv``, ``emergence_stats.csv``, ``kaplan_meier.png``).

    Args:
        path: the sweep YAML file.
        out: the sweep folder (default ``sweeps/<sweep name>``).
        parallel: runs at once (None: the sweep file's ``parallel``).
        only: run only these runs; the summary still covers all of them.
        summary_only: run nothing, only rewrite the summary from the run directories.
        cores: CPU cores to share among the parallel runs (None: all).
        progress: draw a progress bar (None: when output is a terminal).
        overrides: dotted keys set on every run last (the command's ``--set``).

    Returns:
        The summary table (one row per run and model) and each executed run's result.
    """
    from hierlab.sweep.summary import summarize  # pandas and matplotlib: on use only

    sweep, runs = load_sweep(path, overrides)
    out = Path(out) if out is not None else Path("sweeps") / sweep.name
    chosen = runs
    if only:
        names = {r.name for r in runs}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only: no run named {', '.join(unknown)} "
                              f"(runs: {', '.join(sorted(names))})")
        chosen = [r for r in runs if r.name in only]
    results: list[RunResult] = []
    if not summary_only:
        results = execute(chosen, out, parallel=parallel or sweep.parallel, cores=cores,
                          progress=progress)
    return summarize(runs, out, results, emergence=sweep.emergence), results
