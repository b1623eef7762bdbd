"""Shared look of every figure: palette, size, crest-like colormap, step labels
(docs/reference-study.md#figure-style).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot), so drawing
never touches global backend state; raster output is rendered by Agg.
"""

from __future__ import annotations

import contextlib
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hierlab.figures.config import FiguresConfig
from hierlab.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

PALETTE = {"ngram": "#a6cee3", "pcfg": "#b2df8a", "external": "#7570b3"}
"""The study's colours: n-gram, PCFG, OLMo (any external model)."""

# Sampled by eye from seaborn's "crest" (light green -> teal -> deep indigo).
CREST = LinearSegmentedColormap.from_list(
    "crest", ["#a5cd90", "#5fb08f", "#2f8f8c", "#2a6c89", "#2e4b80", "#2c2f6b"]
)

RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
    "legend.frameon": False,
}


def cmap(cfg: FiguresConfig) -> Colormap:
    """The sequential colormap of the config ('crest' is our crest-like map)."""
    return CREST if cfg.cmap == "crest" else mpl.colormaps[cfg.cmap]


def darken(color: str, factor: float = 0.65) -> tuple[float, float, float]:
    """A darker shade of a palette colour, for markers and lines that must stand out."""
    r, g, b = to_rgb(color)
    return (r * factor, g * factor, b * factor)


def fmt_step(x: float, _pos: object = None) -> str:
    """Steps as the reference labels them: 1.5k, 12k, 1.2M (plain below 1000)."""
    if x is None or not np.isfinite(x):
        return ""
    ax = abs(x)
    if ax >= 1e6:
        s = f"{x / 1e6:.1f}".rstrip("0").rstrip(".")
        return f"{s}M"
    if ax >= 1000:
        s = f"{x / 1e3:.1f}".rstrip("0").rstrip(".")
        return f"{s}k"
    return f"{x:g}"


STEP_FORMATTER = FuncFormatter(fmt_step)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the figure style for the duration of one drawing."""
    with mpl.rc_context(RC):
        yield


def new_figure(
    cfg: FiguresConfig, ncols: int, *, sharey: bool = False, height_scale: float = 1.0
) -> tuple[Figure, list[Axes]]:
    """A figure of the study's size (width 7.098 in, height width/1.618) with ``ncols`` panels."""
    width = cfg.width_in
    fig = Figure(figsize=(width, width / cfg.aspect * height_scale), layout="constrained")
    axes = fig.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)


def step_axis(ax: Axes) -> None:
    """Label the x axis in training steps with Nk ticks."""
    ax.xaxis.set_major_formatter(STEP_FORMATTER)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.set_xlabel("step")


def no_data(ax: Axes, reason: str = "") -> None:
    """Mark a panel as empty instead of failing: the other panels still carry information."""
    ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    text = "no data" + (f"\n({reason})" if reason else "")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def heatmap(
    ax: Axes,
    table: pd.DataFrame,
    value_col: str,
    colormap: Colormap | str,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    norm: object | None = None,
    max_xticks: int = 4,
) -> object:
    """Layer x checkpoint heatmap: rows are layers (labelled by layer number), columns are
    checkpoints sorted by step (labelled Nk), as in the reference figures."""
    grid = table.pivot_table(index="layer", columns="step", values=value_col, aggfunc="mean")
    grid = grid.sort_index().sort_index(axis=1)
    kw = {"norm": norm} if norm is not None else {"vmin": vmin, "vmax": vmax}
    im = ax.imshow(
        grid.to_numpy(dtype=float),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap=colormap,
        **kw,
    )
    layers = [int(v) for v in grid.index]
    every = max(1, int(np.ceil(len(layers) / 16)))
    ax.set_yticks(range(0, len(layers), every), [str(v) for v in layers[::every]])
    steps = [int(v) for v in grid.columns]
    n = len(steps)
    idx = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(max_xticks, n))})
    ax.set_xticks(idx, [fmt_step(steps[i]) for i in idx])
    ax.set_xlabel("checkpoint (step)")
    ax.set_ylabel("layer")
    return im


def save(
    fig: Figure, table: pd.DataFrame, out_dir: Path, name: str, cfg: FiguresConfig
) -> list[Path]:
    """Write the figure in every configured format and its data as ``<name>.csv`` beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in cfg.formats:
        path = out_dir / f"{name}.{fmt}"
        meta = {"Date": None} if fmt in ("svg", "pdf") else None
        with atomic_path(path) as tmp:  # a full disk or a kill never leaves half a figure
            fig.savefig(tmp, format=fmt, dpi=cfg.dpi, metadata=meta)
        paths.append(path)
    csv = out_dir / f"{name}.csv"
    atomic_write_text(csv, table.to_csv(index=False))
    paths.append(csv)
    log.debug("wrote %s", ", ".join(p.name for p in paths))
    return paths


def panel_title(ax: Axes, title: str, kind: str) -> None:
    """Panel title with a small square in the panel's palette colour."""
    ax.set_title(f"■ {title}", loc="left", color=darken(PALETTE.get(kind, "#555555"), 0.6))


def variant_title(fig: Figure, what: str, variant: str, how: str) -> None:
    """Figure title that always says which metric variant is shown."""
    head = what if variant == "both" else f"{what} — {variant} variant"
    fig.suptitle(f"{head}\n{textwrap.fill(how, 105)}", fontsize=9)
