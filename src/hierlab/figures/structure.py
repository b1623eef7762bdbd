"""Structure scores — next-token class mass against step for the PCFG model
(docs/reference-study.md#structure-scores).

Three lines: verb mass after a subject, object mass after subject-verb, subject mass after
subject-verb-object-connector. The y range is the reference's 0.7-1.0 when every value fits
in it (so the figures compare directly), otherwise automatic (a young model sits lower).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import RunData

NAME = "fig_structure"
COLUMNS = ["model", "series", "step", "value"]
SERIES = {
    "subject_to_verb": "Subject → Verb",
    "verb_to_object": "Verb → Object",
    "connector_to_subject": "Connector → Subject",
}
REFERENCE_YLIM = (0.7, 1.0)


def build_table(data: RunData, variant: str) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.

    Returns:
        Tidy rows: model, series (the metric's name), step, value.
    """
    m = data.panel("pcfg")
    parts = []
    for metric in SERIES:
        df = data.rows(m, "structure", variant, metric)
        if len(df):
            g = df.groupby("step")["value"].mean().reset_index()
            parts.append(g.assign(model=m.model, series=metric))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def ylim(values: pd.Series) -> tuple[float, float] | None:
    """The y range, so the figure compares directly with the study's where it can.

    Args:
        values: the plotted values.

    Returns:
        The reference's 0.7-1.0 if every value fits in it, else None (automatic).
    """
    lo, hi = REFERENCE_YLIM
    if len(values) and values.min() >= lo and values.max() <= hi:
        return REFERENCE_YLIM
    return None


def draw(data: RunData, variant: str, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw one variant of the structure figure and write it with its CSV.

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
        fig, axes = style.new_figure(cfg, 1)
        ax = axes[0]
        style.panel_title(ax, data.title("pcfg"), "pcfg")
        if not len(table):
            style.no_data(ax, "no structure rows for the PCFG model")
        else:
            for i, (metric, label) in enumerate(SERIES.items()):
                t = table[table["series"] == metric]
                marker = "o" if t["step"].nunique() <= 20 else None
                ax.plot(
                    t["step"],
                    t["value"],
                    color=cm(0.2 + 0.35 * i),
                    lw=1.6,
                    marker=marker,
                    ms=3,
                    label=label,
                    clip_on=False,
                )
            lim = ylim(table["value"])
            if lim is not None:
                ax.set_ylim(*lim)
            style.step_axis(ax)
            ax.set_ylabel("next-token probability mass on the class")
            ax.legend(loc="lower right")
        style.variant_title(
            fig,
            "Structure scores",
            variant,
            "softmax mass of the grammatically expected next-token class",
        )
        return style.save(fig, table, out_dir, f"{NAME}_{variant}", cfg)
