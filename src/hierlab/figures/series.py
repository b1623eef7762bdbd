"""The per-model series the claims read, extracted from a run's tables.

Kept apart from the claim checks because the sweep summary reads the same series
(:func:`rise`, :func:`hydra_cells`), so a sweep row and the claims table agree. The
conventions (fraction of training, smoothing, ``L(f)``, which induction score, when a Hydra
cell compensates): ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlab.figures.data import ModelRef, RunData


def loss_curve(data: RunData, kind: str, variant: str) -> pd.DataFrame | None:
    """The loss curve a loss claim reads: train loss (reference) or test loss (standard).

    Args:
        data: the run's tables.
        kind: the panel, ``ngram``, ``pcfg`` or ``external``.
        variant: ``reference`` (``loss.csv``'s train loss, what the study plotted) or
            ``standard`` (``eval.csv``'s held-out loss).

    Returns:
        Columns step and loss (duplicate steps averaged), or None with fewer than two
        points.
    """
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
    """Smooth a loss curve without letting one noisy log step move ``L(f)``.

    Args:
        values: the curve's values, in step order.

    Returns:
        The centred rolling median over max(1, round(5% of the points)) points.
    """
    w = max(1, round(0.05 * len(values)))
    return pd.Series(values).rolling(w, center=True, min_periods=1).median().to_numpy()


def loss_at(curve: pd.DataFrame, fraction: float) -> float | None:
    """``L(f)``: the smoothed loss at a fraction of training.

    Args:
        curve: a loss curve (:func:`loss_curve`).
        fraction: f, of the last logged step.

    Returns:
        The smoothed curve interpolated at step f x last step, or None when the log starts
        after that point (the curve cannot resolve it).
    """
    steps = curve["step"].to_numpy()
    at = fraction * steps[-1]
    if steps[0] > at:
        return None
    return float(np.interp(at, steps, smooth(curve["loss"].to_numpy())))


def induction_series(data: RunData, kind: str, variant: str) -> pd.Series:
    """The induction score per checkpoint of a panel's model, as the claims read it.

    Args:
        data: the run's tables.
        kind: the panel.
        variant: ``reference`` (``score`` averaged over k) or ``standard``
            (``prefix_matching_max``, else the per-step maximum over heads).

    Returns:
        The score by step, ascending (empty without induction rows).
    """
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
    """The mechanism label per checkpoint of a panel's model.

    Args:
        data: the run's tables.
        kind: the panel.

    Returns:
        The label's text by step, ascending; empty without the mechanism probe.
    """
    from hierlab.contracts import MECHANISM_LABELS

    df = data.rows(data.panel(kind), "mechanism", "standard", "label_model")
    if not len(df):
        return pd.Series(dtype=object)
    codes = df.groupby("step")["value"].max().sort_index().round().astype(int)
    return codes.map(lambda c: MECHANISM_LABELS[c])


def rise(series: pd.Series) -> dict[str, float]:
    """The shape of a rising series: how much, how fast and where it rose.

    Args:
        series: values by step, ascending.

    Returns:
        ``max``, ``first``, ``total`` (max - first), ``width`` (the 10 -> 90 % rise as a
        fraction of training) with its steps ``t10`` and ``t90``, and the steepest
        consecutive rise ``steep`` with its steps ``steep_from``, ``steep_to`` and its
        ``steep_share`` of the total rise; the rise fields are NaN when the series never
        rises above its first value.
    """
    steps = series.index.to_numpy(dtype=float)
    v = series.to_numpy(dtype=float)
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
    """A model's Hydra cells, each marked where the later layers compensate.

    Args:
        data: the run's tables.
        model: the model.
        variant: ``reference`` (a cell compensates when ``drop`` < 0) or ``standard``
            (when ``compensation`` > 0).

    Returns:
        Columns step, layer, value, compensates (bool) and mass (the compensating
        amount, 0 elsewhere).
    """
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


def fv_gain(data: RunData, model: ModelRef | None) -> pd.Series:
    """The function-vector gain per checkpoint: what injecting the vector adds to zero-shot.

    Args:
        data: the run's tables.
        model: the model.

    Returns:
        By step: the maximum over layers of ``fv_accuracy`` minus the zero-shot accuracy,
        averaged over tasks (empty without FV rows).
    """
    acc = data.rows(model, "fv", "standard", prefix="fv_accuracy:")
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
    zs = data.rows(model, "fv", "standard", prefix="zero_shot_accuracy:")
    if len(zs):
        z = zs.groupby(["metric", "step"])["value"].mean().reset_index()
        z["task"] = z["metric"].str.split(":", n=1).str[1]
        best = best.merge(
            z[["task", "step", "value"]], on=["task", "step"], how="left", suffixes=("", "_zs")
        )
        best["value"] = best["value"] - best["value_zs"].fillna(0.0)
    return best.groupby("step")["value"].mean().sort_index()
