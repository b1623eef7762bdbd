"""Load what the figures need: merged metrics tables, training logs and panel assignment.

Figures read only tables, never models, so a figure is re-drawn in seconds. This module is
the one place that knows the run-directory layout: every figure and claim asks
:class:`RunData` for "the PCFG model's rows of probe P, variant V" and never touches a
path. Which model goes to which panel: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hierlab.contracts import OPTIONAL_METRIC_COLUMNS, REQUIRED_METRIC_COLUMNS
from hierlab.errors import DataError

log = logging.getLogger(__name__)

PANEL_KINDS: tuple[str, ...] = ("ngram", "pcfg", "external")
#: a copy design's model: Fig. 3 and the claims show it beside the study's panels when the
#: run has one (a control of ours, not a panel of the study)
COPY_KIND = "copy"
KIND_TITLES = {"ngram": "N-gram", "pcfg": "PCFG", "copy": "Copy design",
               "external": "external model"}
OLMO_STEP_COLUMNS = ("step", "_step")
OLMO_LOSS_COLUMNS = ("loss", "train_loss", "train/CrossEntropyLoss")


@dataclass(frozen=True)
class ModelRef:
    """One model seen in the tables: where it comes from and which panel it belongs to.

    Attributes:
        key: unique across the merged run dirs: ``<run dir>::<model>`` for a trained model,
            ``<source>::<model>`` otherwise.
        source: ``run`` for a trained model, else the checkpoint source (``hub:...``).
        model: the model's name.
        kind: its panel, ``ngram``, ``pcfg``, ``copy``, ``external`` or ``unknown``.
        run_dir: the run dir it was read from.
        info: its ``run.json`` (kind, loss floors, ...), empty for an external model.
    """

    key: str
    source: str
    model: str
    kind: str  # "ngram" | "pcfg" | "external" | "unknown"
    run_dir: Path | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """Panel title: the kind for our own models (plus the name if it differs)."""
        if self.kind == "external":
            return self.model
        base = KIND_TITLES.get(self.kind, self.kind)
        return base if self.model == self.kind else f"{base} ({self.model})"

    @property
    def loss_floors(self) -> dict[str, float]:
        """The corpus's loss floors from ``run.json`` (empty for an external model)."""
        floors = self.info.get("loss_floors") or {}
        return {str(k): float(v) for k, v in floors.items() if v is not None}


@dataclass
class RunData:
    """Everything the figures and claims read, merged over the main and extra run dirs."""

    run_dir: Path
    metrics: pd.DataFrame
    models: dict[str, ModelRef]
    losses: dict[str, pd.DataFrame] = field(default_factory=dict)
    evals: dict[str, pd.DataFrame] = field(default_factory=dict)
    olmo_loss: pd.DataFrame | None = None
    _split: dict[tuple[str, str], pd.DataFrame] | None = field(default=None, repr=False)
    _panels: dict[str, ModelRef | None] | None = field(default=None, repr=False)

    # -- panels ---------------------------------------------------------------------------
    def panel(self, kind: str) -> ModelRef | None:
        """The model drawn in the panel of ``kind``.

        Preference: a model of the main run dir, then the model named like its kind, then
        the one with the most metric rows; others of the same kind are logged and skipped.

        Args:
            kind: ``ngram``, ``pcfg`` or ``external``.

        Returns:
            The model, or None (that panel says "no data").
        """
        if self._panels is None:
            self._panels = {k: self._choose(k) for k in (*PANEL_KINDS, COPY_KIND)}
        return self._panels.get(kind)

    def _choose(self, kind: str) -> ModelRef | None:
        cands = [m for m in self.models.values() if m.kind == kind]
        if not cands:
            return None
        counts = self.metrics["_key"].value_counts() if len(self.metrics) else pd.Series()
        main = str(self.run_dir)

        def rank(m: ModelRef) -> tuple:
            in_main = m.run_dir is not None and str(m.run_dir) == main
            return (not in_main, m.model != kind, -int(counts.get(m.key, 0)), m.model)

        cands.sort(key=rank)
        if len(cands) > 1:
            log.info(
                "%s panel shows %s; also present: %s",
                kind,
                cands[0].model,
                ", ".join(m.model for m in cands[1:]),
            )
        return cands[0]

    def figure_panels(self, kinds: tuple[str, ...] = PANEL_KINDS) -> list[str]:
        """The panels a figure draws: ``kinds``, with the copy design's panel after the
        PCFG's when the run has a copy-design model.

        Args:
            kinds: the study's panels that the figure draws.

        Returns:
            The panel kinds, left to right.
        """
        out = list(kinds)
        if self.panel(COPY_KIND) is not None:
            out.insert(out.index("pcfg") + 1 if "pcfg" in out else len(out), COPY_KIND)
        return out

    def title(self, kind: str) -> str:
        """The title of a panel.

        Args:
            kind: ``ngram``, ``pcfg`` or ``external``.

        Returns:
            Its model's title, or the kind's name when it has no model.
        """
        m = self.panel(kind)
        return KIND_TITLES.get(kind, kind) if m is None else m.title

    # -- metric rows ----------------------------------------------------------------------
    def rows(
        self,
        model: ModelRef | None,
        probe: str,
        variant: str,
        metric: str | None = None,
        prefix: str | None = None,
    ) -> pd.DataFrame:
        """One model's metric rows, so that no figure filters the merged table itself.

        Args:
            model: the model (None: no rows).
            probe: the probe's name.
            variant: ``reference`` or ``standard``.
            metric: only this metric.
            prefix: only metrics whose name starts with this (``fv_accuracy:``).

        Returns:
            The rows (an empty frame with the same columns when there are none).
        """
        if model is None or not len(self.metrics):
            return self.metrics.iloc[0:0]
        if self._split is None:
            self._split = {
                (str(p), str(v)): g for (p, v), g in self.metrics.groupby(["probe", "variant"])
            }
        df = self._split.get((probe, variant))
        if df is None:
            return self.metrics.iloc[0:0]
        df = df[df["_key"] == model.key]
        if metric is not None:
            df = df[df["metric"] == metric]
        if prefix is not None:
            df = df[df["metric"].str.startswith(prefix)]
        return df

    def hydra_grid(self, model: ModelRef | None, variant: str, standard_metric: str
                   ) -> pd.DataFrame:
        """Hydra values per (step, layer), averaged over duplicates.

        Args:
            model: the model.
            variant: ``reference`` (the ``drop`` at k = 1, what the study plotted) or
                ``standard``.
            standard_metric: the standard variant's metric to read.

        Returns:
            Columns step, layer, value.
        """
        if variant == "reference":
            df = self.rows(model, "hydra", "reference", "drop")
            df = df[df["k"] == 1]
        else:
            df = self.rows(model, "hydra", "standard", standard_metric)
        if not len(df):
            return pd.DataFrame(columns=["step", "layer", "value"])
        return df.groupby(["step", "layer"])["value"].mean().reset_index()

    # -- construction from in-memory tables (tests, notebooks) ---------------------------
    @classmethod
    def from_tables(
        cls,
        metrics: pd.DataFrame | None = None,
        kinds: Mapping[str, str] | None = None,
        losses: Mapping[str, pd.DataFrame] | None = None,
        evals: Mapping[str, pd.DataFrame] | None = None,
        run_json: Mapping[str, Mapping[str, Any]] | None = None,
        olmo_loss: pd.DataFrame | None = None,
        run_dir: Path | str = ".",
    ) -> RunData:
        """Build from in-memory tables keyed by model name (tests, notebooks).

        Args:
            metrics: a metrics table (the public schema columns).
            kinds: run model name -> ``pcfg`` or ``ngram``.
            losses: model name -> its ``loss.csv`` table.
            evals: model name -> its ``eval.csv`` table.
            run_json: model name -> its ``run.json`` (its ``kind`` fills ``kinds``).
            olmo_loss: an external loss curve for Fig. 2's third panel.
            run_dir: the run dir the models are taken to belong to.

        Returns:
            The run's data, as :func:`load_run_data` would give it.
        """
        run_dir = Path(run_dir).resolve()
        kinds = dict(kinds or {})
        run_json = {k: dict(v) for k, v in (run_json or {}).items()}
        for name, info in run_json.items():
            kinds.setdefault(name, str(info.get("kind", "")))
        frames = [] if metrics is None else [_normalise_metrics(metrics, "<table>")]
        merged = _merge(frames, [run_dir])
        models: dict[str, ModelRef] = {}
        names = set(kinds) | set(losses or {}) | set(evals or {})
        for name in sorted(names):
            info = run_json.get(name, {"kind": kinds.get(name)})
            ref = _run_model(run_dir, name, info)
            models[ref.key] = ref
        for ref in _models_in_metrics(merged, {run_dir: run_json}):
            models.setdefault(ref.key, ref)
        key = {m.model: m.key for m in models.values() if m.source == "run"}
        return cls(
            run_dir=run_dir,
            metrics=merged,
            models=models,
            losses={key[n]: _check_loss(df, "train_loss", n) for n, df in (losses or {}).items()},
            evals={key[n]: _check_loss(df, "test_loss", n) for n, df in (evals or {}).items()},
            olmo_loss=olmo_loss,
        )


# --------------------------------------------------------------------------------------------
def load_run_data(
    run_dir: Path | str,
    extra_runs: Iterable[Path | str] = (),
    olmo_loss: Path | str | None = None,
) -> RunData:
    """Read a run dir (plus extra run dirs merged in) into :class:`RunData`.

    Args:
        run_dir: the run dir.
        extra_runs: other run dirs whose models are merged in (their external models fill
            the third panel).
        olmo_loss: a CSV of an external loss curve (:func:`read_olmo_loss`).

    Returns:
        The merged data. A missing run dir, an unreadable table, or nothing at all to draw
        (no metrics table and no training log) is a :class:`~hierlab.errors.DataError`
        naming the path.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run directory")
    run_dir = run_dir.resolve()
    dirs = [run_dir]
    for extra in extra_runs:
        p = Path(extra)
        if not p.is_dir():
            raise DataError(f"{p}: no such run directory (given as an extra run)")
        if p.resolve() not in dirs:
            dirs.append(p.resolve())

    frames: list[pd.DataFrame] = []
    owners: list[Path] = []
    run_jsons: dict[Path, dict[str, dict[str, Any]]] = {}
    models: dict[str, ModelRef] = {}
    losses: dict[str, pd.DataFrame] = {}
    evals: dict[str, pd.DataFrame] = {}
    for rd in dirs:
        for path in sorted((rd / "metrics").glob("*.parquet")):
            frames.append(_read_metrics(path))
            owners.append(rd)
        run_jsons[rd] = {}
        for mdir in sorted(p for p in (rd / "models").glob("*") if p.is_dir()):
            info = _read_json(mdir / "run.json")
            run_jsons[rd][mdir.name] = info
            if not info and not (mdir / "loss.csv").exists():
                continue
            ref = _run_model(rd, mdir.name, info)
            models[ref.key] = ref
            if (mdir / "loss.csv").exists():
                losses[ref.key] = _read_csv(mdir / "loss.csv", "train_loss")
            if (mdir / "eval.csv").exists():
                evals[ref.key] = _read_csv(mdir / "eval.csv", "test_loss")

    merged = _merge(frames, owners)
    for ref in _models_in_metrics(merged, run_jsons):
        models.setdefault(ref.key, ref)
    if not len(merged) and not losses and olmo_loss is None:
        raise DataError(
            f"{run_dir}: nothing to draw (no metrics/*.parquet and no models/*/loss.csv)"
        )
    for ref in models.values():
        if ref.kind == "unknown":
            log.warning("%s: unknown model kind (no run.json 'kind'); not drawn", ref.key)
    return RunData(
        run_dir=run_dir,
        metrics=merged,
        models=models,
        losses=losses,
        evals=evals,
        olmo_loss=read_olmo_loss(olmo_loss) if olmo_loss is not None else None,
    )


def read_olmo_loss(path: Path | str) -> pd.DataFrame:
    """Read an external loss curve: a CSV with step and loss columns.

    W&B exports (``_step``, ``train/CrossEntropyLoss``) are accepted too; rows are sorted by
    step (stable) and de-duplicated on step, as the reference did.

    Args:
        path: the CSV.

    Returns:
        Columns step and loss; an unreadable file or missing columns is a
        :class:`~hierlab.errors.DataError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such loss CSV")
    try:
        df = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's file
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    step = next((c for c in OLMO_STEP_COLUMNS if c in df.columns), None)
    loss = next((c for c in OLMO_LOSS_COLUMNS if c in df.columns), None)
    if step is None or loss is None:
        raise DataError(f"{path}: needs 'step' and 'loss' columns (found {list(df.columns)})")
    out = pd.DataFrame(
        {
            "step": pd.to_numeric(df[step], errors="coerce"),
            "loss": pd.to_numeric(df[loss], errors="coerce"),
        }
    ).dropna()
    out = out.sort_values("step", kind="stable").drop_duplicates("step", keep="first")
    out["step"] = out["step"].astype("int64")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def _read_csv(path: Path, value_col: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    return _check_loss(df, value_col, str(path))


def _check_loss(df: pd.DataFrame, value_col: str, where: str) -> pd.DataFrame:
    missing = [c for c in ("step", value_col) if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
    df = df.copy()
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df[value_col] = pd.to_numeric(df[value_col], errors="coerce")
    return df.dropna(subset=["step", value_col]).sort_values("step", kind="stable")


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: not a readable Parquet table ({err})") from None
    return _normalise_metrics(df, str(path))


def _normalise_metrics(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: metrics table lacks column(s) {', '.join(missing)}")
    df = df.copy()
    for col in OPTIONAL_METRIC_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("source", "model", "probe", "variant", "metric"):
        df[col] = df[col].astype(str)
    df["step"] = pd.to_numeric(df["step"], errors="coerce").astype("int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    return df


def _merge(frames: Sequence[pd.DataFrame], owners: Sequence[Path]) -> pd.DataFrame:
    """Concatenate tables, tagging each row with its run dir and model key."""
    cols = [*REQUIRED_METRIC_COLUMNS, *OPTIONAL_METRIC_COLUMNS, "_run", "_key"]
    parts = []
    for df, rd in zip(frames, owners, strict=False):
        df = df.copy()
        df["_run"] = str(rd)
        is_run = df["source"] == "run"
        df["_key"] = df["source"] + "::" + df["model"]
        df.loc[is_run, "_key"] = str(rd) + "::" + df.loc[is_run, "model"]
        parts.append(df)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    return pd.concat(parts, ignore_index=True)


def _guess_kind(name: str) -> str:
    low = name.lower()
    if "ngram" in low or "n-gram" in low:
        return "ngram"
    if "copy" in low:
        return COPY_KIND
    if "pcfg" in low:
        return "pcfg"
    return "unknown"


def _run_model(rd: Path, name: str, info: Mapping[str, Any]) -> ModelRef:
    kind = str(info.get("kind") or "")
    if kind not in ("ngram", "pcfg", COPY_KIND):
        kind = "unknown" if kind else _guess_kind(name)
    return ModelRef(
        key=f"{rd}::{name}", source="run", model=name, kind=kind, run_dir=rd, info=dict(info)
    )


def _models_in_metrics(
    merged: pd.DataFrame, run_jsons: Mapping[Path, Mapping[str, Mapping[str, Any]]]
) -> list[ModelRef]:
    refs = []
    if not len(merged):
        return refs
    seen = merged[["_key", "_run", "source", "model"]].drop_duplicates("_key")
    for key, run, source, model in zip(
        seen["_key"], seen["_run"], seen["source"], seen["model"], strict=True
    ):
        rd = Path(run)
        if source == "run":
            info = run_jsons.get(rd, {}).get(model, {})
            refs.append(_run_model(rd, model, info))
        else:
            refs.append(ModelRef(key=key, source=source, model=model, kind="external"))
    return refs
