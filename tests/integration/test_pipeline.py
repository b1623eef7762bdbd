"""End to end: ``hierlab run`` on a micro config produces every figure and the report."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from hierlab.cli import app
from tiny import write_tiny_config

#: the tests' tiny config with two layers (an induction head needs them) and a longer eval
MICRO = {"name": "micro", "model": {"num_layers": 2}, "training": {"eval_tokens": 2048},
         "probes": {"induction": {"k_max": 3}}}


def test_run_produces_every_figure_and_the_report(tmp_path):
    cfg = write_tiny_config(tmp_path / "micro.yml", **MICRO)
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == f"report: {run_dir / 'report.html'}"
    for probe in ("induction", "fv", "hydra", "structure"):
        table = pd.read_parquet(run_dir / "metrics" / f"{probe}.parquet")
        assert set(table["variant"]) == {"reference", "standard"}
        assert set(table["model"]) >= ({"pcfg"} if probe in ("fv", "structure")
                                       else {"pcfg", "ngram"})
    figs = {p.name for p in (run_dir / "figures").iterdir()}
    for stem in ("fig2_loss", "fig3_induction_reference", "fig3_induction_standard",
                 "fig4_function_vectors_reference", "fig4_function_vectors_standard",
                 "fig5a_hydra_reference", "fig5a_hydra_standard"):
        assert {f"{stem}.png", f"{stem}.svg", f"{stem}.csv"} <= figs, stem
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "C7" in html
    claims = pd.read_csv(run_dir / "claims.csv")
    assert {"C1", "C2", "C4", "C5", "C7", "C8"} <= set(claims["claim"])
    timings = json.loads((run_dir / "timings.json").read_text())
    assert set(timings) == {"corpus", "train", "probe", "figures"}

    # a second run skips every finished stage and leaves the checkpoints untouched
    ckpt = next((run_dir / "models/pcfg/checkpoints").glob("step-*/model.safetensors"))
    mtime = ckpt.stat().st_mtime_ns
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert ckpt.stat().st_mtime_ns == mtime
