"""Experiment tracking: one logger object for TensorBoard and Weights & Biases.

The training loop creates a :class:`Tracker` once and calls :meth:`Tracker.log` once per
log event; the backends are optional (extra ``tracking``) and off by default
(``training.tracking: []``). Keys are the same in every backend:

=======================  ===================================================
``train/loss``           mean training loss since the last log event
``train/lr``             learning rate
``train/grad_norm``      gradient norm before clipping
``train/tokens_per_s``   training throughput
``eval/loss``            test loss at a checkpoint
``probe/<probe>/...``    probe summaries (:func:`log_probe_summary`)
=======================  ===================================================

TensorBoard writes ``<model dir>/tensorboard/``; W&B honours its own environment
(``WANDB_MODE=offline`` writes ``<model dir>/wandb/offline-run-*`` and needs no account).
Only rank 0 tracks.
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
    """Raise ConfigError now (before any output) if a chosen backend is not installed."""
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
        """Log ``metrics`` (``None`` values are skipped) at training step ``step``."""
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if not values:
            return
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def log_probe_summary(tracker: Tracker, table: Any) -> None:
    """Log a metrics table's per-checkpoint summary, steps ascending (W&B needs that):
    ``probe/<model>/<probe>/<variant>/<metric>`` = the maximum of each metric over
    layers, heads and k at each checkpoint step."""
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
    """``training.tracking`` plus ``tensorboard`` when the older ``training.tensorboard`` is set."""
    out = list(getattr(train_cfg, "tracking", []) or [])
    if getattr(train_cfg, "tensorboard", False) and "tensorboard" not in out:
        out.append("tensorboard")
    return out
