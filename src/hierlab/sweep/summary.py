"""The sweep's summary: one row per (run, model) and the "which latent structure grows
which mechanism" heatmap.

Everything is read from the ordinary run directories (``models/<c>/eval.csv`` and
``run.json``, ``metrics/*.parquet``, ``timings.json``) through the figures' loaders and
claims helpers, so the summary measures exactly what the run's own report measures.
Absent metrics are NaN.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierlab.io import atomic_write_bytes
from hierlab.sweep.execute import RunResult, run_dir_of
from hierlab.sweep.spec import EmergenceSettings, PlannedRun

log = logging.getLogger(__name__)

NAN = float("nan")

# column stem -> (metric, preferred variant, k)
INDUCTION_SCORES: dict[str, tuple[str, str, int | None]] = {
    "score": ("score", "reference", 1),
    "prefix_matching_max": ("prefix_matching_max", "standard", None),
    "prefix_matching_indist_max": ("prefix_matching_indist_max", "standard", None),
    "score_indist": ("score_indist", "standard", 1),
    "previous_token_max": ("previous_token_max", "standard", None),
}
FV_TASKS = ("bound_verb", "bound_object")

FIGURE_COLUMNS: dict[str, str] = {
    "score:max": "induction score\n(reference, k=1)",
    "prefix_matching_max:max": "prefix matching\n(standard)",
    "prefix_matching_indist_max:max": "prefix matching\n(in-distribution)",
    "score_indist:max": "induction score\n(in-distribution, k=1)",
    "previous_token_max:max": "previous-token\nscore",
    "neg_icl_score": "−ICL score\n(early − late loss)",
    "fv_gain": "FV gain\n(bound tasks)",
    "hydra_share": "Hydra share\n(standard)",
    "gap_recovered": "in-context gap\nrecovered",
    "successor_l1:max": "successor attention\n(best layer>=1 head)",
    "content_share": "content share\n(labelled head)",
    "causal_share": "causal share\n(labelled head)",
}
"""Figure columns: scores are maxima over checkpoints, the rest final values."""


def _select(metrics: pd.DataFrame, key: str, metric: str, variant: str,
            k: int | None) -> pd.DataFrame:
    d = metrics[(metrics["_key"] == key) & (metrics["metric"] == metric)]
    if k is not None and d["k"].notna().any():
        d = d[d["k"] == k]
    if d["variant"].nunique() > 1:
        d = d[d["variant"] == variant] if (d["variant"] == variant).any() else d
    return d


def rise_width(series: pd.Series) -> tuple[float, float]:
    """How abruptly a score rose: the same measure as claim C5, so a row and the claims agree.

    Args:
        series: the score per checkpoint step.

    Returns:
        The steps of the 10 -> 90 % rise (from the first checkpoint's value to the max),
        and that width as a fraction of the final step
        (:func:`hierlab.figures.series.rise`); NaN, NaN when the series never rises above
        its first value.
    """
    from hierlab.figures.series import rise

    s = series.sort_index()
    if len(s) < 2 or not np.isfinite(s.max()):
        return NAN, NAN
    r = rise(s)
    if not np.isfinite(r["width"]):
        return NAN, NAN
    return float(r["t90"] - r["t10"]), float(r["width"])


def _score_columns(metrics: pd.DataFrame, ref: Any) -> dict[str, float]:
    from hierlab.probes.induction import phase_change

    out: dict[str, float] = {}
    for col, (metric, variant, k) in INDUCTION_SCORES.items():
        d = _select(metrics, ref.key, metric, variant, k)
        s = d.groupby("step")["value"].max().sort_index() if len(d) else pd.Series(dtype=float)
        out[f"{col}:max"] = float(s.max()) if len(s) else NAN
        out[f"{col}:final"] = float(s.iloc[-1]) if len(s) else NAN
        pc = phase_change(d, metric, k=k) if len(d) else pd.DataFrame()
        out[f"{col}:phase_step"] = float(pc["step"].iloc[0]) if len(pc) else NAN
        out[f"{col}:rise_steps"], out[f"{col}:rise_fraction"] = rise_width(s)
    icl = _select(metrics, ref.key, "icl_score", "standard", None)
    out["icl_score"] = (float(icl[icl["step"] == icl["step"].max()]["value"].mean())
                        if len(icl) else NAN)
    return out


def _mechanism_columns(metrics: pd.DataFrame, ref: Any) -> dict[str, Any]:
    """The mechanism probe's label at the final checkpoint, its head's scores, the tokens
    at which the label first reads ``content induction`` and the successor rise width."""
    from hierlab.contracts import MECHANISM_LABELS
    from hierlab.law import predicted_tokens

    out: dict[str, Any] = {"mechanism_label": None}
    lab = _select(metrics, ref.key, "label_model", "standard", None).sort_values("step")
    if not len(lab):
        return out
    last = lab.iloc[-1]
    out["mechanism_label"] = MECHANISM_LABELS[int(round(last["value"]))]
    out["mechanism_layer"], out["mechanism_head"] = float(last["layer"]), float(last["head"])
    for col, metric in (("successor_best", "successor_best"),
                        ("content_share", "content_share_best"),
                        ("causal_share", "causal_share_best")):
        d = _select(metrics, ref.key, metric, "standard", None)
        out[col] = float(d[d["step"] == d["step"].max()]["value"].mean()) if len(d) else NAN
    up = _select(metrics, ref.key, "successor_upper_max", "standard", None)
    s = up.groupby("step")["value"].max().sort_index() if len(up) else pd.Series(dtype=float)
    out["successor_l1:max"] = float(s.max()) if len(s) else NAN
    out["successor_l1:final"] = float(s.iloc[-1]) if len(s) else NAN
    out["successor_l1:rise_steps"], out["successor_l1:rise_fraction"] = rise_width(s)
    ind = lab[lab["value"].round() == MECHANISM_LABELS.index("content induction")]
    out["content_induction_tokens"] = float(ind["tokens_seen"].iloc[0]) if len(ind) else NAN
    pos = lab[lab["step"] > 0]
    per_step = float((pos["tokens_seen"] / pos["step"]).median()) if len(pos) else NAN
    out["tokens_per_step"] = per_step
    out["law_tokens"] = predicted_tokens(per_step) if np.isfinite(per_step) else NAN
    out["final_tokens"] = float(lab["tokens_seen"].max())
    return out


def _fv_columns(metrics: pd.DataFrame, ref: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    gains = []
    for task in FV_TASKS:
        fv = _select(metrics, ref.key, f"fv_accuracy:{task}", "standard", None)
        zs = _select(metrics, ref.key, f"zero_shot_accuracy:{task}", "standard", None)
        icl = _select(metrics, ref.key, f"icl_accuracy:{task}", "standard", None)
        gain = acc = NAN
        if len(fv):
            last = fv["step"].max()
            best = float(fv[fv["step"] == last].groupby("layer", dropna=False)["value"]
                         .mean().max())
            z = zs[zs["step"] == last]["value"]
            gain = best - float(z.mean()) if len(z) else NAN
            a = icl[icl["step"] == last]["value"]
            acc = float(a.mean()) if len(a) else NAN
        out[f"fv_gain:{task}"], out[f"icl_accuracy:{task}"] = gain, acc
        if np.isfinite(gain):
            gains.append(gain)
    out["fv_gain"] = float(np.mean(gains)) if gains else NAN
    return out


def _hydra_share(data: Any, ref: Any) -> float:
    """C7's share on the standard variant: fraction of (step, layer) cells compensating."""
    from hierlab.figures.series import hydra_cells

    cells = hydra_cells(data, ref, "standard")
    return float(cells["compensates"].mean()) if len(cells) else NAN


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _final_test_loss(mdir: Path) -> float:
    try:
        ev = pd.read_csv(mdir / "eval.csv")
        if len(ev):
            return float(ev.sort_values("step")["test_loss"].iloc[-1])
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        pass
    return NAN


def run_rows(run: PlannedRun, run_dir: Path) -> list[dict[str, Any]]:
    """The summary rows of one run directory, read from its tables as its report reads them.

    Args:
        run: the planned run.
        run_dir: its run directory.

    Returns:
        One row per trained model (none when nothing was trained yet): losses against the
        floors, score, FV, mechanism and Hydra columns, train seconds.
    """
    from hierlab.figures.data import load_run_data

    base: dict[str, Any] = {"run": run.name}
    timings = _read_json(run_dir / "timings.json")
    train_s = float(timings.get("train", NAN))
    models = sorted(p for p in (run_dir / "models").glob("*") if p.is_dir())
    try:
        data = load_run_data(run_dir)
    except Exception as err:  # noqa: BLE001 - a partial run: losses only
        log.info("run %s: no probe data (%s)", run.name, err)
        data = None
    rows = []
    for mdir in models:
        info = _read_json(mdir / "run.json")
        floors = {k: (float(v) if v is not None else NAN)
                  for k, v in (info.get("loss_floors") or {}).items()}
        loss = _final_test_loss(mdir)
        nc, lk = floors.get("no_context", NAN), floors.get("latent_known", NAN)
        gap = (nc - loss) / (nc - lk) if np.isfinite(nc - lk) and nc != lk else NAN
        row: dict[str, Any] = {
            **base, "model": mdir.name, "kind": info.get("kind"),
            "final_test_loss": loss, "no_context": nc, "latent_known": lk,
            "entropy_rate": floors.get("entropy_rate", NAN), "gap_recovered": gap,
            "train_seconds": train_s,
        }
        ref = None
        if data is not None:
            ref = next((m for m in data.models.values()
                        if m.model == mdir.name and m.run_dir is not None
                        and Path(m.run_dir).resolve() == run_dir.resolve()), None)
        if ref is not None and len(data.metrics):
            row.update(_score_columns(data.metrics, ref))
            row.update(_fv_columns(data.metrics, ref))
            row.update(_mechanism_columns(data.metrics, ref))
            row["hydra_share"] = _hydra_share(data, ref)
        rows.append(row)
    return rows


def _column(values: list[Any]) -> list[Any]:
    """Settings columns: numbers stay numbers; anything mixed becomes text (Parquet)."""
    def num(v: Any) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    if all(num(v) for v in values):
        return [NAN if v is None else float(v) for v in values]
    return [None if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
            for v in values]


def summarize(runs: list[PlannedRun], out: str | Path,
              results: list[RunResult] | None = None,
              emergence: EmergenceSettings | None = None) -> pd.DataFrame:
    """Write the sweep's summary table, its figures and, for arms, the emergence statistics.

    ``summary.parquet`` and ``summary.csv`` are written atomically, then the summary and
    law figures; when runs name an arm and a seed, the emergence statistics too.

    Args:
        runs: the planned runs (every one gets a row, run or not).
        out: the sweep folder.
        results: this invocation's run results, for the status column (None: read the
            status off the run directories).
        emergence: the sweep's ``emergence`` section (None: the defaults).

    Returns:
        The summary table.
    """
    out = Path(out)
    status = {r.name: r for r in results or []}
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    rows = []
    for run in runs:
        d = run_dir_of(out, run.name)
        got = run_rows(run, d) if d.is_dir() else []
        res = status.get(run.name)
        st = res.status if res else ("finished" if (d / "report.html").is_file() else
                                     "incomplete")
        for r in got or [{"run": run.name, "model": None, "kind": None}]:
            r["status"] = st
            r["error"] = res.error if res else None
            r["_overrides"] = run.overrides
            rows.append(r)
    df = pd.DataFrame(rows)
    settings = pd.DataFrame({k: _column([r["_overrides"].get(k) for r in rows]) for k in keys},
                            index=df.index)
    df = df.drop(columns="_overrides")
    front = ["run", "model", "kind", "status"]
    df = pd.concat([df[front], settings, df.drop(columns=front)], axis=1)
    if "fv_gain" not in df:
        df["fv_gain"] = NAN
    df["neg_icl_score"] = -df["icl_score"] if "icl_score" in df else NAN
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "summary.parquet", buf.getvalue())
    atomic_write_bytes(out / "summary.csv", df.to_csv(index=False).encode())
    summary_figure(df, keys, out)
    from hierlab.sweep.law_figure import law_figure

    _, fit = law_figure(df, out)
    if fit is not None:
        log.info("emergence law fit: N ~ (B*C)^%.2f (the law: 0.5)", fit[0])
    if any(r.arm is not None for r in runs):
        from hierlab.sweep.emergence import write_emergence

        write_emergence(runs, out, emergence or EmergenceSettings())
    return df


def _label(row: pd.Series, keys: list[str]) -> str:
    def short(k: str) -> str:
        return k.split(".")[-1]
    vals = []
    for k in keys:
        v = row.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        vals.append(f"{short(k)}={v:g}" if isinstance(v, float) else f"{short(k)}={v}")
    settings = ", ".join(vals)
    extra = settings and settings != str(row["run"]).replace("+", ", ") and len(settings) < 60
    mech = row.get("mechanism_label")
    mech = f" — {mech}" if isinstance(mech, str) else ""
    return f"{row['run']} / {row['model']}{mech}" + (f"\n{settings}" if extra else "")


def summary_figure(summary: pd.DataFrame, keys: list[str], out: Path) -> list[Path]:
    """Draw ``summary_figure.{png,svg,csv}``: runs x phenomena at a glance.

    The colour is normalised per column and the raw values are printed in the cells.

    Args:
        summary: the sweep summary.
        keys: the overridden settings, written beside each row's name.
        out: the folder to write into.

    Returns:
        The files written.
    """
    from hierlab.figures.config import FiguresConfig
    from hierlab.figures.style import CREST, save, style

    d = summary[summary["model"].notna()].reset_index(drop=True)
    cols = list(FIGURE_COLUMNS)
    vals = pd.DataFrame({c: pd.to_numeric(d[c], errors="coerce") if c in d else NAN
                         for c in cols}, index=d.index)
    table = pd.concat([d[["run", "model"]], vals], axis=1)
    lo, hi = vals.min(), vals.max()
    norm = (vals - lo) / (hi - lo).replace(0, np.nan)
    norm = norm.where(~(vals.notna() & norm.isna()), 0.5)
    with style():
        from matplotlib.figure import Figure

        n_rows = max(1, len(d))
        fig = Figure(figsize=(1.0 + 0.8 * len(cols) + 2.2, 1.4 + 0.4 * n_rows),
                     layout="constrained")
        ax = fig.add_subplot()
        arr = norm.to_numpy(dtype=float) if len(d) else np.full((1, len(cols)), np.nan)
        ax.imshow(np.ma.masked_invalid(arr), cmap=CREST, vmin=0, vmax=1, aspect="auto",
                  interpolation="nearest")
        for i in range(len(d)):
            for j in range(len(cols)):
                v = vals.iloc[i, j]
                text = "–" if not np.isfinite(v) else f"{v:.3g}"
                dark = np.isfinite(arr[i, j]) and arr[i, j] > 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(cols)), [FIGURE_COLUMNS[c] for c in cols], rotation=30,
                      ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(d)), [_label(r, keys) for _, r in d.iterrows()])
        ax.set_title("which latent structure grows which mechanism "
                     "(colour: per-column min–max; text: raw values)")
        paths = save(fig, table, out, "summary_figure", FiguresConfig(formats=["png", "svg"]))
    return paths
