"""``hierlab olmo-loss``: OLMo-1B's training loss from its public W&B project, for Fig. 2.

It does what the reference's broken export script meant to do, with one stated rule for a
step that several runs logged: the latest run wins (why: ``docs/design-pipeline.md``). The
output is a CSV with columns ``step, loss, run`` that ``hierlab figures --olmo-loss`` reads;
``wandb`` is imported only when no API object is given (tests pass a stub).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from hierlab.errors import DataError
from hierlab.io import atomic_write_text

log = logging.getLogger(__name__)

PROJECT = "ai2-llm/OLMo-1B"
RUN_PREFIX = "OLMo"
STEP_KEY = "_step"
LOSS_KEY = "train/CrossEntropyLoss"

__all__ = ["PROJECT", "export_olmo_loss", "fetch_olmo_loss"]


def _api() -> Any:
    try:
        import wandb
    except ImportError:
        raise DataError(
            "olmo-loss needs wandb (pip install 'hierlab[tracking]')"
        ) from None
    return wandb.Api()


def _run_order(runs: list[Any]) -> list[Any]:
    """Oldest first: by ``created_at`` (ISO text sorts by time), then name, else API order."""
    def key(item: tuple[int, Any]) -> tuple[str, str, int]:
        i, r = item
        return (str(getattr(r, "created_at", "") or ""), str(getattr(r, "name", "")), i)

    return [r for _, r in sorted(enumerate(runs), key=key)]


def fetch_olmo_loss(
    api: Any | None = None,
    project: str = PROJECT,
    prefix: str = RUN_PREFIX,
    page_size: int = 10_000,
) -> pd.DataFrame:
    """Read OLMo's loss from W&B: every matching run, concatenated, one row per step.

    On a duplicate step the latest run wins (runs ordered by creation time, then name; the
    API's order when neither is known), and within one run its last row for the step.

    Args:
        api: a ``wandb.Api`` (None: make one; tests pass a stub).
        project: the W&B project.
        prefix: only runs whose name starts with this.
        page_size: rows per ``scan_history`` request.

    Returns:
        Columns step, loss and run (the run the row came from), sorted by step. No
        matching run, or no ``wandb``, is a :class:`~hierlab.errors.DataError`.
    """
    api = api if api is not None else _api()
    runs = _run_order([r for r in api.runs(project) if str(r.name).startswith(prefix)])
    if not runs:
        raise DataError(f"{project}: no runs whose names start with {prefix!r}")
    frames = []
    for order, run in enumerate(runs):
        rows: Iterable[dict[str, Any]] = run.scan_history(
            keys=[STEP_KEY, LOSS_KEY], page_size=page_size
        )
        df = pd.DataFrame.from_records(list(rows), columns=[STEP_KEY, LOSS_KEY])
        df = pd.DataFrame({
            "step": pd.to_numeric(df[STEP_KEY], errors="coerce"),
            "loss": pd.to_numeric(df[LOSS_KEY], errors="coerce"),
        }).dropna()
        df["run"] = str(run.name)
        df["_order"] = order
        df["_row"] = range(len(df))
        frames.append(df)
        log.info("olmo-loss: %s: %d rows", run.name, len(df))
    all_rows = pd.concat(frames, ignore_index=True)
    all_rows = all_rows.sort_values(["step", "_order", "_row"], kind="stable")
    out = all_rows.drop_duplicates("step", keep="last")[["step", "loss", "run"]]
    out["step"] = out["step"].astype("int64")
    return out.reset_index(drop=True)


def export_olmo_loss(
    out: Path | str, api: Any | None = None, project: str = PROJECT, prefix: str = RUN_PREFIX
) -> Path:
    """Fetch OLMo's loss (:func:`fetch_olmo_loss`) and write the CSV atomically.

    Args:
        out: the CSV's path (its folder is created if missing).
        api: a ``wandb.Api`` (None: make one).
        project: the W&B project.
        prefix: only runs whose name starts with this.

    Returns:
        ``out``.
    """
    out = Path(out)
    table = fetch_olmo_loss(api, project, prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False))
    log.info("olmo-loss: %d steps (%d-%d) -> %s", len(table), table["step"].min(),
             table["step"].max(), out)
    return out
