"""The Kaplan-Meier figure of a sweep: the fraction of seeds with the mechanism against tokens.

One panel per t* criterion (the mechanism label, then the study's offset-n score and
standard prefix matching, so a reader sees what each would have concluded on the same
runs), one step line per arm, censored runs as ticks, the log-rank p of all arms in the
panel title and each arm's p against the control in the legend. Reads tables only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["kaplan_meier_figure"]

_CONTROL_COLOR = "0.15"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def kaplan_meier_figure(curves: pd.DataFrame, stats: pd.DataFrame, out: Path,
                        control: str | None = None) -> list[Path]:
    """Draw ``kaplan_meier.png`` into ``out`` and its plotted points as ``kaplan_meier.csv``.

    Args:
        curves: :func:`hierlab.sweep.survival.kaplan_meier` rows with a ``criterion``
            column (the panels, in order of appearance).
        stats: :func:`hierlab.sweep.survival.emergence_statistics` rows with ``criterion``
            and ``definition`` columns (titles, legend counts and log-rank p).
        out: the folder written to.
        control: the control arm, drawn in near-black (the others take the colour cycle).

    Returns:
        The paths written.
    """
    from matplotlib.figure import Figure

    from hierlab.figures.config import FiguresConfig
    from hierlab.figures.style import save, style

    crits = list(dict.fromkeys(curves["criterion"])) or ["label"]
    arms = list(dict.fromkeys(curves["arm"]))
    cycle = iter(["#2f8f8c", "#c4573a", "#6a5acd", "#d4a017", "#3b7dd8", "#b25", "#5a9e4b"])
    colors = {a: _CONTROL_COLOR if a == control else next(cycle, "0.5") for a in arms}
    pos = curves.loc[curves["tokens"] > 0, "tokens"]
    x0 = float(pos.min()) / 1.5 if len(pos) else 1.0
    x1 = float(pos.max()) * 1.2 if len(pos) else 10.0
    with style():
        fig = Figure(figsize=(3.6 * len(crits) + 0.4, 3.3), layout="constrained")
        axes = fig.subplots(1, len(crits), sharey=True, squeeze=False)[0]
        for ax, crit in zip(axes, crits, strict=True):
            st = stats[stats["criterion"] == crit].set_index("arm")
            for arm in arms:
                c = curves[(curves["criterion"] == crit) & (curves["arm"] == arm)]
                if not len(c):
                    continue
                c = c.sort_values("tokens")
                xs = np.concatenate([[x0], np.maximum(c["tokens"].to_numpy(), x0)])
                ys = np.concatenate([[0.0], c["fraction"].to_numpy()])
                label = str(arm)
                if arm in st.index:
                    r = st.loc[arm]
                    label += f" ({int(r['n_observed'])}/{int(r['n'])})"
                    p = r.get("logrank_p", math.nan)
                    if arm != control and np.isfinite(p):
                        label += f", p vs {control} {_p(p)}"
                ax.step(xs, ys, where="post", color=colors[arm], lw=1.4, label=label)
                cens = c[c["censored"] > 0]
                ax.plot(np.maximum(cens["tokens"], x0), cens["fraction"], ls="none",
                        marker="|", ms=9, mew=1.6, color=colors[arm])
            title = str(st["definition"].iloc[0]) if len(st) else crit
            p_all = float(st["logrank_all_p"].iloc[0]) if len(st) else math.nan
            ax.set_title(f"{title}\nlog-rank p (all arms) = {_p(p_all)}", fontsize=8)
            ax.set_xscale("log")
            ax.set_xlim(x0, x1)
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("training tokens")
            ax.legend(fontsize=6, loc="upper left", title="arm (formed/runs)",
                      title_fontsize=6)
        axes[0].set_ylabel("fraction of seeds with the mechanism")
        # two short lines: one panel (a single criterion) is only ~4 inches wide
        fig.suptitle("when the mechanism forms, per arm\n(Kaplan–Meier; ticks: censored runs)",
                     fontsize=9)
        paths = save(fig, curves, Path(out), "kaplan_meier", FiguresConfig(formats=["png"]))
    return paths
