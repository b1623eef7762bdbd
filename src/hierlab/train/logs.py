"""Metric logging of a training run: ``loss.csv``, ``eval.csv`` and the trackers.

The CSVs are append-only and flushed per row, so a kill loses at most the row being
written; on resume they are cut back to the resumed checkpoint's step (which also drops a
torn last line), so the logged curve of a resumed run equals the uninterrupted one.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hierlab.io import atomic_write_text, disk_full_error, is_disk_full
from hierlab.train.config import TrainingConfig
from hierlab.train.tracking import Tracker, backends_of

__all__ = ["EVAL_COLUMNS", "LOSS_COLUMNS", "RunLog", "fmt", "truncate_csv"]

LOSS_COLUMNS = ["step", "tokens_seen", "train_loss", "lr", "grad_norm", "tokens_per_s"]
EVAL_COLUMNS = ["step", "tokens_seen", "test_loss"]


def fmt(value: float | None) -> str:
    """A float as written to the CSVs, so that a resumed run's rows equal the original's.

    Args:
        value: the number (None: not measured).

    Returns:
        Its full-precision ``repr``, or an empty string for None.
    """
    return "" if value is None else repr(float(value))


def truncate_csv(path: Path, columns: list[str], last_step: int) -> None:
    """Cut a log CSV back to a step, rewritten atomically, before a resumed run appends.

    Args:
        path: the CSV (missing: written with the header only).
        columns: its header; a row with another number of fields is torn and dropped.
        last_step: the last step whose rows are kept (-1: none).
    """
    rows: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) != len(columns):
                continue
            try:
                step = int(parts[0])
            except ValueError:
                continue
            if step <= last_step:
                rows.append(line)
    atomic_write_text(path, "\n".join([",".join(columns), *rows]) + "\n")


class _CsvLog:
    """An append-only CSV, flushed per row so a kill loses at most the row being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._fh, lineterminator="\n")

    def row(self, values: list[Any]) -> None:
        try:
            self._writer.writerow(values)
            self._fh.flush()
        except OSError as err:  # a torn last row is dropped on resume (truncate_csv)
            if is_disk_full(err, self.path.parent):
                raise disk_full_error(self.path) from None
            raise

    def close(self) -> None:
        self._fh.close()


class RunLog:
    """The run's logs (rank 0 only): the two CSVs plus the configured trackers."""

    def __init__(
        self, out_dir: Path, name: str, train_cfg: TrainingConfig, resumed_at: int | None
    ) -> None:
        """Open the logs, cut back to the resumed step.

        Args:
            out_dir: the model's folder.
            name: the run's name in the trackers.
            train_cfg: the training section (trackers, W&B project; logged as the config).
            resumed_at: the step a resumed run continues from (None: a fresh run).
        """
        keep = -1 if resumed_at is None else resumed_at  # rows of the resumed checkpoint stay
        truncate_csv(out_dir / "loss.csv", LOSS_COLUMNS, keep)
        truncate_csv(out_dir / "eval.csv", EVAL_COLUMNS, keep)
        self._loss = _CsvLog(out_dir / "loss.csv")
        self._eval = _CsvLog(out_dir / "eval.csv")
        self._tracker = Tracker(
            backends_of(train_cfg), out_dir, run_name=name, resume=resumed_at is not None,
            project=train_cfg.wandb_project, config=train_cfg.model_dump(mode="json"),
        )

    def train(
        self, step: int, tokens: int, loss: float, learning_rate: float, grad_norm: float,
        tokens_per_s: float,
    ) -> None:
        """Log one training row to ``loss.csv`` and the trackers.

        Args:
            step: the optimizer steps taken.
            tokens: the tokens seen.
            loss: the mean training loss since the last log step.
            learning_rate: the learning rate of the last step.
            grad_norm: the gradient norm before clipping.
            tokens_per_s: the training throughput since the last log step.
        """
        self._loss.row([step, tokens, fmt(loss), fmt(learning_rate), fmt(grad_norm),
                        f"{tokens_per_s:.1f}"])
        self._tracker.log({"train/loss": loss, "train/lr": learning_rate,
                           "train/tokens_per_s": tokens_per_s, "train/grad_norm": grad_norm},
                          step)

    def eval(self, step: int, tokens: int, test_loss: float | None) -> None:
        """Log one checkpoint's test loss to ``eval.csv`` and the trackers.

        Args:
            step: the checkpoint's step.
            tokens: the tokens seen.
            test_loss: the test loss (None: the corpus has no test split).
        """
        self._eval.row([step, tokens, fmt(test_loss)])
        self._tracker.log({"eval/loss": test_loss}, step)

    def close(self) -> None:
        """Close the CSVs and finish the tracker runs."""
        self._loss.close()
        self._eval.close()
        self._tracker.close()
