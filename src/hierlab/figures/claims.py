"""Check SPEC §9's claims C1-C10 on a run's tables, for both metric variants.

The claims are hypotheses: every check returns the number behind it and PASS, FAIL or N/A
(the data it needs are missing), and a FAIL is reported as plainly as a PASS. Thresholds
are the named constants of :mod:`hierlab.figures.config` (``C1_MIN_EARLY_SHARE`` ...),
overridable through :class:`~hierlab.figures.config.ClaimThresholds`.

Conventions shared by the checks
--------------------------------
* "fraction of training" of a step is step / (last step of that model's series).
* Loss curves: *reference* = ``train_loss`` of ``loss.csv`` (what the reference plotted);
  *standard* = ``test_loss`` of ``eval.csv`` (held-out loss). ``L_init`` is the first
  logged value (raw: the early drop must not be smoothed away); the curve is otherwise
  smoothed with a centred rolling median over w = max(1, round(5% of the points)) points;
  ``L(f)`` is the smoothed curve linearly interpolated at step f x last step, and
  ``L_final`` its last value. A check that needs ``L(f)`` is N/A when the first logged
  step lies after f x last step (the curve cannot resolve it).
* Induction series per checkpoint: *reference* = ``score`` averaged over k = 1..10 (the
  external model uses ``score_max_then_mean`` when present, as the reference's OLMo
  evaluator did); *standard* = ``prefix_matching_max`` (else the per-step max over heads
  of ``prefix_matching``).
* Hydra cells are (layer, checkpoint) means. A cell *compensates* when, in the reference
  variant, ``drop`` (k = 1) < 0 (the reference's "negative drop") and, in the standard
  variant, ``compensation`` = direct - total effect > 0 (McGrath et al.).

The checks
----------
C1 n-gram converges almost immediately, then stays flat:
   early share = (L_init - L(C1_EARLY_FRACTION)) / (L_init - L_final) >= C1_MIN_EARLY_SHARE;
   N/A when the curve is flat (within FLAT_REL_TOL) from its first logged step on.
C2 PCFG improves throughout: late share = (L(0.5) - L_final) / (L_init - L_final)
   >= C2_MIN_LATE_SHARE (so the final loss is below the mid-training loss by a real margin).
C3 PCFG model learns the syntax: min(verb_to_object, connector_to_subject) at the final
   checkpoint >= C3_MIN_SCORE (subject_to_verb is reported: VSO sentences cap it ~0.84).
C4 no induction heads on n-gram data: max over checkpoints of the induction series
   < C4_MAX_SCORE.
C5 they form abruptly on PCFG data: with s0 the first and smax the maximum of the series
   and D = smax - s0, t10 / t90 the first checkpoints where s >= s0 + 0.1 D / s0 + 0.9 D:
   smax >= C5_MIN_SCORE and rise width (t90 - t10) / last step <= C5_MAX_RISE_WIDTH. The
   steepest rise between consecutive checkpoints, its step and its share of D are reported.
C6 they form early in the external model and persist: the first checkpoint with
   s >= C6_MIN_SCORE lies within C6_EARLY_FRACTION of its training, and the final score
   >= C6_MIN_PERSIST x its maximum.
C7 Hydra compensation at every PCFG cell: fraction of compensating cells >= C7_MIN_FRACTION.
C8 never for n-gram: fraction of non-compensating cells >= C8_MIN_FRACTION.
C9 partly for the external model, concentrated late: some but not all cells compensate,
   and the compensation mass (sum of max(0, -drop) or of max(0, compensation)) in layers
   >= C9_LATE_LAYER_FRACTION x deepest layer is >= C9_MIN_LATE_SHARE of the total.
C10 function vectors emerge in the PCFG model: reference: max over layers of
   ``fv_improvement`` at the final checkpoint > 0 and > the same at the first checkpoint;
   standard: the FV gain (max over layers of ``fv_accuracy:<task>`` minus
   ``zero_shot_accuracy:<task>``, averaged over tasks) at the final checkpoint > 0 and
   > the gain at the first checkpoint. N/A with a single checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.figures.config import ClaimThresholds, FiguresConfig
from hierlab.figures.data import ModelRef, RunData, load_run_data

log = logging.getLogger(__name__)

PASS, FAIL, NA = "PASS", "FAIL", "N/A"
FLAT_REL_TOL = 0.01
"""C1: a curve whose first and final loss differ by at most 1% is flat from its first log:
when it converged cannot be seen, so C1 is N/A (and FAIL if the loss rose by more)."""
COLUMNS = ["claim", "variant", "statement", "value", "threshold", "verdict", "detail"]
VARIANTS = ("reference", "standard")

STATEMENTS = {
    "C1": "n-gram LM converges almost immediately, then stays flat",
    "C2": "PCFG LM improves throughout training",
    "C3": "PCFG model learns the syntax",
    "C4": "induction heads never form on n-gram data",
    "C5": "induction heads form abruptly on PCFG data",
    "C6": "induction heads form early in the external model and persist",
    "C7": "Hydra compensation at every PCFG layer and checkpoint",
    "C8": "no Hydra compensation for n-gram",
    "C9": "partial Hydra compensation in the external model, concentrated in late layers",
    "C10": "function vectors emerge over training in the PCFG model",
}


@dataclass
class ClaimResult:
    """One row of the claims table."""

    claim: str
    variant: str
    statement: str
    value: float
    threshold: str
    verdict: str
    detail: str


def _r(
    claim: str, variant: str, value: float | None, threshold: str, verdict: str, detail: str
) -> ClaimResult:
    v = float("nan") if value is None else float(value)
    return ClaimResult(claim, variant, STATEMENTS[claim], v, threshold, verdict, detail)


def _na(claim: str, variant: str, threshold: str, why: str) -> ClaimResult:
    return _r(claim, variant, None, threshold, NA, why)


def _f(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.4g}"


# --------------------------------------------------------------------------------------------
# series extraction
def loss_curve(data: RunData, kind: str, variant: str) -> pd.DataFrame | None:
    """The loss curve a loss claim reads: train loss (reference) or test loss (standard)."""
    m = data.panel(kind)
    if m is None:
        return None
    src, col = (data.losses, "train_loss") if variant == "reference" else (data.evals, "test_loss")
    df = src.get(m.key)
    if df is None or len(df) < 2:
        return None
    g = df.groupby("step")[col].mean()
    return pd.DataFrame({"step": g.index.to_numpy(dtype=float), "loss": g.to_numpy(dtype=float)})


def smooth(values: np.ndarray) -> np.ndarray:
    """Centred rolling median over max(1, round(5% of the points)) points."""
    w = max(1, round(0.05 * len(values)))
    return pd.Series(values).rolling(w, center=True, min_periods=1).median().to_numpy()


def loss_at(curve: pd.DataFrame, fraction: float) -> float | None:
    """Smoothed loss at ``fraction`` of training, None if the log starts after that point."""
    steps = curve["step"].to_numpy()
    at = fraction * steps[-1]
    if steps[0] > at:
        return None
    return float(np.interp(at, steps, smooth(curve["loss"].to_numpy())))


def induction_series(data: RunData, kind: str, variant: str) -> pd.Series:
    """Per-checkpoint induction score of a panel's model (see module docstring)."""
    from hierlab.figures.fig3_induction import head_max, reference_metric

    m = data.panel(kind)
    if variant == "reference":
        df = data.rows(m, "induction", "reference", reference_metric(data, kind))
        if not len(df):
            return pd.Series(dtype=float)
        per_k = df.groupby(["step", "k"], dropna=False)["value"].mean()
        return per_k.groupby(level="step").mean().sort_index()
    pm = data.rows(m, "induction", "standard", "prefix_matching_max")
    if len(pm):
        return pm.groupby("step")["value"].mean().sort_index()
    return head_max(data.rows(m, "induction", "standard", "prefix_matching")).sort_index()


def hydra_cells(data: RunData, model: ModelRef | None, variant: str) -> pd.DataFrame:
    """(step, layer, value, compensates, mass) per Hydra cell of a model."""
    g = data.hydra_grid(model, variant, "compensation")
    if not len(g):
        return pd.DataFrame(columns=["step", "layer", "value", "compensates", "mass"])
    if variant == "reference":
        g["compensates"] = g["value"] < 0
        g["mass"] = np.maximum(0.0, -g["value"])
    else:
        g["compensates"] = g["value"] > 0
        g["mass"] = np.maximum(0.0, g["value"])
    return g


# --------------------------------------------------------------------------------------------
# the checks
def check_c1(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = f"early share ≥ {t.c1_min_early_share:g} at {t.c1_early_fraction:.0%} of training"
    curve = loss_curve(data, "ngram", variant)
    if curve is None:
        return _na(
            "C1",
            variant,
            thr,
            f"no n-gram {'loss' if variant == 'reference' else 'eval'}.csv with ≥ 2 points",
        )
    l_init = float(curve["loss"].iloc[0])
    l_early = loss_at(curve, t.c1_early_fraction)
    l_final = float(smooth(curve["loss"].to_numpy())[-1])
    if l_early is None:
        return _na(
            "C1",
            variant,
            thr,
            f"first logged step {int(curve['step'].iloc[0])} is after "
            f"{t.c1_early_fraction:.0%} of training",
        )
    detail = f"L_init {_f(l_init)}, L({t.c1_early_fraction:.0%}) {_f(l_early)}, final {_f(l_final)}"
    if l_init - l_final <= FLAT_REL_TOL * abs(l_final):
        if abs(l_init - l_final) <= FLAT_REL_TOL * abs(l_final):
            # flat from the first log on: any convergence happened before it, unseen
            return _na("C1", variant, thr, detail + "; flat from the first logged step on")
        return _r("C1", variant, None, thr, FAIL, detail + "; the loss rose")
    share = (l_init - l_early) / (l_init - l_final)
    return _r("C1", variant, share, thr, PASS if share >= t.c1_min_early_share else FAIL, detail)


def check_c2(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = f"late share ≥ {t.c2_min_late_share:g} (decrease after 50% / total decrease)"
    curve = loss_curve(data, "pcfg", variant)
    if curve is None:
        return _na(
            "C2",
            variant,
            thr,
            f"no PCFG {'loss' if variant == 'reference' else 'eval'}.csv with ≥ 2 points",
        )
    l_init = float(curve["loss"].iloc[0])
    l_mid = loss_at(curve, 0.5)
    l_final = float(smooth(curve["loss"].to_numpy())[-1])
    if l_mid is None:
        return _na("C2", variant, thr, "the log starts after 50% of training")
    early = loss_at(curve, t.c1_early_fraction)
    detail = f"L_init {_f(l_init)}, L(50%) {_f(l_mid)}, final {_f(l_final)}"
    if l_init - l_final <= 0:
        return _r("C2", variant, None, thr, FAIL, detail + "; the loss did not decrease")
    share = (l_mid - l_final) / (l_init - l_final)
    if early is not None:
        done = (l_init - early) / (l_init - l_final)
        detail += f"; share done at {t.c1_early_fraction:.0%}: {_f(done)}"
    return _r("C2", variant, share, thr, PASS if share >= t.c2_min_late_share else FAIL, detail)


def check_c3(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = f"min(V→O, C→S) at the final checkpoint ≥ {t.c3_min_score:g}"
    m = data.panel("pcfg")
    scores = {}
    df = data.rows(m, "structure", variant)
    if len(df):
        last = df[df["step"] == df["step"].max()]
        scores = last.groupby("metric")["value"].mean().to_dict()
    need = ("verb_to_object", "connector_to_subject")
    if not all(k in scores for k in need):
        return _na("C3", variant, thr, "no verb_to_object / connector_to_subject rows for PCFG")
    value = min(scores[k] for k in need)
    step = int(df["step"].max())
    detail = f"step {step}: " + ", ".join(f"{k} {_f(v)}" for k, v in sorted(scores.items()))
    return _r("C3", variant, value, thr, PASS if value >= t.c3_min_score else FAIL, detail)


def check_c4(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = f"max over checkpoints < {t.c4_max_score:g}"
    s = induction_series(data, "ngram", variant)
    if not len(s):
        return _na("C4", variant, thr, f"no {variant} induction rows for the n-gram model")
    value = float(s.max())
    detail = f"{len(s)} checkpoints; max at step {int(s.idxmax())}, final {_f(float(s.iloc[-1]))}"
    return _r("C4", variant, value, thr, PASS if value < t.c4_max_score else FAIL, detail)


def rise(s: pd.Series) -> dict[str, float]:
    """Shape of a rising series: max, 10->90% rise width (fraction of training), steepest
    consecutive rise (its start/end steps and share of the total rise)."""
    steps = s.index.to_numpy(dtype=float)
    v = s.to_numpy(dtype=float)
    s0, smax = v[0], v.max()
    total = smax - s0
    out = {
        "max": smax,
        "first": s0,
        "total": total,
        "width": float("nan"),
        "t10": float("nan"),
        "t90": float("nan"),
        "steep": float("nan"),
        "steep_from": float("nan"),
        "steep_to": float("nan"),
        "steep_share": float("nan"),
    }
    if total <= 0:
        return out
    t10 = steps[np.argmax(v >= s0 + 0.1 * total)]
    t90 = steps[np.argmax(v >= s0 + 0.9 * total)]
    d = np.diff(v)
    i = int(np.argmax(d))
    out.update(
        width=(t90 - t10) / steps[-1],
        t10=t10,
        t90=t90,
        steep=float(d[i]),
        steep_from=steps[i],
        steep_to=steps[i + 1],
        steep_share=float(d[i]) / total,
    )
    return out


def check_c5(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = f"max ≥ {t.c5_min_score:g} and 10→90% rise within ≤ {t.c5_max_rise_width:g} of training"
    s = induction_series(data, "pcfg", variant)
    if len(s) < 3:
        return _na("C5", variant, thr, f"{len(s)} PCFG {variant} induction checkpoints (need ≥ 3)")
    r = rise(s)
    detail = f"max {_f(r['max'])} (first {_f(r['first'])})"
    if not np.isfinite(r["width"]):
        return _r("C5", variant, None, thr, FAIL, detail + "; the score never rises")
    detail += (
        f"; 10→90% between steps {int(r['t10'])} and {int(r['t90'])}; steepest rise "
        f"+{_f(r['steep'])} between steps {int(r['steep_from'])} and {int(r['steep_to'])}"
        f" ({r['steep_share']:.0%} of the rise)"
    )
    ok = r["max"] >= t.c5_min_score and r["width"] <= t.c5_max_rise_width
    return _r("C5", variant, r["width"], thr, PASS if ok else FAIL, detail)


def check_c6(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = (
        f"reaches {t.c6_min_score:g} within {t.c6_early_fraction:.0%} of training; "
        f"final ≥ {t.c6_min_persist:g} × max"
    )
    s = induction_series(data, "external", variant)
    if len(s) < 2:
        return _na("C6", variant, thr, f"no external-model {variant} induction series")
    smax, final = float(s.max()), float(s.iloc[-1])
    reached = s[s >= t.c6_min_score]
    persist = final / smax if smax > 0 else 0.0
    name = data.panel("external").model
    if not len(reached):
        return _r(
            "C6",
            variant,
            None,
            thr,
            FAIL,
            f"{name}: never reaches {t.c6_min_score:g} (max {_f(smax)})",
        )
    frac = float(reached.index[0]) / float(s.index[-1])
    detail = (
        f"{name}: reaches {t.c6_min_score:g} at step {int(reached.index[0])}; max {_f(smax)},"
        f" final {_f(final)} ({persist:.0%} of max)"
    )
    ok = frac <= t.c6_early_fraction and persist >= t.c6_min_persist
    return _r("C6", variant, frac, thr, PASS if ok else FAIL, detail)


def _cell_detail(cells: pd.DataFrame, ok: pd.Series | None = None) -> str:
    """Cell counts and range, plus the first step from which every later cell satisfies
    the claim (so a failure confined to the untrained first checkpoints is visible)."""
    text = (
        f"{len(cells)} cells ({cells['layer'].nunique()} layers × {cells['step'].nunique()} "
        f"checkpoints), values {_f(cells['value'].min())} … {_f(cells['value'].max())}"
    )
    if ok is not None and not ok.all():
        bad_steps = cells.loc[~ok, "step"]
        later = sorted(s for s in cells["step"].unique() if s > bad_steps.max())
        text += (
            f"; holds at every cell from step {int(later[0])} on" if later
            else "; fails at the last checkpoint"
        )
        text += f" (violations at steps {sorted(int(x) for x in bad_steps.unique())[:8]})"
    return text


def _what(variant: str) -> str:
    return "drop (k=1) < 0" if variant == "reference" else "compensation > 0"


def check_c7(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = f"fraction of cells with {_what(variant)} ≥ {t.c7_min_fraction:g}"
    cells = hydra_cells(data, data.panel("pcfg"), variant)
    if not len(cells):
        return _na("C7", variant, thr, f"no {variant} hydra rows for the PCFG model")
    frac = float(cells["compensates"].mean())
    return _r(
        "C7", variant, frac, thr, PASS if frac >= t.c7_min_fraction else FAIL,
        _cell_detail(cells, cells["compensates"]),
    )


def check_c8(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    neg = "drop (k=1) > 0" if variant == "reference" else "compensation ≤ 0"
    thr = f"fraction of cells with {neg} ≥ {t.c8_min_fraction:g}"
    cells = hydra_cells(data, data.panel("ngram"), variant)
    if not len(cells):
        return _na("C8", variant, thr, f"no {variant} hydra rows for the n-gram model")
    ok = cells["value"] > 0 if variant == "reference" else ~cells["compensates"]
    frac = float(ok.mean())
    return _r(
        "C8", variant, frac, thr, PASS if frac >= t.c8_min_fraction else FAIL,
        _cell_detail(cells, ok),
    )


def check_c9(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    thr = (
        f"0 < fraction compensating < 1 and late-layer (≥ {t.c9_late_layer_fraction:g} × "
        f"deepest) share of compensation mass ≥ {t.c9_min_late_share:g}"
    )
    m = data.panel("external")
    cells = hydra_cells(data, m, variant)
    if not len(cells):
        return _na("C9", variant, thr, f"no external-model {variant} hydra rows")
    frac = float(cells["compensates"].mean())
    cut = t.c9_late_layer_fraction * float(cells["layer"].max())
    late = cells["layer"].astype(float) >= cut
    total = float(cells["mass"].sum())
    share = float(cells.loc[late, "mass"].sum()) / total if total > 0 else 0.0
    detail = f"{m.model}: {frac:.0%} of cells compensate; late layers ≥ {cut:.3g}; " + _cell_detail(
        cells
    )
    ok = 0 < frac < 1 and share >= t.c9_min_late_share
    return _r("C9", variant, share, thr, PASS if ok else FAIL, detail)


def _fv_gain(data: RunData, m: ModelRef | None) -> pd.Series:
    """Per-step FV gain: max over layers of fv_accuracy minus zero-shot, mean over tasks."""
    acc = data.rows(m, "fv", "standard", prefix="fv_accuracy:")
    if not len(acc):
        return pd.Series(dtype=float)
    best = (
        acc.groupby(["metric", "step", "layer"])["value"]
        .mean()
        .groupby(level=["metric", "step"])
        .max()
        .reset_index()
    )
    best["task"] = best["metric"].str.split(":", n=1).str[1]
    zs = data.rows(m, "fv", "standard", prefix="zero_shot_accuracy:")
    if len(zs):
        z = zs.groupby(["metric", "step"])["value"].mean().reset_index()
        z["task"] = z["metric"].str.split(":", n=1).str[1]
        best = best.merge(
            z[["task", "step", "value"]], on=["task", "step"], how="left", suffixes=("", "_zs")
        )
        best["value"] = best["value"] - best["value_zs"].fillna(0.0)
    return best.groupby("step")["value"].mean().sort_index()


def check_c10(data: RunData, variant: str, t: ClaimThresholds) -> ClaimResult:
    m = data.panel("pcfg")
    if variant == "reference":
        thr = "max-layer fv_improvement at the final checkpoint > 0 and > at the first"
        df = data.rows(m, "fv", "reference", "fv_improvement")
        s = (
            df.groupby(["step", "layer"])["value"].mean().groupby(level="step").max()
            if len(df)
            else pd.Series(dtype=float)
        )
        what = "fv_improvement"
    else:
        thr = (
            "FV gain (max-layer accuracy − zero-shot) at the final checkpoint > 0 "
            "and > at the first"
        )
        s = _fv_gain(data, m)
        what = "fv_accuracy"
    if not len(s):
        return _na("C10", variant, thr, f"no {what} rows for the PCFG model")
    if len(s) < 2:
        return _na(
            "C10",
            variant,
            thr,
            f"only one checkpoint (step {int(s.index[0])}): "
            f"value {_f(float(s.iloc[0]))}; emergence needs ≥ 2",
        )
    first, final = float(s.iloc[0]), float(s.iloc[-1])
    detail = (
        f"first (step {int(s.index[0])}) {_f(first)}, final (step {int(s.index[-1])}) {_f(final)}"
    )
    ok = final > 0 and final > first
    return _r("C10", variant, final, thr, PASS if ok else FAIL, detail)


CHECKS = {
    "C1": check_c1,
    "C2": check_c2,
    "C3": check_c3,
    "C4": check_c4,
    "C5": check_c5,
    "C6": check_c6,
    "C7": check_c7,
    "C8": check_c8,
    "C9": check_c9,
    "C10": check_c10,
}


# --------------------------------------------------------------------------------------------
def evaluate_claims(
    run_dir: Path | str | None = None,
    cfg: FiguresConfig | None = None,
    extra_runs: Iterable[Path | str] = (),
    *,
    data: RunData | None = None,
    write: bool = True,
) -> pd.DataFrame:
    """Evaluate C1-C10 for both variants; returns (claim, variant, statement, value,
    threshold, verdict, detail) and writes ``RUN/claims.csv`` unless ``write`` is False."""
    cfg = cfg or FiguresConfig()
    if data is None:
        if run_dir is None:
            raise ValueError("evaluate_claims needs run_dir or data")
        data = load_run_data(run_dir, extra_runs=extra_runs)
    results = [
        asdict(check(data, variant, cfg.claims))
        for check in CHECKS.values()
        for variant in VARIANTS
    ]
    table = pd.DataFrame(results, columns=COLUMNS)
    if write:
        path = Path(run_dir if run_dir is not None else data.run_dir) / "claims.csv"
        table.to_csv(path, index=False)
        log.info("claims: %s", path)
    return table


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: statement, then value/verdict per variant (for reports)."""
    rows = []
    for claim, g in table.groupby("claim", sort=False):
        row = {"claim": claim, "statement": g["statement"].iloc[0]}
        for _, r in g.iterrows():
            v = r["variant"]
            row[f"{v} value"] = r["value"]
            row[f"{v} verdict"] = r["verdict"]
            row[f"{v} threshold"] = r["threshold"]
            row[f"{v} detail"] = r["detail"]
        rows.append(row)
    return pd.DataFrame(rows)


def format_claims(table: pd.DataFrame) -> str:
    """A plain-text table of the verdicts, reference and standard side by side."""
    lines = [f"{'claim':<5} {'reference':<18} {'standard':<18} statement"]
    for claim, g in table.groupby("claim", sort=False):
        cells = []
        for variant in VARIANTS:
            r = g[g["variant"] == variant]
            if not len(r):
                cells.append("")
                continue
            r = r.iloc[0]
            cells.append(f"{r['verdict']:<4} {_f(r['value'])}")
        lines.append(f"{claim:<5} {cells[0]:<18} {cells[1]:<18} {g['statement'].iloc[0]}")
    return "\n".join(lines)
