"""Fig. 2 — training loss against step: N-gram | PCFG | OLMo-1B
(docs/reference-study.md#loss-curves).

Beyond the reference figure we draw each corpus's exact loss floors (dashed, labelled) and
the held-out test loss (markers), so a reader sees at once how much of the learnable gap a
model closed. The loss does not depend on the metric variant, so there is one Fig. 2.
The OLMo panel appears only when an external loss CSV (step, loss) is given.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hierlab.figures import style
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import KIND_TITLES, RunData

NAME = "fig2_loss"
FLOOR_LABELS = {
    "no_context": "floor: grammar, no context",
    "latent_known": "floor: document latent known",
    "entropy_rate": "floor: entropy rate",
    "context_entropy": "bound: order and context known",
}
_FLOOR_STYLES = ["--", ":", "-."]


def build_table(data: RunData) -> pd.DataFrame:
    """The figure's data, written beside it as CSV so a reader can redraw it.

    Args:
        data: the run's tables.

    Returns:
        Tidy rows: panel, model, series (train_loss | test_loss | floor:<name>), step
        (empty for floors), value.
    """
    rows: list[pd.DataFrame] = []
    for kind in ("ngram", "pcfg"):
        m = data.panel(kind)
        if m is None:
            continue
        loss = data.losses.get(m.key)
        if loss is not None and len(loss):
            rows.append(_series(kind, m.model, "train_loss", loss["step"], loss["train_loss"]))
        ev = data.evals.get(m.key)
        if ev is not None and len(ev):
            rows.append(_series(kind, m.model, "test_loss", ev["step"], ev["test_loss"]))
        for name, value in m.loss_floors.items():
            if name not in FLOOR_LABELS:  # only entropy rates, not their bookkeeping
                continue
            rows.append(_series(kind, m.model, f"floor:{name}", [pd.NA], [value]))
    if data.olmo_loss is not None and len(data.olmo_loss):
        ext = data.panel("external")
        name = ext.model if ext is not None and "olmo" in ext.model.lower() else "OLMo-1B"
        rows.append(
            _series("external", name, "train_loss", data.olmo_loss["step"], data.olmo_loss["loss"])
        )
    if not rows:
        return pd.DataFrame(columns=["panel", "model", "series", "step", "value"])
    out = pd.concat(rows, ignore_index=True)
    out["step"] = out["step"].astype("Int64")
    return out


def _series(panel: str, model: str, series: str, steps, values) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "panel": panel,
            "model": model,
            "series": series,
            "step": pd.array(list(steps), dtype="Int64"),
            "value": pd.array(list(values), dtype="float64"),
        }
    )


def draw(data: RunData, out_dir: Path, cfg: FiguresConfig) -> list[Path]:
    """Draw Fig. 2 and write it with its CSV.

    Args:
        data: the run's tables.
        out_dir: ``RUN/figures``.
        cfg: the figures section (size, colours, formats).

    Returns:
        The files written: the figure in every format and its data as CSV.
    """
    table = build_table(data)
    panels = ["ngram", "pcfg"] + (["external"] if data.olmo_loss is not None else [])
    with style.style():
        fig, axes = style.new_figure(cfg, len(panels))
        for ax, kind in zip(axes, panels, strict=True):
            _panel(ax, table[table["panel"] == kind], kind, data)
        style.variant_title(
            fig,
            "Training loss (variant-independent)",
            "both",
            "train loss (line), test loss (markers), exact loss floors (dashed)",
        )
        return style.save(fig, table, out_dir, NAME, cfg)


def _panel(ax, t: pd.DataFrame, kind: str, data: RunData) -> None:
    m = data.panel(kind)
    title = KIND_TITLES[kind] if m is None else m.title
    if kind == "external":
        title = t["model"].iloc[0] if len(t) else "OLMo-1B"
    style.panel_title(ax, title or kind, kind)
    curves = t[~t["series"].str.startswith("floor:")]
    if not len(curves):
        style.no_data(ax, "no loss.csv" if kind != "external" else "no --olmo-loss")
        return
    colour = style.PALETTE[kind]
    train = t[t["series"] == "train_loss"]
    ax.plot(train["step"], train["value"], color=colour, lw=1.6, label="train")
    test = t[t["series"] == "test_loss"]
    if len(test):
        ax.plot(
            test["step"],
            test["value"],
            ls="none",
            marker="o",
            ms=3.5,
            mfc=style.darken(colour, 0.7),
            mec="white",
            mew=0.4,
            label="test",
        )
    floors = t[t["series"].str.startswith("floor:")]
    for i, (series, value) in enumerate(zip(floors["series"], floors["value"], strict=True)):
        name = series.split(":", 1)[1]
        ax.axhline(value, color="0.35", lw=0.9, ls=_FLOOR_STYLES[i % len(_FLOOR_STYLES)])
        ax.annotate(
            f"{FLOOR_LABELS.get(name, name)} {value:.3f}",
            xy=(0.98, value),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=6,
            color="0.3",
        )
    style.step_axis(ax)
    ax.set_ylabel("loss (nats/token)")
    ax.legend(loc="upper right")
