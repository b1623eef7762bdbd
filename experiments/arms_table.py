"""Markdown tables of a matched-arms sweep, built from its emergence files.

    python experiments/arms_table.py docs/emergence/arms

reads ``emergence.csv`` and ``emergence_stats.csv`` (written by ``hierlab sweep``) and
prints, per criterion, t* for every arm and seed (M = million tokens; ``>`` marks a run
censored at its budget), the Kaplan-Meier median, the paired ratio against the control
with its bootstrap CI, and the log-rank p.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def _m(tokens: float, observed: bool = True) -> str:
    if tokens is None or (isinstance(tokens, float) and math.isnan(tokens)):
        return "–"
    if math.isinf(tokens):
        return "never"
    return f"{'' if observed else '>'}{tokens / 1e6:.2f}"


def tables(folder: Path) -> str:
    """The markdown of every criterion's table."""
    runs = pd.read_csv(folder / "emergence.csv")
    stats = pd.read_csv(folder / "emergence_stats.csv")
    arms = list(dict.fromkeys(runs["arm"]))
    seeds = sorted(runs["seed"].unique())
    out = []
    for crit, st in stats.groupby("criterion", sort=False):
        suffix = "" if crit == "label" else f"_{crit}"
        out.append(f"**{st['definition'].iloc[0]}** (t\\* in M tokens)\n")
        head = ["arm", *[f"seed {s}" for s in seeds], "seeds with a head", "KM median",
                "ratio to control [95 % CI]", "log-rank p vs control"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for arm in arms:
            r = runs[runs["arm"] == arm].set_index("seed")
            s = st[st["arm"] == arm].iloc[0]
            cells = [arm]
            for seed in seeds:
                cells.append(_m(r.loc[seed, f"t_star{suffix}"], bool(r.loc[seed,
                                f"observed{suffix}"])) if seed in r.index else "–")
            cells.append(f"{int(s['n_observed'])} / {int(s['n'])}")
            cells.append(_m(float(s["km_median"])))
            if bool(s["control"]):
                cells += ["(control)", "–"]
            else:
                if pd.notna(s.get("ratio")):
                    cells.append(f"{s['ratio']:.2f} [{s['ratio_low']:.2f}, "
                                 f"{s['ratio_high']:.2f}] ({int(s['n_exact'])} pairs)")
                else:
                    cells.append(f"no pair with both observed ({int(s['n_pairs'])} pairs)")
                p = s.get("logrank_p")
                cells.append("–" if pd.isna(p) else f"{p:.3g}")
            out.append("| " + " | ".join(cells) + " |")
        p_all = st["logrank_all_p"].dropna()
        out.append(f"\nLog-rank test across all arms: p = {p_all.iloc[0]:.3g}.\n" if len(p_all)
                   else "\nLog-rank test across all arms: no event, no test.\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a matched-arms sweep's folder (its emergence "
                    "files), e.g. docs/emergence/arms")
    print(tables(ap.parse_args().folder))


if __name__ == "__main__":
    main()
