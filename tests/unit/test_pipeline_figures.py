"""``hierlab run`` and ``hierlab figures`` share one orchestrator that honours figures.claims."""

from __future__ import annotations

import pandas as pd
import yaml
from typer.testing import CliRunner

from figures_fixtures import make_synthetic_run
from hierlab import pipeline
from hierlab.cli import app
from hierlab.config import load_config


def _c4(run_dir) -> pd.Series:
    claims = pd.read_csv(run_dir / "claims.csv")
    return claims[claims["claim"].eq("C4")].set_index("variant").loc["reference"]


def test_pipeline_run_figures_stage_uses_config_claim_thresholds(tmp_path):
    run_dir = make_synthetic_run(tmp_path)
    cfg = load_config(None)
    pipeline.run(cfg, run_dir, stages=("figures",))
    default = _c4(run_dir)
    assert default["verdict"] == "PASS"  # the synthetic n-gram induction stays low

    cfg.figures.claims.c4_max_score = 1e-6
    report = pipeline.run(cfg, run_dir, stages=("figures",))
    strict = _c4(run_dir)
    assert strict["verdict"] == "FAIL"
    assert strict["threshold"] != default["threshold"]
    assert "1e-06" in strict["threshold"] or "0.000001" in strict["threshold"]
    assert report == run_dir / "report.html" and report.is_file()


def test_figures_cli_uses_run_config_claim_thresholds(tmp_path):
    run_dir = make_synthetic_run(tmp_path)
    res = CliRunner().invoke(app, ["figures", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert _c4(run_dir)["verdict"] == "PASS"

    (run_dir / "config.yml").write_text(
        yaml.safe_dump({"figures": {"claims": {"c4_max_score": 1e-6}}})
    )
    res = CliRunner().invoke(app, ["figures", str(run_dir), "--no-report"])
    assert res.exit_code == 0, res.output
    assert _c4(run_dir)["verdict"] == "FAIL"
