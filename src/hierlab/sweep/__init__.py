"""``hierlab sweep``: many ordinary run directories from one base config and overrides.

A sweep file names a base config, shared overrides, a cartesian ``grid`` and/or explicit
``runs``; every run goes through :func:`hierlab.pipeline.run` in parallel processes,
resumably, and the summary table and figure are rewritten at the end (docs/sweeps.md).
From a notebook: ``table, results = run_sweep("configs/sweep-example.yml", out=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierlab._lazy import lazy_getattr
from hierlab.sweep.execute import RunResult, execute, is_finished, run_dir_of
from hierlab.sweep.spec import (
    EmergenceSettings,
    PlannedRun,
    RunOverride,
    SweepConfig,
    load_sweep,
    plan_runs,
)

if TYPE_CHECKING:  # pragma: no cover
    from hierlab.sweep.api import run_sweep
    from hierlab.sweep.summary import summarize

__all__ = [
    "EmergenceSettings", "PlannedRun", "RunOverride", "RunResult", "SweepConfig", "execute",
    "is_finished", "load_sweep", "plan_runs", "run_dir_of", "run_sweep", "summarize",
]

# pandas and matplotlib on first use only, so the CLI's option checks stay fast
__getattr__ = lazy_getattr(
    __name__, {"run_sweep": "hierlab.sweep.api", "summarize": "hierlab.sweep.summary"}
)
