"""The sweep's emergence statistics: arm and seed fields validated at load time, and
emergence.csv / emergence_stats.csv / kaplan_meier.png written from fabricated run folders
(metrics tables in the real schema; no model is trained)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.contracts import MECHANISM_LABELS, METRICS_SCHEMA
from hierlab.errors import ConfigError
from hierlab.sweep import load_sweep
from tiny import tiny_config

STEPS = [0, 1, 2, 3, 4, 5]
PER_STEP = 1000  # tokens per step


def _write(tmp_path, runs: list[dict], emergence: dict | None = None):
    (tmp_path / "base.yml").write_text(yaml.safe_dump(tiny_config()))
    spec = {"name": "arms", "base": "base.yml", "runs": runs}
    if emergence is not None:
        spec["emergence"] = emergence
    path = tmp_path / "sweep.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _row(step: int, probe: str, variant: str, metric: str, value: float, model: str = "pcfg",
         layer: int | None = None, head: int | None = None, k: int | None = None) -> dict:
    return {"source": "run", "model": model, "step": step, "tokens_seen": step * PER_STEP,
            "probe": probe, "variant": variant, "metric": metric, "layer": layer,
            "head": head, "k": k, "value": float(value), "n_samples": 4, "seed": 0}


def _fake_run(run_dir, labels: list[str], reference: list[float], prefix: list[float]) -> None:
    """metrics/mechanism.parquet and metrics/induction.parquet of one run, per checkpoint:
    the model's label (by its code), the reference score at k = 1 (and a k = 2 decoy that
    always passes) and prefix matching; an n-gram model's rows that must be ignored."""
    mech, ind = [], []
    for step, lab, ref, pm in zip(STEPS, labels, reference, prefix, strict=True):
        code = MECHANISM_LABELS.index(lab)
        mech.append(_row(step, "mechanism", "standard", "label_model", code, layer=1, head=0))
        mech.append(_row(step, "mechanism", "standard", "successor_best", 0.5, layer=1, head=0))
        mech.append(_row(step, "mechanism", "standard", "label_model",
                         MECHANISM_LABELS.index("content induction"), model="ngram"))
        ind.append(_row(step, "induction", "reference", "score", ref, k=1))
        ind.append(_row(step, "induction", "reference", "score", 0.9, k=2))
        ind.append(_row(step, "induction", "standard", "prefix_matching_max", pm))
        ind.append(_row(step, "induction", "standard", "prefix_matching_max", 0.9,
                        model="ngram"))
    (run_dir / "metrics").mkdir(parents=True)
    for name, rows in (("mechanism", mech), ("induction", ind)):
        table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
        pq.write_table(table, run_dir / "metrics" / f"{name}.parquet")


CI, NO = "content induction", "none"
ARMS = {
    # name: (arm, seed, labels, reference score, prefix matching)
    "f0": ("F", 0, [NO, NO, CI, CI, CI, CI], [0, 0, .4, .4, .4, .4], [0, 0, 0, .5, .5, .5]),
    "f1": ("F", 1, [NO, CI, NO, CI, CI, CI], [0, .4, .4, .4, .4, .4], [0, 0, .5, .5, .5, .5]),
    "f2": ("F", 2, [NO, NO, NO, CI, CI, CI], [0, 0, 0, .4, .4, .4], [0, 0, 0, 0, .5, .5]),
    "h0": ("H", 0, [NO, NO, NO, NO, CI, CI], [0, .4, .4, .4, .4, .4], [0, 0, 0, 0, 0, 0]),
    "h1": ("H", 1, [NO, NO, NO, NO, NO, NO], [0, .4, .4, .4, .4, .4], [0, 0, 0, 0, 0, 0]),
    "h2": ("H", 2, [NO, "positional copy", NO, NO, NO, CI], [0, .4, .4, .4, .4, .4],
           [0, 0, 0, 0, 0, .5]),
}


def test_sweep_writes_emergence_tables_and_kaplan_meier(tmp_path):
    runs = [{"name": n, "arm": a, "seed": s, "set": {"training.seed": s}}
            for n, (a, s, *_) in ARMS.items()]
    runs.append({"name": "h3", "arm": "H", "seed": 3, "set": {"training.seed": 3}})  # no data
    path = _write(tmp_path, runs, {"model": "pcfg", "bootstrap_resamples": 500})
    out = tmp_path / "out"
    for name, (_, _, labels, ref, pm) in ARMS.items():
        _fake_run(out / "runs" / name, labels, ref, pm)
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--summary-only"])
    assert res.exit_code == 0, res.output

    em = pd.read_csv(out / "emergence.csv").set_index("run")
    assert list(em.index) == [*ARMS, "h3"]
    assert em["t_star"].loc[list(ARMS)].tolist() == [2000, 3000, 3000, 4000, 5000, 5000]
    assert em["observed"].loc[list(ARMS)].tolist() == [True, True, True, True, False, True]
    assert em.loc["h1", "budget"] == 5000 and em.loc["h1", "final_label"] == NO
    assert em.loc["h3", "n_checkpoints"] == 0 and pd.isna(em.loc["h3", "t_star"])
    assert em["t_star_reference_score"].loc[["f0", "f1", "h0"]].tolist() == [2000, 1000, 1000]
    assert em["observed_prefix_matching"].loc[["f0", "h0", "h2"]].tolist() == [True, False,
                                                                                True]
    assert em["t_star_prefix_matching"].loc[["f0", "f2", "h2"]].tolist() == [3000, 4000, 5000]
    assert em.loc["h0", "log_ratio"] == pytest.approx(0.693147, abs=1e-6)  # log(4000/2000)
    assert em.loc["h1", "log_ratio_kind"] == "lower" and em.loc["f0", "log_ratio_kind"] == (
        "control")

    st = pd.read_csv(out / "emergence_stats.csv")
    assert list(st.columns[:3]) == ["criterion", "definition", "arm"]
    assert set(st["criterion"]) == {"label", "reference_score", "prefix_matching"}
    lab = st[st["criterion"] == "label"].set_index("arm")
    assert (lab.loc["F", "n"], lab.loc["F", "n_observed"]) == (3, 3)
    assert (lab.loc["H", "n"], lab.loc["H", "n_observed"]) == (3, 2)  # h3 has no data yet
    assert lab.loc["F", "km_median"] == 3000 and lab.loc["H", "km_median"] == 5000
    assert (lab.loc["H", "n_exact"], lab.loc["H", "n_lower"]) == (2, 1)
    assert 0 < lab.loc["H", "logrank_p"] < 1
    ref = st[st["criterion"] == "reference_score"].set_index("arm")
    assert ref.loc["H", "km_median"] == 1000  # the study's score says H is *earlier*
    assert "reference score (k=1) >= 0.3" in ref["definition"].iloc[0]

    km = pd.read_csv(out / "kaplan_meier.csv")
    assert {"criterion", "arm", "tokens", "fraction", "censored"} <= set(km.columns)
    f_label = km[(km["criterion"] == "label") & (km["arm"] == "F")]
    assert f_label["fraction"].max() == pytest.approx(1.0)
    assert (out / "kaplan_meier.png").stat().st_size > 10_000
    assert (out / "summary.csv").is_file()


def test_a_sweep_without_arms_writes_no_emergence_tables(tmp_path):
    path = _write(tmp_path, [{"name": "a", "set": {}}])
    out = tmp_path / "out"
    _fake_run(out / "runs" / "a", [NO] * 6, [0] * 6, [0] * 6)
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--summary-only"])
    assert res.exit_code == 0, res.output
    assert (out / "summary.csv").is_file() and not (out / "emergence.csv").exists()


def test_arms_and_seeds_are_validated_at_load_time(tmp_path):
    def runs(*specs):
        return [{"name": f"r{i}", **s, "set": {"corpora.ngram": None}}
                for i, s in enumerate(specs)]

    _, planned = load_sweep(_write(tmp_path, runs({"arm": "F", "seed": 0},
                                                  {"arm": "H", "seed": 0}, {})))
    assert [(r.arm, r.seed) for r in planned] == [("F", 0), ("H", 0), (None, None)]
    with pytest.raises(ConfigError, match="run 'r0': arm and seed go together"):
        load_sweep(_write(tmp_path, runs({"arm": "F"})))
    with pytest.raises(ConfigError, match="run 'r1': arm 'F' seed 0 is also run 'r0'"):
        load_sweep(_write(tmp_path, runs({"arm": "F", "seed": 0}, {"arm": "F", "seed": 0})))
    with pytest.raises(ConfigError, match=r"emergence\.control: 'F' is not an arm \(arms: H\)"):
        load_sweep(_write(tmp_path, runs({"arm": "H", "seed": 0})))
    with pytest.raises(ConfigError, match=r"emergence\.label: \['induction'\] is not a mechanism"):
        load_sweep(_write(tmp_path, runs({"arm": "F", "seed": 0}), {"label": "induction"}))
    with pytest.raises(ConfigError, match=r"emergence\.model 'x' is not one of its corpora"):
        load_sweep(_write(tmp_path, runs({"arm": "F", "seed": 0}), {"model": "x"}))
    two = [{"name": "r0", "arm": "F", "seed": 0, "set": {}}]
    with pytest.raises(ConfigError, match=r"run 'r0': emergence\.model: the run trains 2"):
        load_sweep(_write(tmp_path, two))
    with pytest.raises(ConfigError, match=r"runs\.0\.seed"):
        load_sweep(_write(tmp_path, runs({"arm": "F", "seed": -1})))
    with pytest.raises(ConfigError, match=r"runs\.0\.arm"):
        load_sweep(_write(tmp_path, runs({"arm": "F H", "seed": 0})))


def test_law_figure_draws_a_summary_without_trained_models(tmp_path):
    """Regression: a sweep summarised before any run trained has no rows; the empty
    ``emerged`` column (object dtype) selected columns instead of rows and the law figure
    failed with KeyError 'sqrt_bc', taking the summary down with it."""
    from hierlab.sweep.law_figure import law_figure

    paths, fit = law_figure(pd.DataFrame({"run": ["a"], "model": [None]}), tmp_path)
    assert fit is None and (tmp_path / "law_figure.png").stat().st_size > 0
    assert len(paths) == 3
