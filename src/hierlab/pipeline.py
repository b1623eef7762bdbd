"""``hierlab run``: corpus -> train -> probe -> figures -> report, resumably.

Each stage reads only the artefacts of the stage before it and skips work whose outputs
are complete (corpus manifests, final checkpoints, probe part files), so re-running after
a kill continues where it stopped, and re-running a finished run only redraws figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hierlab import preempt
from hierlab.config import ExperimentConfig
from hierlab.contracts import STAGES
from hierlab.figures.config import FiguresConfig
from hierlab.io import atomic_write_bytes, atomic_write_json
from hierlab.lock import writes

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


def _stage_corpus(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    from hierlab.corpus.generate import generate_corpora

    return generate_corpora(cfg.corpora, run_dir, workers=opts.get("workers", 1))


@writes("run_dir")  # one writer across the groups, not only within each
def train(
    cfg: ExperimentConfig, run_dir: Path, *, only: str | None = None, device: str | None = None
) -> dict[str, Path]:
    """Train one model per corpus, each with its own model and training sections.

    The one path for ``hierlab run`` and ``hierlab train``. Corpora whose settings are the
    same after ``per_corpus`` is merged in train in one
    :func:`~hierlab.train.loop.train_corpora` call, so ``training.parallel_corpora``
    still runs them side by side; the groups run one after the other, in the order of
    their first corpus in the config.

    Args:
        cfg: the experiment config.
        run_dir: the run directory.
        only: train only the model of this corpus.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (None: each group's ``training.device``).

    Returns:
        corpus name -> its model folder ``run_dir/models/<name>``, in the config's order.
    """
    from hierlab.train.loop import train_corpora

    names = list(cfg.corpora)
    if only is not None and only in names:
        names = [only]
    elif only is not None or not names:  # train_corpora refuses these with its own message
        return train_corpora(cfg.model, cfg.training, cfg.corpora, run_dir, only=only,
                             device=device)
    groups: dict[str, tuple[ExperimentConfig, list[str]]] = {}
    for name in names:
        own = cfg.for_corpus(name)
        key = json.dumps([own.model.model_dump(mode="json"),
                          own.training.model_dump(mode="json")], sort_keys=True)
        groups.setdefault(key, (own, []))[1].append(name)
    out: dict[str, Path] = {}
    for own, members in groups.values():
        out.update(train_corpora(own.model, own.training, members, run_dir, device=device))
    return {n: out[n] for n in names if n in out}


def probe(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    checkpoints: str | Path | None = None,
    probes: Sequence[str] | str | None = None,
    variant: Sequence[str] | str | None = None,
    device: str | None = None,
) -> dict[str, Path]:
    """Probe the checkpoints, each model with its own corpus's ``probes`` settings.

    The one path for ``hierlab run`` and ``hierlab probe``: the run-wide choices (which
    probes and variants, the device, the checkpoint source) are the experiment's, the
    probes' own sections those of the model's corpus (``per_corpus``).

    Args:
        cfg: the experiment config.
        run_dir: the run directory.
        checkpoints: the checkpoint source (None: ``probes.checkpoints``, else the run's).
        probes: the probes to run, a list or comma-separated (None: ``probes.probes``).
        variant: ``reference``, ``standard`` or ``both``, or a list (None:
            ``probes.variants``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (None: ``probes.device``).

    Returns:
        ``{probe: path of its table}``, as :func:`~hierlab.probes.runner.run_probes`.
    """
    from hierlab.probes.runner import run_probes

    own = {n: cfg.for_corpus(n).probes for n, o in cfg.per_corpus.items() if o.probes}
    return run_probes(cfg.probes, run_dir, checkpoints=checkpoints, probes=probes,
                      variant=variant, device=device, model_configs=own or None)


def _stage_train(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    return train(cfg, run_dir, device=opts.get("device"))


def _stage_probe(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    from hierlab.train.tracking import backends_of

    paths = probe(cfg, run_dir, device=opts.get("device"))
    if backends_of(cfg.training):
        track_probe_summary(cfg, run_dir, paths)
    return paths


def track_probe_summary(cfg: ExperimentConfig, run_dir: Path, paths: dict[str, Path]) -> None:
    """Log the probe tables' per-checkpoint maxima to ``training.tracking``'s backends.

    One tracker run ``<name>-probes`` (TensorBoard under ``RUN/metrics/tensorboard``), so
    probe curves sit beside the training curves in the same dashboard.

    Args:
        cfg: the experiment config (its name and ``training`` section).
        run_dir: the run directory.
        paths: probe -> its metrics table, as :func:`hierlab.probes.runner.run_probes`
            returns them; missing files are skipped.
    """
    import pandas as pd

    from hierlab.train.tracking import Tracker, backends_of, log_probe_summary

    tables = [pd.read_parquet(p) for p in paths.values() if Path(p).is_file()]
    if not tables:
        return
    tracker = Tracker(backends_of(cfg.training), run_dir / "metrics",
                      run_name=f"{cfg.name}-probes", project=cfg.training.wandb_project)
    try:
        log_probe_summary(tracker, pd.concat(tables, ignore_index=True))
    finally:
        tracker.close()


@dataclass(frozen=True)
class FiguresOutput:
    """What :func:`figures` wrote: figure files, the claims table and the report path."""

    paths: list[Path]
    claims: pd.DataFrame
    report: Path | None


def figures(
    run_dir: Path,
    fig_cfg: FiguresConfig | None = None,
    *,
    olmo_loss: Path | None = None,
    extra_runs: Iterable[Path] = (),
    report: bool = True,
) -> FiguresOutput:
    """Figures, claims (``RUN/claims.csv``) and ``RUN/report.html`` from one config.

    The one path for ``hierlab run`` and ``hierlab figures``, so both judge the claims
    with the same thresholds. The tables are read once and shared by figures and claims.

    Args:
        run_dir: the run directory.
        fig_cfg: the figures section, claim thresholds included (None: the ``figures``
            section of ``RUN/config.yml``).
        olmo_loss: a CSV of OLMo-1B's training loss for Fig. 2's third panel.
        extra_runs: other run directories whose models are drawn as external panels.
        report: also write ``RUN/report.html``.

    Returns:
        The figure files, the claims table and the report path (None without a report).
    """
    from hierlab.figures import evaluate_claims, load_run_data, make_figures
    from hierlab.figures.api import run_figures_config

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    fig_cfg = fig_cfg if fig_cfg is not None else run_figures_config(run_dir)
    extras = list(extra_runs)
    data = load_run_data(run_dir, extra_runs=extras, olmo_loss=olmo_loss)
    paths = make_figures(run_dir, fig_cfg, olmo_loss, extras, data=data)
    claims = evaluate_claims(run_dir, fig_cfg, extras, data=data)
    path = None
    if report:
        from hierlab.figures.report import write_report

        path = write_report(
            run_dir, paths, claims, timings={"figures": time.perf_counter() - t0}
        )
    return FiguresOutput(paths, claims, path)


def _stage_figures(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    return figures(run_dir, cfg.figures, olmo_loss=opts.get("olmo_loss")).report


_RUNNERS: dict[str, Callable[[ExperimentConfig, Path, dict[str, Any]], Any]] = {
    "corpus": _stage_corpus,
    "train": _stage_train,
    "probe": _stage_probe,
    "figures": _stage_figures,
}


@writes("run_dir")  # one writer per run folder, across its stages (hierlab.lock)
@preempt.stoppable  # SIGTERM/SIGINT: each stage stops at its safe point; none starts after
def run(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    stages: tuple[str, ...] = STAGES,
    workers: int = 1,
    device: str | None = None,
    olmo_loss: Path | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Path:
    """Run the study's stages in order, each skipping the work it finds complete.

    Holds the run folder's writer lock throughout, and stops between stages (or at a
    stage's own safe point) on SIGTERM/SIGINT.

    Args:
        cfg: the experiment config; written to ``RUN/config.yml``.
        run_dir: the run directory.
        stages: which stages to run, a subsequence of
            :data:`~hierlab.contracts.STAGES` in order.
        workers: local processes for the corpus stage.
        device: ``cpu``, ``cuda`` or ``cuda:N`` for training and probing (None: the
            config's).
        olmo_loss: a CSV of OLMo-1B's training loss for Fig. 2.
        on_stage: called with each stage's name as it starts (progress display).

    Returns:
        The report path when the last stage is ``figures``, else the run directory.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        run_dir / "config.yml",
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode(),
    )
    timings_path = run_dir / "timings.json"
    timings: dict[str, float] = (
        json.loads(timings_path.read_text()) if timings_path.exists() else {}
    )
    opts = {"workers": workers, "device": device, "olmo_loss": olmo_loss}
    result: Any = None
    for stage in stages:
        preempt.stop(f"run: before stage {stage} (earlier stages are complete)")
        if on_stage is not None:
            on_stage(stage)
        t0 = time.perf_counter()
        result = _RUNNERS[stage](cfg, run_dir, opts)
        timings[stage] = round(time.perf_counter() - t0, 2)
        atomic_write_json(timings_path, timings)
        log.info("stage %s done in %.1f s", stage, timings[stage])
    return Path(result) if stages and stages[-1] == "figures" else run_dir
