"""Fig. 5(a) — Hydra heatmaps, layers x checkpoints: N-gram | PCFG | external
(docs/reference-study.md#hydra-effect).

reference: the study's k = 1 ``drop`` shown as max(0, -drop), as it drew it; standard
(McGrath et al. 2023): the compensation ratio on a diverging map centred at 0. Each
variant has one colour scale shared by the three panels; how it is chosen:
``docs/design-pipeline.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import PANEL_KINDS, RunData

NAME = "fig5a_hydra"
COLUMNS = ["panel", "model", "step", "layer", "value", "plotted"]
DIVERGING = "RdBu_r"
CLIP_QUANTILE = 0.98
HOW = {
    "reference": "the study's score: max(0, −drop) for k=1 (drop = clean − ablated logit of the "
    "current token); only compensation is visible",
    "standard": "McGrath et al.: compensation / direct effect of ablating the layer "
    "(>0: downstream layers restore part of the effect)",
}


def build_table(data: RunData, variant: str) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.

    Returns:
        Tidy rows: panel, model, step, layer, value (as stored), plotted (the colour
        value).
    """
    parts = []
    for kind in PANEL_KINDS:
        m = data.panel(kind)
        g = data.hydra_grid(m, variant, "compensation_ratio")
        if not len(g):
            continue
        g["plotted"] = np.maximum(0.0, -g["value"]) if variant == "reference" else g["value"]
        parts.append(g.assign(panel=kind, model=m.model))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)[COLUMNS]
    out["layer"] = out["layer"].astype("Int64")
    return out


def colour_scale(table: pd.DataFrame, variant: str) -> tuple[float, float]:
    """The one colour scale shared by the three panels, so their colours compare.

    Args:
        table: the figure's data (:func:`build_table`).
        variant: ``reference`` (0 to the largest value) or ``standard`` (symmetric about
            0, clipped at the 98th percentile of the absolute ratio).

    Returns:
        ``(vmin, vmax)``.
    """
    vals = table["plotted"].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    if variant == "reference":
        top = float(vals.max()) if len(vals) else 0.0
        return 0.0, top if top > 0 else 1.0
    m = float(np.quantile(np.abs(vals), CLIP_QUANTILE)) if len(vals) else 0.0
    m = m if m > 0 else 1.0
    return -m, m


def draw(data: RunData, variant: str, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw one variant of Fig. 5(a) and write it with its CSV.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        out_dir: ``RUN/figures``.
        cfg: the figures section (size, colours, formats).

    Returns:
        The files written: the figure in every format and its data as CSV.
    """
    table = build_table(data, variant)
    vmin, vmax = colour_scale(table, variant)
    colormap = style.cmap(cfg) if variant == "reference" else DIVERGING
    with style.style():
        fig, axes = style.new_figure(cfg, 3)
        im = None
        for ax, kind in zip(axes, PANEL_KINDS, strict=True):
            style.panel_title(ax, data.title(kind), kind)
            t = table[table["panel"] == kind]
            if not len(t):
                style.no_data(ax, f"no {variant} hydra rows")
                continue
            im = style.heatmap(ax, t, "plotted", colormap, vmin=vmin, vmax=vmax, max_xticks=3)
        for ax in axes[1:]:
            ax.set_ylabel("")
        if im is not None:
            label = (
                "max(0, −drop), k=1"
                if variant == "reference"
                else (f"compensation ratio (clipped at ±{vmax:.2g})")
            )
            fig.colorbar(im, ax=axes, label=label, shrink=0.9)
        style.variant_title(fig, "Hydra effect", variant, HOW[variant])
        return style.save(fig, table, out_dir, f"{NAME}_{variant}", cfg)
