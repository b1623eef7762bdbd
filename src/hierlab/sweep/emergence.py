"""The sweep's emergence statistics: t* of every armed run, per-arm statistics, Kaplan-Meier.

For each run that names an ``arm`` and a ``seed`` it reads the checkpoints' mechanism label
(``metrics/mechanism.parquet``, ``label_model``) and two scores the field uses instead (the
study's offset-n induction score and standard prefix matching, ``metrics/induction.parquet``)
and finds t* under each criterion (:func:`hierlab.sweep.survival.emergence_time`). It writes
``emergence.csv`` (one row per run), ``emergence_stats.csv`` (one row per criterion and arm)
and ``kaplan_meier.png/.csv``. Runs without metrics yet are listed and left out of the stats.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierlab.contracts import MECHANISM_LABELS
from hierlab.io import atomic_write_bytes
from hierlab.sweep.execute import run_dir_of
from hierlab.sweep.spec import EmergenceSettings, PlannedRun
from hierlab.sweep.survival import emergence_statistics, emergence_time, kaplan_meier

log = logging.getLogger(__name__)

__all__ = ["CRITERIA", "checkpoint_series", "criterion_names", "emergence_table",
           "write_emergence"]

CRITERIA: tuple[str, ...] = ("label", "reference_score", "prefix_matching")
"""The t* criteria, in the order of the table columns and the figure's panels."""

# criterion -> (probe table, metric, variant, k)
_SCORES: dict[str, tuple[str, str, str, int | None]] = {
    "reference_score": ("induction", "score", "reference", 1),
    "prefix_matching": ("induction", "prefix_matching_max", "standard", None),
}
_COLUMNS = ["source", "model", "step", "tokens_seen", "variant", "metric", "k", "value"]


def criterion_names(settings: EmergenceSettings) -> dict[str, str]:
    """What each criterion means, in words (the stats table's and figure's text).

    Args:
        settings: the sweep's ``emergence`` section (its label and thresholds).

    Returns:
        criterion -> its description.
    """
    return {
        "label": "label stays " + (f"'{settings.label}'" if isinstance(settings.label, str)
                                   else " or ".join(f"'{x}'" for x in settings.label)),
        "reference_score": f"reference score (k=1) >= {settings.reference_score_threshold:g}",
        "prefix_matching": f"prefix matching >= {settings.prefix_matching_threshold:g}",
    }


def _rows(run_dir: Path, probe: str, model: str, metric: str, variant: str,
          k: int | None) -> pd.DataFrame:
    """One metric's rows of one model (empty when the table is not written yet)."""
    path = run_dir / "metrics" / f"{probe}.parquet"
    if not path.is_file():
        return pd.DataFrame(columns=_COLUMNS)
    d = pd.read_parquet(path, columns=_COLUMNS)
    d = d[(d["model"] == model) & (d["metric"] == metric) & (d["variant"] == variant)
          & (d["source"] == "run")]
    if k is not None and d["k"].notna().any():
        d = d[d["k"] == k]
    return d[d["tokens_seen"].notna()]


def _per_checkpoint(d: pd.DataFrame) -> pd.Series:
    """The best head's value per checkpoint, indexed by tokens_seen."""
    g = d.groupby("step").agg(tokens=("tokens_seen", "max"), value=("value", "max"))
    return pd.Series(g["value"].to_numpy(), index=g["tokens"].to_numpy(dtype=float))


def _label_name(code: float) -> str:
    i = int(round(code))
    return MECHANISM_LABELS[i] if 0 <= i < len(MECHANISM_LABELS) else f"code {i}"


def checkpoint_series(run_dir: Path, model: str, settings: EmergenceSettings
                      ) -> dict[str, pd.Series]:
    """Each criterion's per-checkpoint series of one model, indexed by tokens_seen.

    Args:
        run_dir: the run directory (``metrics/*.parquet`` inside).
        model: the model (corpus name) to read.
        settings: the sweep's emergence settings (thresholds).

    Returns:
        ``label``: label names (codes mapped through :data:`MECHANISM_LABELS`, so the codes
        never matter); ``reference_score`` and ``prefix_matching``: booleans, the best
        head's score at or above its threshold. Empty series where a table is missing.
    """
    lab = _rows(run_dir, "mechanism", model, "label_model", "standard", None)
    labels = _per_checkpoint(lab).map(_label_name) if len(lab) else pd.Series(dtype=object)
    out: dict[str, pd.Series] = {"label": labels}
    thresholds = {"reference_score": settings.reference_score_threshold,
                  "prefix_matching": settings.prefix_matching_threshold}
    for name, (probe, metric, variant, k) in _SCORES.items():
        d = _rows(run_dir, probe, model, metric, variant, k)
        s = _per_checkpoint(d) if len(d) else pd.Series(dtype=float)
        out[name] = (s >= thresholds[name]).astype(bool)
    return out


def emergence_table(runs: list[PlannedRun], out: Path, settings: EmergenceSettings
                    ) -> pd.DataFrame:
    """One row per armed run: arm, seed, budget, the final label and t* under each criterion.

    Args:
        runs: the sweep's runs (those without an arm are skipped).
        out: the sweep folder.
        settings: the sweep's emergence settings.

    Returns:
        Columns ``run, model, arm, seed, n_checkpoints, budget, final_label, t_star,
        observed`` (the label criterion), then ``t_star_<c>, observed_<c>`` for the other
        criteria. A run without metrics has ``n_checkpoints`` 0 and NaN times.
    """
    rows: list[dict[str, Any]] = []
    for run in runs:
        if run.arm is None:
            continue
        model = settings.model or next(iter(run.config.corpora))
        series = checkpoint_series(run_dir_of(out, run.name), model, settings)
        lab = series["label"]
        row: dict[str, Any] = {
            "run": run.name, "model": model, "arm": run.arm, "seed": run.seed,
            "n_checkpoints": len(lab),
            "budget": float(lab.index.max()) if len(lab) else np.nan,
            "final_label": lab.sort_index().iloc[-1] if len(lab) else None,
        }
        for crit in CRITERIA:
            t, seen = emergence_time(series[crit], settings.label)
            suffix = "" if crit == "label" else f"_{crit}"
            row[f"t_star{suffix}"], row[f"observed{suffix}"] = t, seen
        rows.append(row)
    return pd.DataFrame(rows)


def _times(table: pd.DataFrame, crit: str) -> pd.DataFrame:
    """The criterion's (arm, seed, t_star, observed) over the runs that have that series."""
    suffix = "" if crit == "label" else f"_{crit}"
    t = table[["arm", "seed", f"t_star{suffix}", f"observed{suffix}"]].copy()
    t.columns = ["arm", "seed", "t_star", "observed"]
    return t[np.isfinite(pd.to_numeric(t["t_star"], errors="coerce"))].reset_index(drop=True)


def _with_pair_ratios(table: pd.DataFrame, control: str) -> pd.DataFrame:
    """Each run's log(t*/t*_control) for its seed (label criterion) and what it is."""
    from hierlab.sweep.survival import paired_log_ratios

    table = table.copy()
    table["log_ratio"], table["log_ratio_kind"] = np.nan, None
    times = _times(table, "label")
    if not len(times):
        return table
    pairs = paired_log_ratios(times, control).set_index(["arm", "seed"])
    for i, r in table.iterrows():
        if r["arm"] == control:
            table.at[i, "log_ratio_kind"] = "control"
        elif (r["arm"], r["seed"]) in pairs.index:
            p = pairs.loc[(r["arm"], r["seed"])]
            table.at[i, "log_ratio"] = p["log_ratio_bound"]
            table.at[i, "log_ratio_kind"] = p["bound"]
    return table


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_emergence(runs: list[PlannedRun], out: str | Path, settings: EmergenceSettings
                    ) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Write ``emergence.csv``, ``emergence_stats.csv`` and ``kaplan_meier.png/.csv``.

    Args:
        runs: the sweep's runs; nothing is written when none names an arm.
        out: the sweep folder.
        settings: the sweep's emergence settings.

    Returns:
        ``(per-run table, per-criterion-and-arm stats)``, or None without armed runs. The
        stats and figure cover the runs with metrics so far (a sweep summarised while it
        runs shows partial results); they are skipped while no run has any.
    """
    from hierlab.sweep.survival_figure import kaplan_meier_figure

    out = Path(out)
    table = emergence_table(runs, out, settings)
    if not len(table):
        return None
    table = _with_pair_ratios(table, settings.control)
    _write_csv(table, out / "emergence.csv")
    names = criterion_names(settings)
    stats, curves = [], []
    for crit in CRITERIA:
        times = _times(table, crit)
        if not len(times):
            continue
        s = emergence_statistics(times, settings.control, settings.statistic,
                                 settings.bootstrap_resamples, settings.confidence,
                                 settings.seed)
        stats.append(s.assign(criterion=crit, definition=names[crit]))
        curves.append(kaplan_meier(times, settings.confidence).assign(criterion=crit))
    missing = table.loc[table["n_checkpoints"] == 0, "run"].tolist()
    if missing:
        log.info("emergence: %d run(s) without metrics yet: %s", len(missing),
                 ", ".join(missing))
    if not stats:
        return table, pd.DataFrame()
    front = ["criterion", "definition"]
    st = pd.concat(stats, ignore_index=True)
    st = st[front + [c for c in st.columns if c not in front]]
    _write_csv(st, out / "emergence_stats.csv")
    cv = pd.concat(curves, ignore_index=True)
    cv = cv[["criterion"] + [c for c in cv.columns if c != "criterion"]]
    kaplan_meier_figure(cv, st, out, control=settings.control)
    return table, st
