"""End to end: ``hierlab run`` on a micro config produces every figure and the report."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from typer.testing import CliRunner

from hierlab.cli import app

MICRO = {
    "name": "micro",
    "corpora": {
        "pcfg": {
            "kind": "pcfg",
            "lexicon": {"subjects": 8, "verbs": 8, "objects": 8, "connectors": 4},
            "zipf_exponent": 1.5,
            "sentences_per_paragraph": 2,
            "repetitions": 2,
            "train_documents": 150,
            "test_documents": 10,
            "dedup": False,
        },
        "ngram": {
            "kind": "ngram",
            "vocab_size": 40,
            "num_contexts": 40,
            "min_length": 5,
            "max_length": 15,
            "train_sentences": 800,
            "test_sentences": 50,
        },
    },
    "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "context_length": 64},
    "training": {
        "batch_size": 8,
        "micro_batch_size": 8,
        "lr": 0.003,
        "schedule": "cosine",
        "warmup_steps": 2,
        "max_tokens": 8192,
        "checkpoints": {"schedule": "log", "count": 3},
        "log_every": 2,
        "eval_tokens": 2048,
        "device": "cpu",
    },
    "probes": {
        "device": "cpu",
        "induction": {"samples": 2, "n": 16, "k_max": 3, "id_range": [0, 28],
                      "position_windows": 2, "indist_samples": 2,
                      "icl_early_band": [4, 8], "icl_late_band": [40, 48]},
        "fv": {"mean_prompts": 4, "cie_prompts": 2, "eval_prompts": 4, "n_shots": 2,
               "reference_pairs": 2, "nl_tasks": []},
        "hydra": {"max_samples": 2, "standard_samples": 2, "standard_length": None},
        "structure": {"samples": 4},
    },
}


def test_run_produces_every_figure_and_the_report(tmp_path):
    cfg = tmp_path / "micro.yml"
    cfg.write_text(yaml.safe_dump(MICRO))
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
