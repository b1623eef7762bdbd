"""The sweep's emergence statistics: arm and seed fields validated at load time, and
emergence.csv / emergence_stats.csv / kaplan_meier.png written from fabricated run folders
(metrics tables in the real schema; no model is trained)."""

from __future__ import annotations

import pandas as pd


def test_law_figure_draws_a_summary_without_trained_models(tmp_path):
    """Regression: a sweep summarised before any run trained has no rows; the empty
    ``emerged`` column (object dtype) selected columns instead of rows and the law figure
    failed with KeyError 'sqrt_bc', taking the summary down with it."""
    from hierlab.sweep.law_figure import law_figure

    paths, fit = law_figure(pd.DataFrame({"run": ["a"], "model": [None]}), tmp_path)
    assert fit is None and (tmp_path / "law_figure.png").stat().st_size > 0
    assert len(paths) == 3
