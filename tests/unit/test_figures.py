"""Figures stage: every figure and its CSV are written, and the CSV holds the table's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from figures_fixtures import (
    NGRAM_FLOORS,
    OLMO,
    PCFG_FLOORS,
    make_external_run,
    make_olmo_loss_csv,
    make_synthetic_run,
)
from hierlab.errors import DataError
from hierlab.figures import FiguresConfig, load_run_data, make_figures
from hierlab.figures.report import write_report
from hierlab.figures.style import fmt_step

FAST = FiguresConfig(formats=["png"], dpi=50)
VARIANT_FIGS = ("fig3_induction", "fig4_function_vectors", "fig5a_hydra", "fig_structure")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One synthetic run plus an external sweep, drawn once for the whole module."""
    root = tmp_path_factory.mktemp("figs")
    run = make_synthetic_run(root)
    ext = make_external_run(root)
    olmo = make_olmo_loss_csv(root)
    paths = make_figures(run, FiguresConfig(dpi=50), olmo_loss=olmo, extra_runs=[ext])
    return {"run": run, "ext": ext, "olmo": olmo, "paths": paths}


def _csv(drawn: dict, name: str) -> pd.DataFrame:
    return pd.read_csv(drawn["run"] / "figures" / f"{name}.csv")


def _metrics(run: Path, probe: str) -> pd.DataFrame:
    return pd.read_parquet(run / "metrics" / f"{probe}.parquet")


def test_every_figure_written_in_every_format(drawn: dict) -> None:
    fig_dir = drawn["run"] / "figures"
    names = ["fig2_loss"] + [f"{f}_{v}" for f in VARIANT_FIGS for v in ("reference", "standard")]
    for name in names:
        for ext in ("png", "svg", "csv"):
            path = fig_dir / f"{name}.{ext}"
            assert path in drawn["paths"], path
            assert path.stat().st_size > 0
    assert (fig_dir / "fig2_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (fig_dir / "fig3_induction_reference.svg").read_text()[:2000]


def test_loss_csv_holds_loss_floors_and_test_loss(drawn: dict) -> None:
    t = _csv(drawn, "fig2_loss")
    loss = pd.read_csv(drawn["run"] / "models" / "ngram" / "loss.csv")
    train = t[(t["panel"] == "ngram") & (t["series"] == "train_loss")]
    np.testing.assert_allclose(train["value"], loss["train_loss"])
    np.testing.assert_array_equal(train["step"], loss["step"])
    ev = pd.read_csv(drawn["run"] / "models" / "pcfg" / "eval.csv")
    test = t[(t["panel"] == "pcfg") & (t["series"] == "test_loss")]
    np.testing.assert_allclose(test["value"], ev["test_loss"])
    floors = t[t["series"].str.startswith("floor:")]
    got = {(r.panel, r.series): r.value for r in floors.itertuples()}
    assert got == {
        ("ngram", "floor:entropy_rate"): NGRAM_FLOORS["entropy_rate"],
        ("pcfg", "floor:no_context"): PCFG_FLOORS["no_context"],
        ("pcfg", "floor:latent_known"): PCFG_FLOORS["latent_known"],
    }
    olmo = t[t["panel"] == "external"]
    raw = pd.read_csv(drawn["olmo"])
    assert len(olmo) == raw["step"].nunique()  # de-duplicated on step
    assert olmo["step"].is_monotonic_increasing


def test_induction_csv_numbers(drawn: dict) -> None:
    ref = _csv(drawn, "fig3_induction_reference")
    m = _metrics(drawn["run"], "induction")
    want = m[(m["model"] == "pcfg") & (m["metric"] == "score") & (m["k"] == 3)]
    got = ref[(ref["panel"] == "pcfg") & (ref["k"] == 3)].sort_values("step")
    np.testing.assert_allclose(got["value"], want.sort_values("step")["value"])
    assert set(ref["k"].dropna().astype(int)) == set(range(1, 11))
    # the external panel uses the OLMo evaluator's max-then-mean order when present
    ext = ref[ref["panel"] == "external"]
    assert set(ext["model"]) == {OLMO} and set(ext["series"]) == {"score_max_then_mean"}

    std = _csv(drawn, "fig3_induction_standard")
    pm = m[(m["model"] == "pcfg") & (m["metric"] == "prefix_matching_max")].sort_values("step")
    got = std[(std["panel"] == "pcfg") & (std["series"] == "prefix_matching_max")]
    np.testing.assert_allclose(got["value"], pm["value"])
    dup = m[(m["model"] == "ngram") & (m["metric"] == "duplicate_token")]
    want = dup.groupby("step")["value"].max().to_numpy()
    got = std[(std["panel"] == "ngram") & (std["series"] == "duplicate_token_max")]
    np.testing.assert_allclose(got["value"], want)


def test_fv_csv_numbers(drawn: dict) -> None:
    m = _metrics(drawn["run"], "fv")
    ref = _csv(drawn, "fig4_function_vectors_reference")
    want = m[m["metric"] == "fv_improvement"].sort_values(["step", "layer"])
    np.testing.assert_allclose(ref.sort_values(["step", "layer"])["value"], want["value"])
    std = _csv(drawn, "fig4_function_vectors_standard")
    last = std[std["section"] == "last_checkpoint"]
    assert set(last["step"]) == {m["step"].max()}
    acc = last[(last["series"] == "fv_accuracy") & (last["task"] == "copy_object")]
    want = m[(m["metric"] == "fv_accuracy:copy_object") & (m["step"] == m["step"].max())]
    np.testing.assert_allclose(
        acc.sort_values("layer")["value"], want.sort_values("layer")["value"]
    )
    chance = last[(last["series"] == "chance") & (last["task"] == "next_verb")]["value"]
    assert chance.tolist() == pytest.approx([1 / 300])
    assert {"zero_shot_accuracy", "icl_accuracy"} <= set(last["series"])


def test_hydra_csv_numbers(drawn: dict) -> None:
    ref = _csv(drawn, "fig5a_hydra_reference")
    m = _metrics(drawn["run"], "hydra")
    want = m[(m["model"] == "pcfg") & (m["metric"] == "drop") & (m["k"] == 1)]
    got = ref[ref["panel"] == "pcfg"].sort_values(["step", "layer"])
    np.testing.assert_allclose(got["value"], want.sort_values(["step", "layer"])["value"])
    np.testing.assert_allclose(got["plotted"], np.maximum(0, -got["value"]))
    assert (ref.loc[ref["panel"] == "ngram", "plotted"] == 0).all()  # blank, as in the paper
    assert set(got["layer"]) == {1, 2, 3}  # layer numbers, k=1 starts at layer 1
    assert set(ref["panel"]) == {"ngram", "pcfg", "external"}
    std = _csv(drawn, "fig5a_hydra_standard")
    want = m[(m["model"] == "ngram") & (m["metric"] == "compensation_ratio")]
    got = std[std["panel"] == "ngram"].sort_values(["step", "layer"])
    np.testing.assert_allclose(got["value"], want.sort_values(["step", "layer"])["value"])


def test_structure_csv_numbers(drawn: dict) -> None:
    t = _csv(drawn, "fig_structure_reference")
    m = _metrics(drawn["run"], "structure")
    want = m[(m["variant"] == "reference") & (m["metric"] == "verb_to_object")]
    got = t[t["series"] == "verb_to_object"].sort_values("step")
    np.testing.assert_allclose(got["value"], want.sort_values("step")["value"])
    assert set(t["series"]) == {"subject_to_verb", "verb_to_object", "connector_to_subject"}


def test_missing_data_panels_do_not_crash(tmp_path: Path) -> None:
    # only induction, only the PCFG corpus, no external model, no fv/hydra/structure tables
    run = make_synthetic_run(tmp_path, probes=("induction",), corpora=("pcfg",))
    paths = make_figures(run, FAST)
    names = {p.name for p in paths}
    assert "fig5a_hydra_reference.png" in names and "fig4_function_vectors_standard.png" in names
    assert pd.read_csv(run / "figures" / "fig5a_hydra_reference.csv").empty
    fig3 = pd.read_csv(run / "figures" / "fig3_induction_reference.csv")
    assert set(fig3["panel"]) == {"pcfg"}


def test_loss_only_run_draws(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, probes=())
    assert not list((run / "metrics").glob("*.parquet"))
    paths = make_figures(run, FAST)
    assert (run / "figures" / "fig2_loss.png") in paths


def test_user_errors_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such run directory"):
        make_figures(tmp_path / "nope", FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing to draw"):
        make_figures(tmp_path / "empty", FAST)
    run = make_synthetic_run(tmp_path, probes=("induction",))
    with pytest.raises(DataError, match="extra run"):
        make_figures(run, FAST, extra_runs=[tmp_path / "missing"])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="step"):
        make_figures(run, FAST, olmo_loss=bad)
    pd.DataFrame({"model": ["x"]}).to_parquet(run / "metrics" / "broken.parquet")
    with pytest.raises(DataError, match="broken.parquet"):
        make_figures(run, FAST)


def test_panel_assignment_uses_run_json_kind(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, probes=("induction",))
    # rename the PCFG model dir: the kind comes from run.json, not from the name
    info = json.loads((run / "models" / "pcfg" / "run.json").read_text())
    assert info["kind"] == "pcfg"
    data = load_run_data(run, extra_runs=[make_external_run(tmp_path)])
    assert data.panel("pcfg").model == "pcfg"
    assert data.panel("ngram").model == "ngram"
    assert data.panel("external").model == OLMO
    assert data.title("external") == OLMO
    # a second hierlab run merged in: the main run's models keep the panels
    other = make_synthetic_run(tmp_path / "other", probes=("induction",))
    data = load_run_data(run, extra_runs=[other])
    assert data.panel("pcfg").run_dir == run.resolve()
    assert len([m for m in data.models.values() if m.kind == "pcfg"]) == 2


def test_step_labels() -> None:
    assert [fmt_step(x) for x in (0, 500, 1500, 12000, 1_200_000)] == [
        "0",
        "500",
        "1.5k",
        "12k",
        "1.2M",
    ]
    assert fmt_step(math.nan) == ""


def test_report_embeds_figures_and_claims(drawn: dict) -> None:
    path = write_report(drawn["run"], extra_runs=[drawn["ext"]], timings={"figures": 1.25})
    text = path.read_text()
    # 4 x 2 variants, fig2, fig_in_context, fig3_mechanism
    assert text.count("data:image/png;base64,") == 11
    for claim in ("C1", "C5", "C7", "C10"):
        assert f"<td>{claim}</td>" in text
    assert "reference" in text and "standard" in text
    assert "PASS" in text
    assert "name: synthetic" in text  # config.yml
    assert "42.0 s" in text and "1.2 s" in text  # timings.json + extra
    assert "transformers" in text and "python" in text
    assert (drawn["run"] / "claims.csv").is_file()


def test_cli_figures(tmp_path: Path) -> None:
    from hierlab.cli import app

    run = make_synthetic_run(tmp_path)
    (run / "config.yml").write_text("figures:\n  formats: [png]\n  dpi: 50\n")
    olmo = make_olmo_loss_csv(tmp_path)
    res = CliRunner().invoke(
        app,
        [
            "figures",
            str(run),
            "--olmo-loss",
            str(olmo),
            "--extra-run",
            str(make_external_run(tmp_path)),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "C5" in res.output and "report:" in res.output
    assert (run / "report.html").is_file() and (run / "claims.csv").is_file()
    assert not list((run / "figures").glob("*.svg"))  # the run config's formats are honoured
    claims = pd.read_csv(run / "claims.csv")
    assert set(claims["variant"]) == {"reference", "standard"}

    res = CliRunner().invoke(app, ["figures", str(tmp_path / "missing")])
    assert res.exit_code == 1
    assert "no such run directory" in res.output


def test_cli_no_report_and_help(tmp_path: Path) -> None:
    from hierlab.cli import app

    run = make_synthetic_run(tmp_path, probes=("induction", "hydra"))
    (run / "config.yml").write_text("figures:\n  formats: [png]\n  dpi: 50\n")
    res = CliRunner().invoke(app, ["figures", str(run), "--no-report"])
    assert res.exit_code == 0, res.output
    assert not (run / "report.html").exists()
    help_text = CliRunner().invoke(app, ["figures", "--help"]).output
    for opt in ("--olmo-loss", "--extra-run", "--no-report"):
        assert opt in help_text
