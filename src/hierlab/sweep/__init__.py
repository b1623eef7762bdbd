"""``hierlab sweep``: many ordinary run directories from one base config and overrides.

A sweep file names a base config (preset or path), overrides shared by every run, a
cartesian ``grid`` and/or explicit ``runs`` (dotted keys; ``null`` deletes a key). Every
run's config is validated at load time; runs go through :func:`hierlab.pipeline.run` in
parallel spawn processes; finished runs are skipped and killed ones resume; the summary
table and figure are rewritten at the end. Notebook use::

    from hierlab.sweep import run_sweep
    table = run_sweep("configs/sweep-example.yml", out="sweeps/example")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hierlab.sweep.execute import RunResult, execute, is_finished, run_dir_of
from hierlab.sweep.spec import PlannedRun, RunOverride, SweepConfig, load_sweep, plan_runs

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "PlannedRun", "RunOverride", "RunResult", "SweepConfig", "execute", "is_finished",
    "load_sweep", "plan_runs", "run_dir_of", "run_sweep", "summarize",
]


def summarize(
    runs: list[PlannedRun], out: str | Path, results: list[RunResult] | None = None
) -> pd.DataFrame:
    """Write the summary table and figure of ``runs`` under ``out`` (see
    :func:`hierlab.sweep.summary.summarize`; imported lazily to keep pandas off the CLI)."""
    from hierlab.sweep.summary import summarize as _summarize

    return _summarize(runs, Path(out), results)


def run_sweep(
    path: str | Path,
    out: str | Path | None = None,
    *,
    parallel: int | None = None,
    only: list[str] | None = None,
    summary_only: bool = False,
    cores: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[RunResult]]:
    """Load, run (unless ``summary_only``) and summarise a sweep; return the summary table
    and each run's result. ``only`` restricts the runs executed (the summary keeps all)."""
    from hierlab.errors import ConfigError

    sweep, runs = load_sweep(path)
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
    return summarize(runs, out, results), results
