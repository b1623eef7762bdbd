"""``hierlab sweep``: planning and validation (fast), and a tiny 2-run parallel sweep with
resume, refusal of a foreign run dir and the summary table and figure (slow)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.errors import ConfigError
from hierlab.sweep import load_sweep, run_sweep
from hierlab.sweep.spec import grid_run_name
from tiny import tiny_config


def _write(tmp_path, sweep: dict, base: dict | None = None):
    (tmp_path / "base.yml").write_text(yaml.safe_dump(base or tiny_config()))
    path = tmp_path / "sweep.yml"
    path.write_text(yaml.safe_dump({"base": "base.yml", **sweep}, sort_keys=False))
    return path


def test_grid_and_runs_plan_validated_configs(tmp_path):
    path = _write(tmp_path, {
        "name": "s", "set": {"training.max_tokens": 4096},
        "grid": {"training.lr": [0.001, 0.003], "model.num_heads": [1, 2]},
        "runs": [{"name": "ngram-only", "set": {"corpora.pcfg": None}}],
    })
    _, runs = load_sweep(path)
    names = [r.name for r in runs]
    assert names[:2] == ["lr=0.001+num_heads=1", "lr=0.001+num_heads=2"]
    assert len(names) == 5 and names[-1] == "ngram-only"
    assert all(r.config.training.max_tokens == 4096 for r in runs)
    assert runs[1].config.model.num_heads == 2 and runs[2].config.training.lr == 0.003
    assert set(runs[-1].config.corpora) == {"ngram"}
    assert runs[0].config.name == names[0]


def test_grid_names_use_the_shortest_unique_tail():
    name = grid_run_name({"corpora.pcfg.zipf_exponent": 1.5,
                          "corpora.ngram.vocab_size": 40, "corpora.pcfg.vocab_size": 8})
    assert name == "zipf_exponent=1.5+ngram.vocab_size=40+pcfg.vocab_size=8"


def test_invalid_key_names_the_run_and_field(tmp_path):
    path = _write(tmp_path, {"runs": [{"name": "ok", "set": {}},
                                      {"name": "typo", "set": {"training.lrr": 0.1}}]})
    with pytest.raises(ConfigError, match=r"run 'typo'.*training\.lrr.*unknown field"):
        load_sweep(path)
    path = _write(tmp_path, {"runs": [{"name": "bad", "set": {"training.lr.x": 1}}]})
    with pytest.raises(ConfigError, match=r"run 'bad'.*training\.lr is not a section"):
        load_sweep(path)
    path = _write(tmp_path, {"runs": [{"name": "bad/name", "set": {}}]})
    with pytest.raises(ConfigError, match="filesystem-safe"):
        load_sweep(path)


def test_foreign_run_dir_is_refused_by_name(tmp_path):
    path = _write(tmp_path, {"runs": [{"name": "a", "set": {}}]})
    other = tiny_config(training={"lr": 0.01})
    d = tmp_path / "out" / "runs" / "a"
    d.mkdir(parents=True)
    (d / "config.yml").write_text(yaml.safe_dump({**other, "name": "a"}))
    with pytest.raises(ConfigError, match="run 'a':.*different config"):
        run_sweep(path, tmp_path / "out", progress=False)
    assert sorted(p.name for p in d.iterdir()) == ["config.yml"]


@pytest.mark.slow
def test_sweep_runs_in_parallel_resumes_and_summarises(tmp_path, monkeypatch):
    path = _write(tmp_path, {"name": "t", "parallel": 2,
                             "grid": {"corpora.pcfg.zipf_exponent": [1.2, 1.5]}})
    out = tmp_path / "out"
    # first pass: one run dies when its probe stage starts (as a kill there would), the
    # other finishes; the summary marks the failure
    monkeypatch.setenv("HIERLAB_SWEEP_FAIL", "zipf_exponent=1.5@probe")
    table, results = run_sweep(path, out, cores=2, progress=False)
    assert {r.name: r.status for r in results} == {"zipf_exponent=1.2": "done",
                                                   "zipf_exponent=1.5": "failed"}
    assert "HIERLAB_SWEEP_FAIL" in (out / "runs" / "zipf_exponent=1.5" / "log.txt").read_text()
    assert set(table.loc[table["run"] == "zipf_exponent=1.5", "status"]) == {"failed"}
    killed = out / "runs" / "zipf_exponent=1.5"
    assert not (killed / "report.html").exists()
    trained = (killed / "models" / "pcfg" / "run.json").stat().st_mtime_ns
    monkeypatch.delenv("HIERLAB_SWEEP_FAIL")
    # second pass (CLI): the finished run is skipped, the killed one resumes (no retraining)
    done = out / "runs" / "zipf_exponent=1.2"
    mtime = (done / "report.html").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--parallel", "2"])
    assert res.exit_code == 0, res.output
    assert (done / "report.html").stat().st_mtime_ns == mtime
    assert (killed / "models" / "pcfg" / "run.json").stat().st_mtime_ns == trained
    assert "skipped  zipf_exponent=1.2" in res.output and "done     zipf_exponent=1.5" in res.output
    for name in ("zipf_exponent=1.2", "zipf_exponent=1.5"):
        d = out / "runs" / name
        assert (d / "report.html").is_file() and (d / "log.txt").is_file()
        assert yaml.safe_load((d / "config.yml").read_text())["name"] == name
    table = pd.read_parquet(out / "summary.parquet")
    assert pd.read_csv(out / "summary.csv").shape == table.shape
    assert len(table) == 4 and set(table["model"]) == {"pcfg", "ngram"}
    assert set(table["status"]) == {"skipped", "done"}
    assert sorted(table["corpora.pcfg.zipf_exponent"].unique()) == [1.2, 1.5]
    for col in ("final_test_loss", "no_context", "latent_known", "gap_recovered",
                "score:max", "score:final", "score:phase_step", "score:rise_steps",
                "score:rise_fraction", "prefix_matching_max:max", "previous_token_max:max",
                "prefix_matching_indist_max:max", "score_indist:max", "icl_score",
                "fv_gain", "hydra_share", "train_seconds", "entropy_rate"):
        assert col in table, col
    pcfg = table[table["model"] == "pcfg"]
    assert pcfg["final_test_loss"].notna().all() and pcfg["score:max"].notna().all()
    assert pcfg["latent_known"].notna().all() and pcfg["train_seconds"].gt(0).all()
    assert table[table["model"] == "ngram"]["entropy_rate"].notna().all()
    for ext in ("png", "svg", "csv"):
        assert (out / f"summary_figure.{ext}").stat().st_size > 0
    # --summary-only rewrites the table without running anything
    (out / "summary.csv").unlink()
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--summary-only"])
    assert res.exit_code == 0, res.output
    assert (out / "summary.csv").is_file()


def test_shipped_example_sweep_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "sweep-example.yml"
    sweep, runs = load_sweep(path)
    assert sweep.parallel == 2 and runs[-1].name == "ngram-control"
    assert "pcfg" not in runs[-1].config.corpora
    assert all(r.config.training.max_tokens == 2_000_000 for r in runs)


def test_rise_width_is_measured_from_the_first_value() -> None:
    """Regression: the 10 % point was taken of the max, so a score starting at 0.04 (an
    untrained model) read a rise width of 0; now it is C5's 10->90 % of the rise."""
    import pandas as pd

    from hierlab.sweep.summary import rise_width

    s = pd.Series([0.04, 0.04, 0.05, 0.30, 0.50, 0.52], index=[0, 10, 20, 30, 40, 100])
    steps, frac = rise_width(s)
    assert steps == 10.0 and frac == 0.1  # 10 % of the rise reached at step 30, 90 % at 40
    flat = pd.Series([0.04, 0.03, 0.02], index=[0, 1, 2])
    assert all(v != v for v in rise_width(flat))  # NaN: never rises
