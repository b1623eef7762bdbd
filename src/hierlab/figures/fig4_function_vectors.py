"""Fig. 4 — function vectors in the PCFG model (docs/reference-study.md#function-vectors).

reference: layer x checkpoint heatmap of the reconstructed "FV improvement" (crest, origin
lower), as the reference notebook drew it.
standard (Todd et al. 2023): left, layer x checkpoint heatmap of the zero-shot accuracy
with the FV added at that layer (mean over tasks); right, that accuracy by injection layer
at the last checkpoint, one line per task, with the task's zero-shot, 10-shot ICL and
chance accuracies as horizontal lines — so "does the FV carry the task?" is read directly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import RunData

NAME = "fig4_function_vectors"
COLUMNS = ["section", "model", "task", "series", "step", "layer", "value"]
BASELINES = {"zero_shot_accuracy": ":", "icl_accuracy": "--", "chance": "-."}
BASELINE_LABELS = {
    "zero_shot_accuracy": "zero-shot",
    "icl_accuracy": "10-shot ICL",
    "chance": "chance",
}


def _task(metric: str) -> str:
    return metric.split(":", 1)[1] if ":" in metric else ""


def build_table(data: RunData, variant: str) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.

    Returns:
        Tidy rows: section (heatmap | last_checkpoint), model, task, series, step, layer,
        value.
    """
    m = data.panel("pcfg")
    parts: list[pd.DataFrame] = []
    if variant == "reference":
        df = data.rows(m, "fv", "reference", "fv_improvement")
        if len(df):
            g = df.groupby(["step", "layer"])["value"].mean().reset_index()
            parts.append(
                g.assign(section="heatmap", model=m.model, task="", series="fv_improvement")
            )
    else:
        acc = data.rows(m, "fv", "standard", prefix="fv_accuracy:")
        if len(acc):
            per_task = acc.groupby(["metric", "step", "layer"])["value"].mean().reset_index()
            mean = per_task.groupby(["step", "layer"])["value"].mean().reset_index()
            parts.append(
                mean.assign(section="heatmap", model=m.model, task="mean", series="fv_accuracy")
            )
            last = int(per_task["step"].max())
            lt = per_task[per_task["step"] == last].copy()
            lt["task"] = lt["metric"].map(_task)
            parts.append(
                lt.drop(columns="metric").assign(
                    section="last_checkpoint", model=m.model, series="fv_accuracy"
                )
            )
            for base in BASELINES:
                b = data.rows(m, "fv", "standard", prefix=f"{base}:")
                b = b[b["step"] == last]
                if len(b):
                    g = b.groupby("metric")["value"].mean().reset_index()
                    parts.append(
                        pd.DataFrame(
                            {
                                "section": "last_checkpoint",
                                "model": m.model,
                                "task": g["metric"].map(_task),
                                "series": base,
                                "step": last,
                                "layer": pd.NA,
                                "value": g["value"],
                            }
                        )
                    )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)[COLUMNS]
    out["layer"] = out["layer"].astype("Int64")
    out["step"] = out["step"].astype("Int64")
    return out


def draw(data: RunData, variant: str, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw one variant of Fig. 4 and write it with its CSV.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        out_dir: ``RUN/figures``.
        cfg: the figures section (size, colours, formats).

    Returns:
        The files written: the figure in every format and its data as CSV.
    """
    table = build_table(data, variant)
    title = data.title("pcfg")
    with style.style():
        if variant == "reference":
            fig, axes = style.new_figure(cfg, 1)
            ax = axes[0]
            style.panel_title(ax, title, "pcfg")
            if not len(table):
                style.no_data(ax, "no fv_improvement rows for the PCFG model")
            else:
                im = style.heatmap(ax, table, "value", style.cmap(cfg))
                fig.colorbar(im, ax=ax, label="FV improvement")
            style.variant_title(
                fig,
                "Function vector improvement",
                variant,
                "the study's lost metric, reconstructed (see probes/fv_reference.py)",
            )
        else:
            fig, axes = style.new_figure(cfg, 2)
            heat = table[table["section"] == "heatmap"]
            last = table[table["section"] == "last_checkpoint"]
            style.panel_title(axes[0], f"{title}: FV accuracy (mean over tasks)", "pcfg")
            if not len(heat):
                style.no_data(axes[0], "no fv_accuracy rows for the PCFG model")
                style.panel_title(axes[1], "by injection layer", "pcfg")
                style.no_data(axes[1])
            else:
                im = style.heatmap(axes[0], heat, "value", style.cmap(cfg), vmin=0, vmax=1)
                fig.colorbar(im, ax=axes[0], label="accuracy with FV")
                _by_layer(axes[1], last)
            style.variant_title(
                fig,
                "Function vectors",
                variant,
                "Todd et al.: top-CIE heads summed, added at one layer, zero-shot accuracy",
            )
        return style.save(fig, table, out_dir, f"{NAME}_{variant}", cfg)


def _by_layer(ax, last: pd.DataFrame) -> None:
    step = int(last["step"].iloc[0])
    style.panel_title(ax, f"by injection layer, step {style.fmt_step(step)}", "pcfg")
    acc = last[last["series"] == "fv_accuracy"]
    tasks = sorted(acc["task"].unique())
    colours = {t: f"C{i % 10}" for i, t in enumerate(tasks)}
    for t in tasks:
        a = acc[acc["task"] == t].sort_values("layer")
        ax.plot(a["layer"], a["value"], marker="o", ms=3, lw=1.4, color=colours[t], label=t)
        for base, ls in BASELINES.items():
            b = last[(last["series"] == base) & (last["task"] == t)]
            for v in b["value"]:
                ax.axhline(v, color=colours[t], ls=ls, lw=0.9, alpha=0.8)
    handles, labels = ax.get_legend_handles_labels()
    present = set(last["series"])
    for base, ls in BASELINES.items():
        if base in present:
            handles.append(Line2D([], [], color="0.3", ls=ls, lw=0.9))
            labels.append(BASELINE_LABELS[base])
    ax.legend(handles, labels, loc="best")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("injection layer")
    ax.set_ylabel("accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
