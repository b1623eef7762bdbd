"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# --- figures stage: synthetic run directories (tables only, no models) ----------------------
from figures_fixtures import make_synthetic_run


@pytest.fixture
def synthetic_run_dir(tmp_path: Path) -> Path:
    """A plausible run dir: n-gram + PCFG loss/eval/run.json and four metrics tables."""
    return make_synthetic_run(tmp_path)
