"""The induction-head emergence law of Aoyama, Wilcox and Schneider (2025, arXiv 2511.16893).

They find that induction heads form after about ``N = 10**5.7 * sqrt(B * C)`` training
tokens (batch ``B`` sequences of context ``C``), whatever the model size. Figure 3's
mechanism panel marks this point and the sweep fits the exponent of our own runs.
"""

from __future__ import annotations

import math

import numpy as np

LOG10_PREFACTOR = 5.7
EXPONENT = 0.5

__all__ = ["EXPONENT", "LOG10_PREFACTOR", "fit_law", "predicted_tokens"]


def predicted_tokens(tokens_per_step: float) -> float:
    """``10**5.7 * sqrt(B*C)`` for ``B*C = tokens_per_step``."""
    return 10.0**LOG10_PREFACTOR * math.sqrt(float(tokens_per_step))


def fit_law(tokens_per_step: list[float], emergence_tokens: list[float]
            ) -> tuple[float, float] | None:
    """Least-squares ``log10 N = a + e * log10(B*C)``: ``(e, a)``; the law says
    ``e = 0.5, a = 5.7``. None with fewer than 2 distinct shapes."""
    x = np.log10(np.asarray(tokens_per_step, dtype=float))
    y = np.log10(np.asarray(emergence_tokens, dtype=float))
    ok = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return None
    b, a = np.polyfit(x[ok], y[ok], 1)
    return float(b), float(a)
