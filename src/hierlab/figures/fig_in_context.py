"""Loss by position in the document and the ICL score (standard variant rows).

(a) ``loss_by_position`` of every model (N-gram, PCFG, external) at its final checkpoint
(solid) and at up to three earlier ones (lighter), against the 1-based position of the
predicted token in document-aligned test windows, with the early and late bands actually
used shaded. (b) ``icl_score`` against step, one line per model: late-band mean loss minus
early-band mean loss, so **below 0 means in-context learning** (late tokens are easier);
the axis label says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import PANEL_KINDS, RunData

NAME = "fig_in_context"
COLUMNS = ["panel", "model", "series", "step", "k", "value"]
EARLIER = 3
ICL_LABEL = "ICL score (late − early band, nats)\n< 0 = in-context learning"


def build_table(data: RunData) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.

    Returns:
        Tidy rows: panel, model, series (loss_by_position | icl_score | band ends), step,
        k (the position, for loss_by_position), value.
    """
    parts = []
    for kind in PANEL_KINDS:
        m = data.panel(kind)
        if m is None:
            continue
        df = data.rows(m, "induction", "standard")
        lbp = df[df["metric"] == "loss_by_position"]
        if len(lbp):
            steps = sorted(int(s) for s in lbp["step"].unique())
            idx = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), EARLIER + 1))
                            .round().astype(int))
            keep = [steps[i] for i in idx]
            g = (lbp[lbp["step"].isin(keep)].groupby(["step", "k"])["value"].mean()
                 .reset_index())
            parts.append(g.assign(panel=kind, model=m.model, series="loss_by_position"))
        for metric in ("icl_score", "icl_early_lo", "icl_early_hi", "icl_late_lo",
                       "icl_late_hi"):
            d = df[df["metric"] == metric]
            if len(d):
                g = d.groupby("step")["value"].mean().reset_index()
                parts.append(g.assign(panel=kind, model=m.model, series=metric, k=pd.NA))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)[COLUMNS]
    out["k"] = out["k"].astype("Int64")
    out["step"] = out["step"].astype("int64")
    return out.sort_values(["panel", "series", "step", "k"], kind="stable", ignore_index=True)


def draw(data: RunData, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw the figure and write it with its CSV.

    Args:
        data: the run's tables.
        out_dir: ``RUN/figures``.
        cfg: the figures section (size, colours, formats).

    Returns:
        The files written: the figure in every format and its data as CSV.
    """
    table = build_table(data)
    with style.style():
        fig, (ax_l, ax_i) = style.new_figure(cfg, 2)
        lbp = table[table["series"] == "loss_by_position"]
        icl = table[table["series"] == "icl_score"]
        if not len(lbp):
            style.no_data(ax_l, "no loss_by_position rows")
        else:
            bands = None
            for kind in PANEL_KINDS:
                t = lbp[lbp["panel"] == kind]
                if not len(t):
                    continue
                colour = style.PALETTE[kind]
                steps = sorted(t["step"].unique())
                for i, step in enumerate(steps):
                    ts = t[t["step"] == step]
                    final = i == len(steps) - 1
                    ax_l.plot(ts["k"], ts["value"], color=colour, lw=1.6 if final else 0.9,
                              alpha=1.0 if final else 0.25 + 0.5 * i / max(1, len(steps) - 1),
                              label=f"{data.title(kind)} (step {style.fmt_step(step)})"
                              if final else None)
                b = table[(table["panel"] == kind) & (table["step"] == steps[-1])]
                ends = {r.series: r.value for r in b.itertuples() if r.series.startswith("icl_")}
                if bands is None and {"icl_early_lo", "icl_late_hi"} <= set(ends):
                    bands = ends
            if bands is not None:
                for lo, hi in (("icl_early_lo", "icl_early_hi"), ("icl_late_lo", "icl_late_hi")):
                    ax_l.axvspan(bands[lo], bands[hi], color="0.85", lw=0, zorder=0)
            ax_l.set_xlabel("position of the predicted token in the document")
            ax_l.set_ylabel("mean loss (nats)")
            ax_l.legend(loc="upper right", fontsize=6)
        ax_l.set_title("(a) loss by position (bold: final step)",
                       loc="left")
        if not len(icl):
            style.no_data(ax_i, "no icl_score rows")
        else:
            for kind in PANEL_KINDS:
                t = icl[icl["panel"] == kind]
                if len(t):
                    ax_i.plot(t["step"], t["value"], color=style.PALETTE[kind], lw=1.6,
                              marker="o", ms=3, label=data.title(kind))
            ax_i.axhline(0.0, color="0.5", lw=0.8, ls=":")
            style.step_axis(ax_i)
            ax_i.set_ylabel(ICL_LABEL)
            ax_i.legend(loc="best", fontsize=6)
        ax_i.set_title("(b) ICL score", loc="left")
        style.variant_title(fig, "In-context learning", "standard",
                            "document-aligned test windows; ICL score = late-band minus "
                            "early-band mean loss (Olsson et al. 2022)")
        return style.save(fig, table, out_dir, NAME, cfg)
