"""Experiment tracking: one logger object for TensorBoard and Weights & Biases.

The training loop creates a :class:`Tracker` once and calls :meth:`Tracker.log` per log
event, with the same keys in every backend, so a dashboard reads alike in both. The backends
are optional (extra ``tracking``) and off by default; only rank 0 tracks. The keys and
where each backend writes: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hierlab.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("tensorboard", "wandb")

__all__ = ["BACKENDS", "Tracker", "backends_of", "check_backends", "log_probe_summary"]


def _import(backend: str) -> Any:
    try:
        if backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter
        import wandb

        return wandb
    except ImportError:
        raise ConfigError(
            f"training.tracking: {backend} needs the 'tracking' extra "
            "(pip install 'hierlab[tracking]')"
        ) from None


def check_backends(backends: Iterable[str]) -> None:
    """Check the chosen backends before any output, so a missing extra fails at once.

    Args:
        backends: backend names (``tensorboard``, ``wandb``).

    Raises:
        ConfigError: a backend is unknown or its package is not installed.
    """
    for b in backends:
        if b not in BACKENDS:
            raise ConfigError(
                f"training.tracking: unknown backend {b!r} (known: tensorboard, wandb)"
            )
        _import(b)


class Tracker:
    """Scalars to every chosen backend; with no backend every call is a no-op."""

    def __init__(
        self,
        backends: Iterable[str],
        out_dir: Path,
        *,
        run_name: str,
        project: str | None = None,
        config: Mapping[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        """Start a tracker run in each chosen backend.

        Args:
            backends: backend names; duplicates are dropped.
            out_dir: the folder the backends write under (``tensorboard/``, ``wandb/``).
            run_name: the run's name in W&B.
            project: the W&B project (default ``hierlab``).
            config: the config W&B records with the run.
            resume: continue a W&B run of the same name (a resumed training run).
        """
        self.backends = list(dict.fromkeys(backends))
        check_backends(self.backends)
        self._tb: Any = None
        self._wandb: Any = None
        out_dir = Path(out_dir)
        if "tensorboard" in self.backends:
            self._tb = _import("tensorboard")(str(out_dir / "tensorboard"))
        if "wandb" in self.backends:
            wandb = _import("wandb")
            out_dir.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb.init(
                project=project or "hierlab",
                name=run_name,
                dir=str(out_dir),
                config=dict(config or {}),
                resume="allow" if resume else None,
            )

    def log(self, metrics: Mapping[str, float | None], step: int) -> None:
        """Log scalars at a training step.

        Args:
            metrics: key -> value; ``None`` values are skipped.
            step: the training step.
        """
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if not values:
            return
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        """Flush and finish every backend's run."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def log_probe_summary(tracker: Tracker, table: Any) -> None:
    """Log a metrics table's per-checkpoint summary, steps ascending (W&B needs that).

    Each key is ``probe/<model>/<probe>/<variant>/<metric>``, the maximum of that metric
    over layers, heads and k at each checkpoint step.

    Args:
        tracker: the tracker.
        table: a probe metrics table (pandas); None or empty logs nothing.
    """
    if table is None or not len(table):
        return
    keys = ["step", "model", "probe", "variant", "metric"]
    g = table.groupby(keys)["value"].max().reset_index().sort_values("step")
    for step, rows in g.groupby("step", sort=True):
        tracker.log(
            {f"probe/{r.model}/{r.probe}/{r.variant}/{r.metric}": r.value
             for r in rows.itertuples()},
            int(step),
        )


def backends_of(train_cfg: Any) -> list[str]:
    """The backends a training section asks for, old and new spelling alike.

    Args:
        train_cfg: the training section.

    Returns:
        ``training.tracking``, plus ``tensorboard`` when the older ``training.tensorboard``
        is set.
    """
    out = list(getattr(train_cfg, "tracking", []) or [])
    if getattr(train_cfg, "tensorboard", False) and "tensorboard" not in out:
        out.append("tensorboard")
    return out
