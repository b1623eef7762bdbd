"""``hierlab.load_run(dir)``: one finished run as Python objects, for notebooks.

Only the tables are read on load (pandas, no torch), so a run opens in a moment;
``Run.load_checkpoint`` imports torch and transformers when called. Metrics tables carry
the public schema columns only (docs/probes.md#metrics-tables), in that order. A session:
docs/getting-started.md#from-python.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hierlab.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from hierlab.config import ExperimentConfig
    from hierlab.probes.checkpoints import Checkpoint
    from hierlab.probes.hooks import HookedModel

log = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "source", "model", "step", "tokens_seen", "probe", "variant", "metric", "layer", "head",
    "k", "value", "n_samples", "seed",
)
"""The public columns of ``RUN/metrics/<probe>.parquet`` (``hierlab.probes.runner.SCHEMA``)."""

__all__ = ["METRIC_COLUMNS", "Run", "load_run"]


@dataclass
class Run:
    """A run directory's config, tables and checkpoints (see :func:`load_run`)."""

    path: Path
    config: ExperimentConfig | None
    metrics: dict[str, pd.DataFrame] = field(default_factory=dict)
    losses: dict[str, pd.DataFrame] = field(default_factory=dict)
    evals: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Models trained in this run (``RUN/models/<name>/checkpoints``)."""
        root = self.path / "models"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "checkpoints").is_dir())

    def checkpoints(self, model: str | None = None) -> list[Checkpoint]:
        """The run's checkpoints, for probing or loading one by hand.

        Args:
            model: one model's name (None: every model).

        Returns:
            The checkpoints, sorted by model then step.
        """
        from hierlab.probes.checkpoints import discover_checkpoints

        cks = discover_checkpoints(None, self.path) if self.models else []
        return [c for c in cks if model is None or c.model == model]

    def steps(self, model: str | None = None) -> list[int]:
        """The steps that have a checkpoint, for :meth:`load_checkpoint`.

        Args:
            model: one model's name (None: every model's steps, merged).

        Returns:
            The steps, ascending, each once.
        """
        return sorted({c.step for c in self.checkpoints(model)})

    def load_checkpoint(
        self, step: int, model: str | None = None, device: str = "cpu", dtype: str = "float32"
    ) -> HookedModel:
        """The checkpoint at ``step`` of ``model``, ready for hooks.

        Args:
            step: the checkpoint's step (one of :meth:`steps`).
            model: the model's name; may be omitted when the run trained one model.
            device: where to load it (``cpu``, ``cuda``, ``cuda:N``).
            dtype: the weights' dtype (``float32``, ``bfloat16``, ``float16``).

        Returns:
            A :class:`~hierlab.probes.hooks.HookedModel` in eval mode; the tokenizer (when
            the checkpoint or corpus has one) is on its ``.tokenizer``. An unknown model or
            step is a :class:`~hierlab.errors.DataError` listing the ones there are.
        """
        from hierlab.probes.checkpoints import load_model
        from hierlab.probes.hooks import HookedModel

        models = self.models
        if model is None:
            if len(models) != 1:
                raise DataError(f"{self.path}: name the model (one of {', '.join(models)})")
            model = models[0]
        if model not in models:
            raise DataError(f"{self.path}: no model {model!r} (have {', '.join(models) or '-'})")
        by_step = {c.step: c for c in self.checkpoints(model)}
        if step not in by_step:
            raise DataError(f"{model}: no checkpoint at step {step} (steps: "
                            f"{', '.join(map(str, sorted(by_step)))})")
        ck = by_step[step]
        nn, tok = load_model(ck.path, device=device, dtype=dtype,
                             tokenizer_dir=self.path / "corpus" / model / "tokenizer")
        hm = HookedModel(nn)
        hm.tokenizer = tok  # type: ignore[attr-defined]
        return hm


def _read_config(path: Path) -> ExperimentConfig | None:
    from hierlab.config import load_config

    cfg = path / "config.yml"
    if not cfg.is_file():
        return None
    return load_config(cfg)


def _public(table: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in METRIC_COLUMNS if c in table.columns]
    return table[cols].reset_index(drop=True)


def load_run(path: str | Path) -> Run:
    """Load ``RUN/config.yml``, ``RUN/metrics/*.parquet`` and ``models/<c>/{loss,eval}.csv``.

    A run without some of them loads what it has, so a run still in progress can be read.
    Hidden columns that a future table may carry are dropped from ``metrics``.

    Args:
        path: the run directory.

    Returns:
        The run; a directory that does not exist is a :class:`~hierlab.errors.DataError`.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such run directory")
    metrics = {}
    mdir = path / "metrics"
    if mdir.is_dir():
        for f in sorted(mdir.glob("*.parquet")):
            metrics[f.stem] = _public(pd.read_parquet(f))
    losses, evals = {}, {}
    models = path / "models"
    if models.is_dir():
        for md in sorted(p for p in models.iterdir() if p.is_dir()):
            if (md / "loss.csv").is_file():
                losses[md.name] = pd.read_csv(md / "loss.csv")
            if (md / "eval.csv").is_file():
                evals[md.name] = pd.read_csv(md / "eval.csv")
    return Run(path, _read_config(path), metrics, losses, evals)
