"""Fig. 3, mechanism panel: which mechanism the induction-type score is made of.

Per model (N-gram | PCFG | a copy design's, if the run has one), against step: the
successor attention of the labelled head, its content share and causal share, with the
checkpoint's mechanism label written at each checkpoint, and the emergence point that the
law of Aoyama et al. (2025) predicts for the run's own B·C.
What is drawn where: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.contracts import MECHANISM_LABELS
from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import RunData
from hierlab.law import predicted_tokens

NAME = "fig3_mechanism"
PANELS = ("ngram", "pcfg")
SERIES = {"successor_best": "successor attention", "content_share_best": "content share",
          "causal_share_best": "causal share"}
SHORT = {"none": "–", "previous-token": "prev", "positional copy": "pos",
         "role-keyed copy": "role", "local content copy": "local",
         "content induction": "IND"}
MIN_SUCCESSOR = 0.05
COLUMNS = ["panel", "model", "series", "step", "tokens_seen", "layer", "head", "value",
           "label"]


def build_table(data: RunData) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.

    Returns:
        One row per (panel, series, step) with the head's layer and head; ``label`` holds
        the mechanism label's text on the ``label_model`` rows.
    """
    parts = []
    for kind in data.figure_panels(PANELS):
        m = data.panel(kind)
        if m is None:
            continue
        df = data.rows(m, "mechanism", "standard")
        for metric in (*SERIES, "label_model"):
            d = df[df["metric"] == metric]
            if not len(d):
                continue
            d = d.sort_values("step")
            lab = (d["value"].round().astype(int).map(lambda c: MECHANISM_LABELS[c])
                   if metric == "label_model" else pd.Series([pd.NA] * len(d), index=d.index))
            parts.append(pd.DataFrame({
                "panel": kind, "model": m.model, "series": metric,
                "step": d["step"].astype("int64").to_numpy(),
                "tokens_seen": d["tokens_seen"].astype("int64").to_numpy(),
                "layer": d["layer"].to_numpy(), "head": d["head"].to_numpy(),
                "value": d["value"].astype(float).to_numpy(), "label": lab.to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def predicted_step(table: pd.DataFrame) -> float | None:
    """The law's emergence point in steps, for the run's own batch shape.

    Args:
        table: the figure's data (:func:`build_table`), whose tokens seen per step give
            B·C.

    Returns:
        N / (tokens per step), or None without a checkpoint after step 0.
    """
    pos = table[table["step"] > 0]
    if not len(pos):
        return None
    per_step = float((pos["tokens_seen"] / pos["step"]).median())
    return predicted_tokens(per_step) / per_step if per_step > 0 else None


def draw(data: RunData, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw the mechanism panel and write it with its CSV.

    Args:
        data: the run's tables.
        out_dir: ``RUN/figures``.
        cfg: the figures section (size, colours, formats).

    Returns:
        The files written: the figure in every format and its data as CSV.
    """
    table = build_table(data)
    with style.style():
        panels = data.figure_panels(PANELS)
        fig, axes = style.new_figure(cfg, len(panels))
        legend_done = False
        for ax, kind in zip(axes, panels, strict=True):
            style.panel_title(ax, data.title(kind), kind)
            t = table[table["panel"] == kind]
            if not len(t):
                style.no_data(ax, "no mechanism rows")
                continue
            colour = style.PALETTE[kind]
            succ = t[t["series"] == "successor_best"].set_index("step")["value"]
            for (metric, name), shade, ls in zip(SERIES.items(), (0.8, 0.55, 0.35),
                                                 ("-", "--", ":"), strict=True):
                s = t[t["series"] == metric].set_index("step")["value"]
                if metric != "successor_best":
                    s = s.where(succ.reindex(s.index) >= MIN_SUCCESSOR)
                ax.plot(s.index, s.to_numpy(), color=style.darken(colour, shade), ls=ls,
                        lw=1.6 if ls == "-" else 1.1, marker="o", ms=2, label=name)
            labels = t[t["series"] == "label_model"]
            for step, lab in zip(labels["step"], labels["label"], strict=True):
                ax.text(max(step, 0.3), 1.02, SHORT.get(str(lab), "?"), rotation=90, fontsize=5,
                        ha="center", va="bottom", color="0.25",
                        fontweight="bold" if lab == "content induction" else "normal")
            pred = predicted_step(t)
            last = float(t["step"].max())
            if pred is not None and pred <= 1.5 * last:
                ax.axvline(pred, color="0.4", ls=(0, (1, 2)), lw=0.9)
                ax.text(pred, 0.5, " law", fontsize=6, color="0.35", rotation=90)
            elif pred is not None:
                ax.text(0.98, 0.6, f"law's point: step {pred:,.0f}\n({pred / last:.1f}× this run)",
                        transform=ax.transAxes, ha="right", fontsize=6, color="0.35")
            if not legend_done:
                ax.legend(loc="center left", fontsize=6)
                legend_done = True
            ax.set_ylim(-0.05, 1.12)
            style.step_axis(ax)
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(0, max(1.5, last * 1.15))
            if len(t["step"].unique()) == 1:
                ax.set_xlim(np.array([-1, 1]) + float(t["step"].iloc[0]))
        axes[0].set_ylabel("score of the labelled head")
        style.variant_title(fig, "Induction heads: which mechanism", "standard",
                            "labels per checkpoint: – none, prev previous-token, pos "
                            "positional copy, role role-keyed copy, local local content copy, "
                            "IND content induction; "
                            "dotted: N = 10^5.7·√(B·C)")
        return style.save(fig, table, out_dir, NAME, cfg)
