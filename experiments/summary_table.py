"""An emergence table of docs/findings.md, from a sweep's ``summary.csv`` (never typed by hand).

    python experiments/summary_table.py docs/emergence/cpu/summary.csv > table.md

Columns: final test loss and the two floors, the in-context gap recovered, the mechanism
label at the final checkpoint, the successor attention of the best layer >= 1 head (max
over checkpoints), the labelled head's content and causal share (final), the tokens at
which the label first read ``content induction``, the 10 -> 90 % rise width of the
successor attention (fraction of the steps), the budget as a fraction of the law's point
and the training seconds.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

COLUMNS = [
    ("final_test_loss", "test loss", "{:.3f}"),
    ("no_context", "no-ctx", "{:.3f}"),
    ("latent_known", "latent-known", "{:.3f}"),
    ("gap_recovered", "gap rec.", "{:.2f}"),
    ("mechanism_label", "label", "{}"),
    ("successor_l1:max", "successor L≥1 max", "{:.3f}"),
    ("content_share", "content share", "{:.2f}"),
    ("causal_share", "causal share", "{:.2f}"),
    ("content_induction_tokens", "content ind. at", "{:.2g}"),
    ("successor_l1:rise_fraction", "rise width", "{:.2f}"),
    ("law_fraction", "budget / law", "{:.2f}"),
    ("train_seconds", "train s", "{:.0f}"),
]


def cell(v: object, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def table(df: pd.DataFrame) -> str:
    df = df[df["model"].notna()].copy()
    if {"final_tokens", "law_tokens"} <= set(df.columns):
        df["law_fraction"] = df["final_tokens"] / df["law_tokens"]
    head = "| run | model | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|" + "---|" * (len(COLUMNS) + 2)
    lines = [head, sep]
    for _, r in df.iterrows():
        cells = [cell(r.get(c), f) for c, _, f in COLUMNS]
        status = "" if r.get("status") in ("finished", "done") else f" ({r.get('status')})"
        lines.append(f"| {r['run']}{status} | {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", help="a sweep's summary.csv")
    print(table(pd.read_csv(ap.parse_args().summary)))


if __name__ == "__main__":
    main()
