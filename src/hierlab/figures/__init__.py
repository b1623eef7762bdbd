"""Figures, claim checks and the HTML report, drawn from a run's tables only.

``make_figures(run_dir)`` reads the metrics tables and training logs (never a model) and
writes ``RUN/figures/``; ``evaluate_claims`` checks the reference study's claims on the same
tables and ``write_report`` bundles everything into ``RUN/report.html``. The heavy imports
are deferred, since :mod:`hierlab.config` imports :mod:`hierlab.figures.config` on every
command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierlab._lazy import lazy_getattr
from hierlab.figures.config import ClaimThresholds, FiguresConfig

if TYPE_CHECKING:  # pragma: no cover
    from hierlab.figures.api import make_figures
    from hierlab.figures.claims import evaluate_claims
    from hierlab.figures.data import RunData, load_run_data
    from hierlab.figures.report import write_report

__all__ = [
    "ClaimThresholds",
    "FiguresConfig",
    "RunData",
    "evaluate_claims",
    "load_run_data",
    "make_figures",
    "write_report",
]

__getattr__ = lazy_getattr(__name__, {
    "make_figures": "hierlab.figures.api",
    "evaluate_claims": "hierlab.figures.claims",
    "RunData": "hierlab.figures.data",
    "load_run_data": "hierlab.figures.data",
    "write_report": "hierlab.figures.report",
})
