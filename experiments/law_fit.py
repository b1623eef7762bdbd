"""The emergence law on one design: the fit and figure from a sweep's ``summary.csv``.

    python experiments/law_fit.py docs/emergence/flat/summary.csv \
        --runs flat,law-b8c32,law-b16c32,law-b8c64,law-b16c128 --out docs/emergence/flat

Keeps only the named rows (one design over B*C: the sweep's own ``law_figure`` fits every
row that formed a head, whatever its design), draws ``law_figure.{png,svg,csv}`` into
``--out`` with :func:`hierlab.sweep.law_figure.law_figure`, and prints each row's
emergence token count (first checkpoint labelled ``content induction``) against the law's
prediction, and the fitted exponent on B*C (the law: 0.5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from hierlab.law import predicted_tokens
from hierlab.sweep.law_figure import law_figure, law_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", type=Path, help="a sweep's summary.csv")
    ap.add_argument("--runs", required=True, help="comma-separated run names of one design")
    ap.add_argument("--out", type=Path, required=True, help="folder for law_figure.*")
    a = ap.parse_args()
    df = pd.read_csv(a.summary)
    names = a.runs.split(",")
    missing = sorted(set(names) - set(df["run"]))
    if missing:
        raise SystemExit(f"not in {a.summary}: {', '.join(missing)}")
    sub = df[df["run"].isin(names)]
    _, fit = law_figure(sub, a.out)
    print("| run | B·C | emerged at (tokens) | law's N | ratio |")
    print("|---|---|---|---|---|")
    for r in law_table(sub).itertuples():
        bc = r.sqrt_bc**2
        got = f"{r.tokens:.3g}" if r.emerged else f"> {r.tokens:.3g} (never)"
        ratio = f"{r.tokens / predicted_tokens(bc):.3f}" if r.emerged else "–"
        print(f"| {r.run} | {bc:.0f} | {got} | {predicted_tokens(bc):.3g} | {ratio} |")
    print()
    print("fit: none (fewer than 2 shapes formed a head)" if fit is None else
          f"fit: log10 N = {fit[1]:.2f} + {fit[0]:.2f} log10(B·C) (the law: 5.7 + 0.5)")


if __name__ == "__main__":
    main()
