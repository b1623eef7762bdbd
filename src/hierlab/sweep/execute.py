"""Running a sweep: one ordinary run directory per run, in parallel spawn processes.

Each worker process gets ``max(1, cores // parallel)`` threads (set in its environment
before torch is imported, and with ``torch.set_num_threads``), so runs x threads never
exceed the cores. Every run goes through :func:`hierlab.pipeline.run`, whose stages are
resumable, so a killed sweep continues where it stopped when it is run again.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import yaml

from hierlab import preempt
from hierlab.config import config_from_dict
from hierlab.errors import ConfigError, Preempted
from hierlab.lock import writes
from hierlab.progress import progress_bar
from hierlab.sweep.spec import PlannedRun

log = logging.getLogger(__name__)

FAIL_ENV = "HIERLAB_SWEEP_FAIL"
"""Fault injection for tests: comma-separated ``name`` (the worker raises before the
pipeline) or ``name@stage`` (it raises when that stage starts, as a kill there would)."""


@dataclass(frozen=True)
class RunResult:
    """What happened to one run.

    Attributes:
        name: the run's name.
        status: ``done``, ``skipped`` (already finished), ``stopped`` (at a safe point) or
            ``failed``.
        run_dir: its run directory.
        error: the failure or stop message, else None.
    """

    name: str
    status: str
    run_dir: Path
    error: str | None = None


def run_dir_of(out: Path, name: str) -> Path:
    """Where a sweep's run lives, an ordinary run directory.

    Args:
        out: the sweep folder.
        name: the run's name.

    Returns:
        ``out/runs/<name>``.
    """
    return Path(out) / "runs" / name


def recorded_matches(run: PlannedRun, run_dir: Path) -> bool | None:
    """Whether a run directory was made for this run, so a sweep never overwrites another.

    Args:
        run: the planned run.
        run_dir: its run directory.

    Returns:
        None when no config is recorded yet; else whether the recorded config equals the
        intended one (an unreadable one does not).
    """
    path = run_dir / "config.yml"
    if not path.is_file():
        return None
    try:
        recorded = config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))
    except (ConfigError, yaml.YAMLError):
        return False
    return recorded.model_dump(mode="json") == run.config.model_dump(mode="json")


def is_finished(run: PlannedRun, run_dir: Path) -> bool:
    """Whether a run can be skipped.

    Args:
        run: the planned run.
        run_dir: its run directory.

    Returns:
        True when the report exists and the recorded config is the intended one.
    """
    return (run_dir / "report.html").is_file() and recorded_matches(run, run_dir) is True


def check_run_dirs(runs: list[PlannedRun], out: Path) -> None:
    """Refuse, before any work, a run directory that holds a different config.

    Args:
        runs: the planned runs.
        out: the sweep folder.

    Raises:
        ConfigError: naming the first such run and what to do.
    """
    for run in runs:
        d = run_dir_of(out, run.name)
        if recorded_matches(run, d) is False:
            raise ConfigError(
                f"run '{run.name}': {d} holds a different config (delete it, rename the "
                "run or use another --out; a sweep never overwrites a run)"
            )


def _worker(run: PlannedRun, run_dir: str, threads: int) -> tuple[str, str | None]:
    """Child process body: threads, log file, then the one orchestrator."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    rd = Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    logf = open(rd / "log.txt", "a", buffering=1)  # noqa: SIM115 - lives as long as the child
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(logf.fileno(), 1)
    os.dup2(logf.fileno(), 2)
    sys.stdout = sys.stderr = logf
    logging.basicConfig(level=logging.INFO, stream=logf, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import torch

        torch.set_num_threads(threads)
        inject = os.environ.get(FAIL_ENV, "").split(",")
        if run.name in inject:
            raise RuntimeError(f"{FAIL_ENV} asks run '{run.name}' to fail")
        from hierlab.pipeline import run as pipeline_run

        def on_stage(stage: str) -> None:
            print(f"== stage {stage}", flush=True)
            if f"{run.name}@{stage}" in inject:
                raise RuntimeError(f"{FAIL_ENV} asks run '{run.name}' to fail at {stage}")

        logging.getLogger(__name__).info("run %s: %d threads", run.name, threads)
        pipeline_run(run.config, rd, on_stage=on_stage)
        return "done", None
    except Preempted as err:  # stopped at a safe point (its own message says where)
        print(f"stopped: {err}", flush=True)
        return "stopped", str(err)
    except BaseException as err:  # noqa: BLE001 - reported, the sweep continues
        traceback.print_exc(file=logf)
        return "failed", f"{type(err).__name__}: {err}"
    finally:
        logf.flush()


@writes("out")  # one sweep per sweep folder (hierlab.lock)
@preempt.stoppable  # SIGTERM/SIGINT: runs stop at their safe points, none is started after
def execute(
    runs: list[PlannedRun],
    out: Path,
    *,
    parallel: int = 1,
    cores: int | None = None,
    progress: bool | None = None,
) -> list[RunResult]:
    """Run every unfinished run, in parallel processes; failures are reported, not raised.

    Holds the sweep folder's writer lock; on SIGTERM/SIGINT the running runs stop at their
    safe points and none is started after.

    Args:
        runs: the planned runs.
        out: the sweep folder.
        parallel: runs at once.
        cores: CPU cores shared among them, ``max(1, cores // parallel)`` threads each
            (None: all cores).
        progress: draw a progress bar (None: when output is a terminal).

    Returns:
        Each run's result, in the order of ``runs``.
    """
    out = Path(out)
    check_run_dirs(runs, out)
    cores = cores or os.cpu_count() or 1
    results: dict[str, RunResult] = {}
    todo = []
    for run in runs:
        d = run_dir_of(out, run.name)
        if is_finished(run, d):
            results[run.name] = RunResult(run.name, "skipped", d)
        else:
            todo.append(run)
    parallel = max(1, min(parallel, len(todo) or 1))
    threads = max(1, cores // parallel)
    bar = progress_bar(total=len(runs), initial=len(results), desc="sweep runs", unit="run",
                       enabled=progress)
    if todo:
        ctx = mp.get_context("spawn")
        with (ProcessPoolExecutor(max_workers=parallel, mp_context=ctx) as pool,
              preempt.forward_to(lambda: list(getattr(pool, "_processes", None) or {}))):
            futs = {
                pool.submit(_worker, r, str(run_dir_of(out, r.name)), threads): r for r in todo
            }
            for fut in as_completed(futs):
                r = futs[fut]
                d = run_dir_of(out, r.name)
                if preempt.requested():  # runs not started yet stay unstarted
                    for f in futs:
                        f.cancel()
                if fut.cancelled():
                    continue
                try:
                    status, error = fut.result()
                except Exception as err:  # noqa: BLE001 - a crashed worker process
                    status, error = "failed", f"{type(err).__name__}: {err}"
                results[r.name] = RunResult(r.name, status, d, error)
                if status == "failed":
                    log.error("run %s failed: %s (see %s)", r.name, error, d / "log.txt")
                bar.update(1)
                bar.set_postfix_str(f"{r.name}: {status}")
    bar.close()
    n_done = sum(r.status in ("done", "skipped") for r in results.values())
    preempt.stop(f"sweep: {n_done} of {len(runs)} runs finished (the others stopped at their "
                 "safe points and keep their resume points)")
    return [results[r.name] for r in runs]
