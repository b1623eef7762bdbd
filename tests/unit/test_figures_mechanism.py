"""Fig. 3's mechanism panel and the sweep's law figure, from tables alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from figures_fixtures import rows, to_table
from hierlab.contracts import MECHANISM_LABELS
from hierlab.figures import FiguresConfig, RunData, fig3_mechanism
from hierlab.law import fit_law, predicted_tokens
from hierlab.sweep.law_figure import law_figure, law_table

KINDS = {"pcfg": "pcfg", "ngram": "ngram"}


def _mechanism(model: str, labels: list[str]) -> list[dict]:
    recs = []
    for i, lab in enumerate(labels):
        step = 100 * (i + 1)
        for metric, v in (("successor_best", 0.1 * i), ("content_share_best", 0.9),
                          ("causal_share_best", 0.5)):
            recs.append(rows(model, "mechanism", "standard", metric, step, v, layer=1, head=2))
        recs.append(rows(model, "mechanism", "standard", "label_model", step,
                         MECHANISM_LABELS.index(lab), layer=1, head=2))
    return recs


def test_mechanism_panel_writes_labels_and_the_law_step(tmp_path: Path) -> None:
    labs = ["none", "previous-token", "positional copy", "content induction"]
    data = RunData.from_tables(to_table(_mechanism("pcfg", labs)), kinds=KINDS)
    paths = fig3_mechanism.draw(data, tmp_path, FiguresConfig(formats=["png"]))
    assert {p.suffix for p in paths} == {".png", ".csv"}
    t = pd.read_csv(tmp_path / "fig3_mechanism.csv")
    assert t[t["series"] == "label_model"]["label"].tolist() == labs
    # tokens_seen = 1024 per step in the fixture: the law's point in steps
    assert fig3_mechanism.predicted_step(fig3_mechanism.build_table(data)) == pytest.approx(
        predicted_tokens(1024) / 1024)


def test_law_fit_recovers_an_exponent(tmp_path: Path) -> None:
    bc = [512.0, 1024.0, 2048.0, 4096.0]
    n = [3e5 * x**0.7 for x in bc]
    e, a = fit_law(bc, n)
    assert e == pytest.approx(0.7) and a == pytest.approx(5.0 + 0.4771, abs=1e-3)
    df = pd.DataFrame({"run": list("abcde"), "model": "pcfg",
                       "tokens_per_step": bc + [512.0],
                       "content_induction_tokens": n + [float("nan")],
                       "final_tokens": [1e7] * 5})
    t = law_table(df)
    assert t["emerged"].tolist() == [True] * 4 + [False]
    _, fit = law_figure(df, tmp_path)
    assert fit is not None and fit[0] == pytest.approx(0.7)
    assert (tmp_path / "law_figure.png").exists()
    assert fit_law([512.0], [1e6]) is None


def test_a_copy_design_model_gets_its_own_panel(tmp_path: Path) -> None:
    """A run with a copy-design model draws it as a third mechanism panel and a fourth
    Fig. 3 panel (after the PCFG's); a run without one keeps the study's panels."""
    from hierlab.figures import fig3_induction

    kinds = {**KINDS, "copy": "copy"}
    recs = _mechanism("pcfg", ["positional copy"] * 3) + _mechanism(
        "copy", ["local content copy", "content induction", "content induction"])
    recs += [rows("copy", "induction", "standard", "prefix_matching_max", 100 * i, 0.3 * i)
             for i in (1, 2, 3)]
    data = RunData.from_tables(to_table(recs), kinds=kinds)
    assert data.figure_panels(fig3_mechanism.PANELS) == ["ngram", "pcfg", "copy"]
    assert data.figure_panels() == ["ngram", "pcfg", "copy", "external"]
    assert data.title("copy") == "Copy design"
    fig3_mechanism.draw(data, tmp_path, FiguresConfig(formats=["png"]))
    t = pd.read_csv(tmp_path / "fig3_mechanism.csv")
    assert t[(t["panel"] == "copy") & (t["series"] == "label_model")]["label"].tolist() == [
        "local content copy", "content induction", "content induction"]
    fig3_induction.draw(data, "standard", tmp_path, FiguresConfig(formats=["png"]))
    std = pd.read_csv(tmp_path / "fig3_induction_standard.csv")
    assert set(std["panel"]) == {"copy"}
    without = RunData.from_tables(to_table(_mechanism("pcfg", ["none"])), kinds=KINDS)
    assert without.figure_panels(fig3_mechanism.PANELS) == ["ngram", "pcfg"]
