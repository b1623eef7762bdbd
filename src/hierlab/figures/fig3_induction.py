"""Fig. 3 — induction score against step: N-gram | PCFG | external model
(docs/reference-study.md#induction-score).

reference: the reference's score (attention from i to its own earlier copy, key i-n), one
line per k = 1..10 (alpha 0.6), max over heads; the external panel uses the OLMo
evaluator's order (``score_max_then_mean``) when present, as the reference did.
standard: the Olsson et al. prefix-matching score (key i-n+1), max over heads, with the
max duplicate-token score (key i-n) beside it, so the two definitions can be told apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import RunData

NAME = "fig3_induction"
COLUMNS = ["panel", "model", "series", "k", "step", "value"]
HOW = {
    "reference": "the study's score: attention to the earlier copy of the token (key i−n), "
    "max over heads, one line per k",
    "standard": "Olsson et al. prefix matching (key i−n+1), max over heads; "
    "duplicate-token (key i−n) for comparison",
}


def head_max(rows: pd.DataFrame) -> pd.Series:
    """The best head's score at each checkpoint, the figure's and the claims' series.

    Args:
        rows: per-head metric rows (step, layer, head, value).

    Returns:
        By step: the maximum over (layer, head), duplicates averaged first.
    """
    if not len(rows):
        return pd.Series(dtype=float)
    per_head = rows.groupby(["step", "layer", "head"], dropna=False)["value"].mean()
    return per_head.groupby(level="step").max()


def reference_metric(data: RunData, kind: str) -> str:
    """The reference metric a panel draws, as the study computed it for each model.

    Args:
        data: the run's tables.
        kind: the panel.

    Returns:
        ``score_max_then_mean`` for the external model when measured (the OLMo evaluator's
        order), else ``score``.
    """
    m = data.panel(kind)
    if kind == "external" and len(data.rows(m, "induction", "reference", "score_max_then_mean")):
        return "score_max_then_mean"
    return "score"


def build_table(data: RunData, variant: str) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.

    Returns:
        Tidy rows: panel, model, series, k (reference only), step, value.
    """
    parts = []
    for kind in data.figure_panels():
        m = data.panel(kind)
        if m is None:
            continue
        if variant == "reference":
            metric = reference_metric(data, kind)
            df = data.rows(m, "induction", "reference", metric)
            if len(df):
                g = df.groupby(["k", "step"], dropna=False)["value"].mean().reset_index()
                g.insert(0, "series", metric)
                parts.append(g.assign(panel=kind, model=m.model))
            continue
        pm = data.rows(m, "induction", "standard", "prefix_matching_max")
        if len(pm):
            s = pm.groupby("step")["value"].mean()
        else:
            s = head_max(data.rows(m, "induction", "standard", "prefix_matching"))
        dup = head_max(data.rows(m, "induction", "standard", "duplicate_token"))
        for series, vals in (("prefix_matching_max", s), ("duplicate_token_max", dup)):
            if len(vals):
                parts.append(
                    pd.DataFrame(
                        {
                            "panel": kind,
                            "model": m.model,
                            "series": series,
                            "k": pd.NA,
                            "step": vals.index.astype("int64"),
                            "value": vals.to_numpy(dtype=float),
                        }
                    )
                )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)[COLUMNS]
    out["k"] = out["k"].astype("Int64")
    return out.sort_values(["panel", "series", "k", "step"], kind="stable", ignore_index=True)


def draw(data: RunData, variant: str, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw one variant of Fig. 3 and write it with its CSV.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        out_dir: ``RUN/figures``.
        cfg: the figures section (size, colours, formats).

    Returns:
        The files written: the figure in every format and its data as CSV.
    """
    table = build_table(data, variant)
    cm = style.cmap(cfg)
    with style.style():
        panels = data.figure_panels()
        fig, axes = style.new_figure(cfg, len(panels))  # y 0..1 on each panel
        legend_done = False
        for ax, kind in zip(axes, panels, strict=True):
            style.panel_title(ax, data.title(kind), kind)
            t = table[table["panel"] == kind]
            if not len(t):
                style.no_data(ax, f"no {variant} induction rows")
                continue
            colour = style.PALETTE[kind]
            if variant == "reference":
                ks = sorted(int(k) for k in t["k"].dropna().unique())
                for i, k in enumerate(ks):
                    tk = t[t["k"] == k]
                    shade = cm(0.15 + 0.75 * i / max(1, len(ks) - 1))
                    label = f"k={k}" if i in (0, len(ks) - 1) else None
                    ax.plot(tk["step"], tk["value"], color=shade, alpha=0.6, lw=1.2, label=label)
                if t["series"].iloc[0] == "score_max_then_mean":
                    ax.text(
                        0.02,
                        0.97,
                        "max per sample, then mean",
                        transform=ax.transAxes,
                        va="top",
                        fontsize=6,
                        color="0.3",
                    )
            else:
                pm = t[t["series"] == "prefix_matching_max"]
                dup = t[t["series"] == "duplicate_token_max"]
                ax.plot(
                    pm["step"],
                    pm["value"],
                    color=style.darken(colour, 0.8),
                    lw=1.8,
                    label="prefix matching (i−n+1)",
                )
                ax.plot(
                    dup["step"],
                    dup["value"],
                    color=style.darken(colour, 0.5),
                    lw=1.0,
                    ls="--",
                    label="duplicate token (i−n)",
                )
            ax.set_ylim(0, 1)
            style.step_axis(ax)
            if len(t["step"].unique()) == 1:
                ax.set_xlim(np.array([-1, 1]) + float(t["step"].iloc[0]))
            if not legend_done:
                ax.legend(loc="upper left" if variant == "standard" else "center right")
                legend_done = True
        axes[0].set_ylabel("induction score (max over heads)")
        style.variant_title(fig, "Induction heads", variant, HOW[variant])
        return style.save(fig, table, out_dir, f"{NAME}_{variant}", cfg)
