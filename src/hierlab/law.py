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
    """The tokens after which the law expects induction heads to have formed.

    Args:
        tokens_per_step: ``B*C``, the batch in sequences times the context length.

    Returns:
        ``10**5.7 * sqrt(B*C)`` training tokens.
    """
    return 10.0**LOG10_PREFACTOR * math.sqrt(float(tokens_per_step))


def fit_law(tokens_per_step: list[float], emergence_tokens: list[float]
            ) -> tuple[float, float] | None:
    """Fit the law's exponent to measured emergence points, to compare with ``e = 0.5``.

    Least squares on ``log10 N = a + e * log10(B*C)``; pairs with a non-finite logarithm
    (a run where nothing emerged) are left out.

    Args:
        tokens_per_step: ``B*C`` of each run.
        emergence_tokens: the tokens at which each run's induction heads formed.

    Returns:
        ``(e, a)``; the law says ``e = 0.5, a = 5.7``. None with fewer than 2 distinct
        values of ``B*C``, which cannot fix a slope.
    """
    x = np.log10(np.asarray(tokens_per_step, dtype=float))
    y = np.log10(np.asarray(emergence_tokens, dtype=float))
    ok = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return None
    b, a = np.polyfit(x[ok], y[ok], 1)
    return float(b), float(a)
