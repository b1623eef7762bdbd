"""``hierlab.load_run``: config, public metrics tables, checkpoints as HookedModel."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import hierlab
from figures_fixtures import make_synthetic_run
from hierlab.errors import DataError
from hierlab.notebook import METRIC_COLUMNS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_load_run_tables_and_config(tmp_path: Path) -> None:
    from hierlab.probes.runner import SCHEMA

    assert list(METRIC_COLUMNS) == SCHEMA.names
    run_dir = make_synthetic_run(tmp_path)
    t = pd.read_parquet(run_dir / "metrics" / "hydra.parquet")
    t["_internal"] = 1  # a column that is not part of the public schema
    t.to_parquet(run_dir / "metrics" / "hydra.parquet")
    run = hierlab.load_run(run_dir)
    assert isinstance(run, hierlab.Run)
    assert run.config is not None and run.config.name == "synthetic"
    assert set(run.metrics) == {"induction", "fv", "hydra", "structure"}
    for table in run.metrics.values():
        assert list(table.columns) == list(METRIC_COLUMNS)
    assert set(run.losses) == {"ngram", "pcfg"} and "train_loss" in run.losses["pcfg"]
    with pytest.raises(DataError):
        hierlab.load_run(tmp_path / "missing")


def test_load_checkpoint_as_hooked_model(tmp_path: Path) -> None:
    from probes_helpers import make_run

    run = hierlab.load_run(make_run(tmp_path, corrupt=None))
    assert run.models == ["pcfg"] and run.steps() == [10, 20]
    hm = run.load_checkpoint(20)
    assert type(hm).__name__ == "HookedModel"
    ids = torch.randint(0, 1000, (1, 8))
    _, cache = hm.run_with_cache(ids, ["blocks.0.hook_resid_post"])
    assert cache["blocks.0.hook_resid_post"].shape == (1, 8, hm.d_model)
    with pytest.raises(DataError, match="no checkpoint at step 15"):
        run.load_checkpoint(15)
    with pytest.raises(DataError, match="no model"):
        run.load_checkpoint(10, model="ngram")


def test_docs_example_reproduces_fig3_standard(tmp_path: Path, monkeypatch) -> None:
    from hierlab.figures import fig3_induction
    from hierlab.figures.data import load_run_data

    run_dir = make_synthetic_run(tmp_path)
    out = tmp_path / "fig3.png"
    monkeypatch.setattr(sys, "argv", ["example_fig3.py", str(run_dir), str(out)])
    runpy.run_path(str(DOCS / "example_fig3.py"), run_name="__main__")
    assert out.is_file() and out.stat().st_size > 1000
    mine = pd.read_csv(out.with_suffix(".csv"))
    ref = fig3_induction.build_table(load_run_data(run_dir), "standard")
    for model in ("ngram", "pcfg"):
        for series in ("prefix_matching_max", "duplicate_token_max"):
            a = mine[(mine.model == model) & (mine.series == series)].sort_values("step")
            b = ref[(ref.model == model) & (ref.series == series)].sort_values("step")
            assert len(a) and a.step.tolist() == b.step.tolist()
            assert a.value.tolist() == pytest.approx(b.value.tolist())
