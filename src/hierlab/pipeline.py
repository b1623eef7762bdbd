"""``hierlab run``: corpus -> train -> probe -> figures -> report, resumably.

Each stage reads only the artefacts of the stage before it and skips work whose outputs
are complete (corpus manifests, final checkpoints, probe part files), so re-running after
a kill continues where it stopped, and re-running a finished run only redraws figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hierlab.config import ExperimentConfig
from hierlab.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

STAGES = ("corpus", "train", "probe", "figures")


def _stage_corpus(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    from hierlab.corpus.generate import generate_corpora

    return generate_corpora(cfg, run_dir, workers=opts.get("workers", 1))


def _stage_train(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    from hierlab.train.loop import train_corpora

    return train_corpora(cfg, run_dir, device=opts.get("device"))


def _stage_probe(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    from hierlab.probes.runner import run_probes

    return run_probes(cfg, run_dir, device=opts.get("device"))


def _stage_figures(cfg: ExperimentConfig, run_dir: Path, opts: dict[str, Any]) -> Any:
    from hierlab.figures import make_figures
    from hierlab.figures.report import write_report

    make_figures(run_dir, cfg.figures, olmo_loss=opts.get("olmo_loss"))
    return write_report(run_dir)


_RUNNERS: dict[str, Callable[[ExperimentConfig, Path, dict[str, Any]], Any]] = {
    "corpus": _stage_corpus,
    "train": _stage_train,
    "probe": _stage_probe,
    "figures": _stage_figures,
}


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
    """Run the study's stages in order; return the report path."""
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
        if on_stage is not None:
            on_stage(stage)
        t0 = time.perf_counter()
        result = _RUNNERS[stage](cfg, run_dir, opts)
        timings[stage] = round(time.perf_counter() - t0, 2)
        atomic_write_json(timings_path, timings)
        log.info("stage %s done in %.1f s", stage, timings[stage])
    return Path(result) if stages and stages[-1] == "figures" else run_dir
