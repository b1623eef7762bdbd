"""Reproduce Fig. 3 (standard variant) from a run's tables only -- a notebook in script form.

    python docs/example_fig3.py runs/quickstart [fig3.png]

Fig. 3 standard plots, per model, the Olsson et al. prefix-matching score (attention from
the second copy of a token to the token that followed its first copy), maximum over heads,
against the training step, with the maximum duplicate-token score beside it. Everything
comes from ``RUN/metrics/induction.parquet`` through :func:`hierlab.load_run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

import hierlab


def fig3_standard(run: hierlab.Run) -> pd.DataFrame:
    """model, series (prefix_matching_max | duplicate_token_max), step, value."""
    ind = run.metrics["induction"]
    std = ind[ind["variant"] == "standard"]
    parts = []
    for model, g in std.groupby("model"):
        pm = g[g["metric"] == "prefix_matching_max"].groupby("step")["value"].mean()
        dup = (g[g["metric"] == "duplicate_token"]
               .groupby(["step", "layer", "head"])["value"].mean()  # duplicates averaged
               .groupby(level="step").max())                         # then max over heads
        for series, s in (("prefix_matching_max", pm), ("duplicate_token_max", dup)):
            parts.append(pd.DataFrame({"model": model, "series": series,
                                       "step": s.index.astype("int64"), "value": s.values}))
    return pd.concat(parts, ignore_index=True)


def main(run_dir: str, out: str = "fig3_standard.png") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = fig3_standard(hierlab.load_run(run_dir))
    models = sorted(table["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(7.1, 2.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for series, style in (("prefix_matching_max", "-"), ("duplicate_token_max", "--")):
            t = table[(table["model"] == model) & (table["series"] == series)]
            ax.plot(t["step"], t["value"], style, label=series.replace("_", " "))
        ax.set(title=model, xlabel="step", ylim=(0, 1))
    axes[0][0].set_ylabel("max over heads")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    table.to_csv(Path(out).with_suffix(".csv"), index=False)
    return Path(out)


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
