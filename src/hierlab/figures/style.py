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

PALETTE = {"ngram": "#a6cee3", "pcfg": "#b2df8a", "external": "#7570b3", "copy": "#fdbf6f"}
"""The study's colours: n-gram, PCFG, OLMo (any external model); ours for a copy design."""

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
    """The sequential colormap of the config.

    Args:
        cfg: the figures section.

    Returns:
        Our crest-like map for ``crest`` (no seaborn needed), else matplotlib's map of
        that name.
    """
    return CREST if cfg.cmap == "crest" else mpl.colormaps[cfg.cmap]


def darken(color: str, factor: float = 0.65) -> tuple[float, float, float]:
    """A darker shade of a palette colour, for markers and lines that must stand out.

    Args:
        color: any matplotlib colour.
        factor: how much of each channel is kept.

    Returns:
        The shade as RGB in [0, 1].
    """
    r, g, b = to_rgb(color)
    return (r * factor, g * factor, b * factor)


def fmt_step(step: float, _pos: object = None) -> str:
    """Steps as the reference labels them, so tick labels read alike in both studies.

    Args:
        step: the step (a tick value).
        _pos: the tick position, which matplotlib's ``FuncFormatter`` passes; unused.

    Returns:
        1.5k, 12k, 1.2M (plain below 1000); empty for a missing value.
    """
    if step is None or not np.isfinite(step):
        return ""
    ax = abs(step)
    if ax >= 1e6:
        s = f"{step / 1e6:.1f}".rstrip("0").rstrip(".")
        return f"{s}M"
    if ax >= 1000:
        s = f"{step / 1e3:.1f}".rstrip("0").rstrip(".")
        return f"{s}k"
    return f"{step:g}"


STEP_FORMATTER = FuncFormatter(fmt_step)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the figure style for the duration of one drawing, leaving global state alone.

    Yields:
        Nothing; matplotlib's settings are restored afterwards.
    """
    with mpl.rc_context(RC):
        yield


def new_figure(
    cfg: FiguresConfig, ncols: int, *, sharey: bool = False, height_scale: float = 1.0
) -> tuple[Figure, list[Axes]]:
    """A figure of the study's size with one row of panels.

    Args:
        cfg: the figures section (width, aspect).
        ncols: the number of panels.
        sharey: share the y axis between panels.
        height_scale: a factor on the height (width / aspect).

    Returns:
        The figure and its axes, left to right.
    """
    width = cfg.width_in
    fig = Figure(figsize=(width, width / cfg.aspect * height_scale), layout="constrained")
    axes = fig.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)


def step_axis(axes: Axes) -> None:
    """Label the x axis in training steps with Nk ticks.

    Args:
        axes: the panel.
    """
    axes.xaxis.set_major_formatter(STEP_FORMATTER)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=4))
    axes.set_xlabel("step")


def no_data(axes: Axes, reason: str = "") -> None:
    """Mark a panel as empty instead of failing: the other panels still carry information.

    Args:
        axes: the panel.
        reason: which data are missing, printed under "no data".
    """
    axes.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
    for spine in axes.spines.values():
        spine.set_visible(False)
    text = "no data" + (f"\n({reason})" if reason else "")
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="0.4")


def heatmap(
    axes: Axes,
    table: pd.DataFrame,
    value_col: str,
    colormap: Colormap | str,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    norm: object | None = None,
    max_xticks: int = 4,
) -> object:
    """Layer x checkpoint heatmap, as in the reference figures.

    Rows are layers (labelled by layer number), columns are checkpoints sorted by step
    (labelled Nk); duplicate cells are averaged.

    Args:
        axes: the panel.
        table: rows with layer, step and ``value_col``.
        value_col: the column that gives the colour.
        colormap: the colormap.
        vmin: the colour scale's lower end (ignored with ``norm``).
        vmax: its upper end.
        norm: a matplotlib norm instead of ``vmin``/``vmax``.
        max_xticks: the most step labels on the x axis.

    Returns:
        The image, for a colourbar.
    """
    grid = table.pivot_table(index="layer", columns="step", values=value_col, aggfunc="mean")
    grid = grid.sort_index().sort_index(axis=1)
    kw = {"norm": norm} if norm is not None else {"vmin": vmin, "vmax": vmax}
    im = axes.imshow(
        grid.to_numpy(dtype=float),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap=colormap,
        **kw,
    )
    layers = [int(v) for v in grid.index]
    every = max(1, int(np.ceil(len(layers) / 16)))
    axes.set_yticks(range(0, len(layers), every), [str(v) for v in layers[::every]])
    steps = [int(v) for v in grid.columns]
    n = len(steps)
    idx = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(max_xticks, n))})
    axes.set_xticks(idx, [fmt_step(steps[i]) for i in idx])
    axes.set_xlabel("checkpoint (step)")
    axes.set_ylabel("layer")
    return im


def save(
    fig: Figure, table: pd.DataFrame, out_dir: Path, name: str, cfg: FiguresConfig
) -> list[Path]:
    """Write the figure in every configured format and its data as ``<name>.csv`` beside it.

    Every file is written atomically, so a full disk or a kill never leaves half a figure.

    Args:
        fig: the figure.
        table: its data.
        out_dir: the folder (created if missing).
        name: the files' stem.
        cfg: the figures section (formats, dpi).

    Returns:
        The files written, the CSV last.
    """
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


def panel_title(axes: Axes, title: str, kind: str) -> None:
    """Panel title with a small square in the panel's palette colour.

    Args:
        axes: the panel.
        title: the title.
        kind: the panel's kind (``ngram``, ``pcfg``, ``external``), which picks the colour.
    """
    axes.set_title(f"■ {title}", loc="left", color=darken(PALETTE.get(kind, "#555555"), 0.6))


def variant_title(fig: Figure, what: str, variant: str, how: str) -> None:
    """Figure title that always says which metric variant is shown.

    Args:
        fig: the figure.
        what: what the figure shows.
        variant: ``reference``, ``standard`` or ``both`` (not named then).
        how: how the metric is defined, wrapped under the title.
    """
    head = what if variant == "both" else f"{what} — {variant} variant"
    fig.suptitle(f"{head}\n{textwrap.fill(how, 105)}", fontsize=9)
