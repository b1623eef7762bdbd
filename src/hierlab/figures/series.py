"""The per-model series the claims read, extracted from a run's tables.

Kept apart from the claim checks because the sweep summary reads the same series
(:func:`rise`, :func:`hydra_cells`), so a sweep row and the claims table agree.

Conventions
-----------
* "fraction of training" of a step is step / (last step of that model's series).
* Loss curves: *reference* = ``train_loss`` of ``loss.csv`` (what the reference plotted);
  *standard* = ``test_loss`` of ``eval.csv`` (held-out loss). ``L_init`` is the first
  logged value (raw: the early drop must not be smoothed away); the curve is otherwise
  smoothed with a centred rolling median over w = max(1, round(5% of the points)) points;
  ``L(f)`` is the smoothed curve linearly interpolated at step f x last step, and
  ``L_final`` its last value. ``L(f)`` is None when the first logged step lies after
  f x last step (the curve cannot resolve it).
* Induction series per checkpoint: *reference* = ``score`` averaged over k = 1..10 (the
  external model uses ``score_max_then_mean`` when present, as the reference's OLMo
  evaluator did); *standard* = ``prefix_matching_max`` (else the per-step max over heads
  of ``prefix_matching``).
* Hydra cells are (layer, checkpoint) means. A cell *compensates* when, in the reference
  variant, ``drop`` (k = 1) < 0 (the reference's "negative drop") and, in the standard
  variant, ``compensation`` = direct - total effect > 0 (McGrath et al.).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlab.figures.data import ModelRef, RunData


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
    # deferred: fig3_induction pulls in matplotlib, which the sweep summary does not need
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


def mechanism_labels(data: RunData, kind: str) -> pd.Series:
    """Per-checkpoint mechanism label (text) of a panel's model; empty without the probe."""
    from hierlab.contracts import MECHANISM_LABELS

    df = data.rows(data.panel(kind), "mechanism", "standard", "label_model")
    if not len(df):
        return pd.Series(dtype=object)
    codes = df.groupby("step")["value"].max().sort_index().round().astype(int)
    return codes.map(lambda c: MECHANISM_LABELS[c])


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


def fv_gain(data: RunData, m: ModelRef | None) -> pd.Series:
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
