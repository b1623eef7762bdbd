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


def test_each_corpus_trains_and_probes_with_its_own_settings(tmp_path, monkeypatch):
    """per_corpus: the n-gram model has its own context, token budget and induction length;
    both models' rows sit in one table, and a second run probes nothing again."""
    from hierlab import pipeline
    from hierlab.probes import induction
    from hierlab.probes.runner import probe_hash
    from tiny import tiny_experiment

    own = {"model": {"context_length": 32},
           "training": {"max_tokens": 2048, "checkpoints": {"steps": [2]}},
           "probes": {"induction": {"n": 8, "icl_early_band": [4, 8],
                                    "icl_late_band": [20, 24]}}}
    cfg = tiny_experiment(  # two checkpoints a model and one probe keep it short
        per_corpus={"ngram": own}, probes={"probes": ["induction"]},
        training={"max_tokens": 4096, "checkpoints": {"schedule": "list", "steps": [0]}})
    lengths: list[tuple[int, int]] = []  # (the model's context, the prompts' half length)
    real = induction.attention_scores

    def spy(model, tokens, half_length, *args, **kwargs):
        lengths.append((model.config.max_position_embeddings, half_length))
        return real(model, tokens, half_length, *args, **kwargs)

    monkeypatch.setattr(induction, "attention_scores", spy)
    run_dir = tmp_path / "run"
    pipeline.run(cfg, run_dir, stages=("corpus", "train", "probe"), device="cpu")

    # 4096 tokens of 8 x 64 and 2048 of 8 x 32: 8 steps each, checkpointed at their own steps
    for name, ctx, steps in (("pcfg", 64, [0, 8]), ("ngram", 32, [2, 8])):
        model_dir = run_dir / "models" / name
        ckpts = sorted(model_dir.glob("checkpoints/step-*"))
        assert [int(d.name[5:]) for d in ckpts] == steps, name
        config = json.loads((ckpts[-1] / "config.json").read_text())
        assert config["max_position_embeddings"] == ctx, name
        assert json.loads((ckpts[-1] / "state.json").read_text())["tokens_seen"] == 8 * 8 * ctx
    # the random-token prompts: half length 16 on the 64-token model, 8 on the 32-token one
    assert {(64, 16), (32, 8)} <= set(lengths)
    assert all(2 * n <= ctx for ctx, n in lengths)
    table = pd.read_parquet(run_dir / "metrics" / "induction.parquet")
    assert set(table["model"]) == {"pcfg", "ngram"}
    assert set(table["variant"]) == {"reference", "standard"}
    parts = run_dir / "metrics" / ".parts" / "induction"
    hashes = {name: {p.parent.name for p in parts.rglob("*.parquet")
                     if name in pd.read_parquet(p)["model"].unique()}
              for name in ("pcfg", "ngram")}
    assert hashes == {"pcfg": {probe_hash(cfg.probes, "induction")},
                      "ngram": {probe_hash(cfg.for_corpus("ngram").probes, "induction")}}

    # a second run trains and probes nothing: the checkpoints and the table stay as they are
    ckpt = next((run_dir / "models/ngram/checkpoints").glob("step-*/model.safetensors"))
    mtime = ckpt.stat().st_mtime_ns
    lengths.clear()
    pipeline.run(cfg, run_dir, stages=("corpus", "train", "probe"), device="cpu")
    assert lengths == [] and ckpt.stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(table,
                                  pd.read_parquet(run_dir / "metrics" / "induction.parquet"))
