"""The claims table: its row, its columns and verdict words, and the two ways it is shown.

One row per (claim, variant); ``RUN/claims.csv``, the report and ``hierlab figures``
all read this shape, so it lives apart from the checks that fill it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlab.contracts import VARIANTS

PASS, FAIL, NA = "PASS", "FAIL", "N/A"
COLUMNS = ["claim", "variant", "statement", "value", "threshold", "verdict", "detail"]


@dataclass
class ClaimResult:
    """One row of the claims table.

    Attributes:
        claim: the claim's id (``C1`` ...).
        variant: ``reference`` or ``standard``.
        statement: what the claim says.
        value: the number behind the verdict (NaN: none).
        threshold: the test, in words.
        verdict: PASS, FAIL or N/A.
        detail: the numbers a reader needs to judge the verdict.
    """

    claim: str
    variant: str
    statement: str
    value: float
    threshold: str
    verdict: str
    detail: str


def fmt(value: float | None) -> str:
    """A number as the claims table prints it, so every detail reads alike.

    Args:
        value: the number (None: missing).

    Returns:
        4 significant digits, or ``nan`` when missing or not finite.
    """
    return "nan" if value is None or not np.isfinite(value) else f"{value:.4g}"


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table with the two variants side by side, as the report shows it.

    Args:
        table: the claims table, one row per (claim, variant).

    Returns:
        One row per claim: statement, then value, verdict, threshold and detail per
        variant.
    """
    rows = []
    for claim, g in table.groupby("claim", sort=False):
        row = {"claim": claim, "statement": g["statement"].iloc[0]}
        for _, r in g.iterrows():
            v = r["variant"]
            row[f"{v} value"] = r["value"]
            row[f"{v} verdict"] = r["verdict"]
            row[f"{v} threshold"] = r["threshold"]
            row[f"{v} detail"] = r["detail"]
        rows.append(row)
    return pd.DataFrame(rows)


def format_claims(table: pd.DataFrame) -> str:
    """A plain-text table of the verdicts, as ``hierlab figures`` prints it.

    Args:
        table: the claims table.

    Returns:
        One line per claim: the reference and the standard verdict with its value, and the
        statement.
    """
    lines = [f"{'claim':<5} {'reference':<18} {'standard':<18} statement"]
    for claim, g in table.groupby("claim", sort=False):
        cells = []
        for variant in VARIANTS:
            r = g[g["variant"] == variant]
            if not len(r):
                cells.append("")
                continue
            r = r.iloc[0]
            cells.append(f"{r['verdict']:<4} {fmt(r['value'])}")
        lines.append(f"{claim:<5} {cells[0]:<18} {cells[1]:<18} {g['statement'].iloc[0]}")
    return "\n".join(lines)
