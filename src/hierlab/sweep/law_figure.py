"""The emergence law, measured: emergence token count against sqrt(B*C) (docs/sweeps.md).

Each summary row's tokens at which the mechanism label first read ``content induction``,
against the line of Aoyama, Wilcox and Schneider (2025) and the exponent fitted to our own
points. Rows where the label never read so are drawn at their final token count as open
markers (a lower bound on their emergence point), so an empty fit is visible, not hidden.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.law import LOG10_PREFACTOR, fit_law

__all__ = ["law_figure", "law_table"]


def law_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The points of the law figure, one per summary row that has a batch shape.

    Args:
        summary: the sweep summary (``tokens_per_step``, ``content_induction_tokens``,
            ``final_tokens``); without those columns the table is empty.

    Returns:
        Columns run, model, sqrt_bc, emerged (bool) and tokens (the emergence point, or
        the final token count where nothing emerged).
    """
    need = {"tokens_per_step", "content_induction_tokens", "final_tokens"}
    if not len(summary) or not need <= set(summary.columns):
        return pd.DataFrame(columns=["run", "model", "sqrt_bc", "emerged", "tokens"])
    d = summary[np.isfinite(pd.to_numeric(summary["tokens_per_step"], errors="coerce"))].copy()
    emerged = np.isfinite(pd.to_numeric(d["content_induction_tokens"], errors="coerce"))
    return pd.DataFrame({
        "run": d["run"], "model": d["model"],
        "sqrt_bc": np.sqrt(d["tokens_per_step"].astype(float)),
        "emerged": emerged,
        "tokens": np.where(emerged, d["content_induction_tokens"], d["final_tokens"]),
    }).reset_index(drop=True)


def law_figure(summary: pd.DataFrame,
               out: Path) -> tuple[list[Path], tuple[float, float] | None]:
    """Draw the law figure, ``law_figure.{png,svg,csv}``.

    Args:
        summary: the sweep summary (or any subset of its rows).
        out: the folder to write into.

    Returns:
        The files written and the fit ``(e, a)`` of :func:`hierlab.law.fit_law` (None
        with fewer than two distinct shapes that emerged).
    """
    from matplotlib.figure import Figure

    from hierlab.figures.config import FiguresConfig
    from hierlab.figures.style import save, style

    t = law_table(summary)
    # as bool: an empty object column would select columns, not rows (a sweep summarised
    # before any run trained lost its sqrt_bc column and failed)
    emerged = t["emerged"].astype(bool)
    em = t[emerged]
    fit = fit_law(list(em["sqrt_bc"] ** 2), list(em["tokens"])) if len(em) else None
    with style():
        fig = Figure(figsize=(4.2, 3.2), layout="constrained")
        ax = fig.add_subplot()
        xs = np.array([8.0, 256.0]) if not len(t) else np.array(
            [t["sqrt_bc"].min() / 1.5, t["sqrt_bc"].max() * 1.5])
        ax.plot(xs, 10**LOG10_PREFACTOR * xs, color="0.3", ls="--", lw=1,
                label="N = 10^5.7·√(B·C) (Aoyama et al.)")
        ax.scatter(em["sqrt_bc"], em["tokens"], color="#2f8f8c", s=18, zorder=3,
                   label="content induction first labelled")
        rest = t[~emerged]
        ax.scatter(rest["sqrt_bc"], rest["tokens"], facecolors="none", edgecolors="#b25",
                   s=18, zorder=3, label="never (final tokens: a lower bound)")
        if fit is not None:
            e, a = fit
            ax.plot(xs, 10**a * xs ** (2 * e), color="#2f8f8c", lw=1,
                    label=f"fit: N ∝ (B·C)^{e:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("√(B·C)  (tokens per step)")
        ax.set_ylabel("training tokens")
        n_em = int(len(em))
        ax.set_title(f"emergence law: {n_em} of {len(t)} rows formed a content induction head",
                     fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
        paths = save(fig, t, out, "law_figure", FiguresConfig(formats=["png", "svg"]))
    return paths, fit
