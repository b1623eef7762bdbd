"""Claims C1-C10 and C5-copy on hand-made tables: each check both holds and fails (and is
N/A without data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from figures_fixtures import OLMO, rows, to_table
from hierlab.figures import ClaimThresholds, FiguresConfig, RunData, evaluate_claims
from hierlab.figures.claim_table import COLUMNS, format_claims
from hierlab.figures.claims import CLAIMS
from hierlab.figures.series import rise

KINDS = {"ngram": "ngram", "pcfg": "pcfg"}
HUB = f"hub:{OLMO}"


def verdict(data: RunData, claim: str, variant: str = "reference") -> tuple[str, float]:
    t = evaluate_claims(data=data, write=False)
    r = t[(t["claim"] == claim) & (t["variant"] == variant)].iloc[0]
    return r["verdict"], r["value"]


def loss_df(steps: np.ndarray, loss: np.ndarray, col: str) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, col: loss})


STEPS = np.arange(10, 1001, 10)


def fast(steps: np.ndarray) -> np.ndarray:  # converges in the first few % of training
    return 1.76 + 0.3 * np.exp(-steps / 15)


def slow(steps: np.ndarray) -> np.ndarray:  # linear decline throughout
    return 5.4 - 0.8 * steps / steps[-1]


def losses(kind: str, curve) -> RunData:
    return RunData.from_tables(
        kinds=KINDS,
        losses={kind: loss_df(STEPS, curve(STEPS), "train_loss")},
        evals={kind: loss_df(STEPS[::10], curve(STEPS[::10]), "test_loss")},
    )


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c1_c2_loss_shape(variant: str) -> None:
    assert verdict(losses("ngram", fast), "C1", variant)[0] == "PASS"
    assert verdict(losses("ngram", slow), "C1", variant)[0] == "FAIL"
    assert verdict(losses("pcfg", slow), "C2", variant)[0] == "PASS"
    v, value = verdict(losses("pcfg", fast), "C2", variant)
    assert v == "FAIL" and value < 0.05


def test_c1_value_is_share_of_decrease() -> None:
    v, value = verdict(losses("ngram", fast), "C1")
    assert value == pytest.approx(1.0, abs=0.01)
    v, value = verdict(losses("ngram", slow), "C1")
    assert value == pytest.approx(0.09, abs=0.02)  # 10% of a linear decline (minus the 1st log)


def test_c1_na_when_log_starts_late() -> None:
    data = RunData.from_tables(
        kinds=KINDS, losses={"ngram": loss_df(STEPS[50:], fast(STEPS[50:]), "train_loss")}
    )
    assert verdict(data, "C1")[0] == "N/A"


def structure(final_vo: float) -> RunData:
    recs = []
    for variant in ("reference", "standard"):
        for step, vo in ((100, 0.8), (200, final_vo)):
            recs.append(rows("pcfg", "structure", variant, "verb_to_object", step, vo))
            recs.append(rows("pcfg", "structure", variant, "connector_to_subject", step, 0.99))
            recs.append(rows("pcfg", "structure", variant, "subject_to_verb", step, 0.84))
    return RunData.from_tables(to_table(recs), kinds=KINDS)


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c3(variant: str) -> None:
    assert verdict(structure(0.97), "C3", variant) == ("PASS", pytest.approx(0.97))
    assert verdict(structure(0.85), "C3", variant) == ("FAIL", pytest.approx(0.85))


def induction(
    model: str, series: list[float], *, source: str = "run", steps: list[int] | None = None
) -> list[dict]:
    steps = steps or [100 * (i + 1) for i in range(len(series))]
    recs = []
    for step, v in zip(steps, series, strict=True):
        for k in range(1, 11):
            recs.append(rows(model, "induction", "reference", "score", step, v, k=k, source=source))
        recs.append(
            rows(model, "induction", "standard", "prefix_matching_max", step, v, source=source)
        )
    return recs


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c4(variant: str) -> None:
    ok = RunData.from_tables(to_table(induction("ngram", [0.02, 0.03, 0.025])), kinds=KINDS)
    bad = RunData.from_tables(to_table(induction("ngram", [0.02, 0.3, 0.025])), kinds=KINDS)
    assert verdict(ok, "C4", variant) == ("PASS", pytest.approx(0.03))
    assert verdict(bad, "C4", variant) == ("FAIL", pytest.approx(0.3))


ABRUPT = [0.02] * 5 + [0.3, 0.7] + [0.75] * 13
GRADUAL = list(np.linspace(0.02, 0.75, 20))
SMALL = [0.02] * 5 + [0.15, 0.2] + [0.2] * 13


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c5(variant: str) -> None:
    pass_ = RunData.from_tables(to_table(induction("pcfg", ABRUPT)), kinds=KINDS)
    assert verdict(pass_, "C5", variant)[0] == "PASS"
    for series in (GRADUAL, SMALL):
        data = RunData.from_tables(to_table(induction("pcfg", series)), kinds=KINDS)
        assert verdict(data, "C5", variant)[0] == "FAIL"


def test_rise_reports_steepest_step() -> None:
    s = pd.Series(ABRUPT, index=[100 * (i + 1) for i in range(len(ABRUPT))])
    r = rise(s)
    assert (r["steep_from"], r["steep_to"]) == (600, 700)
    assert r["steep_share"] == pytest.approx(0.4 / 0.73)
    assert r["width"] == pytest.approx((700 - 600) / 2000)


OLMO_STEPS = [1000, 20_000, 100_000, 300_000, 500_000, 738_000]


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c6(variant: str) -> None:
    early = induction(OLMO, [0.03, 0.8, 0.9, 0.9, 0.88, 0.84], source=HUB, steps=OLMO_STEPS)
    late = induction(OLMO, [0.03, 0.1, 0.2, 0.8, 0.88, 0.84], source=HUB, steps=OLMO_STEPS)
    fades = induction(OLMO, [0.03, 0.8, 0.9, 0.5, 0.3, 0.2], source=HUB, steps=OLMO_STEPS)
    assert verdict(RunData.from_tables(to_table(early)), "C6", variant)[0] == "PASS"
    assert verdict(RunData.from_tables(to_table(late)), "C6", variant)[0] == "FAIL"
    assert verdict(RunData.from_tables(to_table(fades)), "C6", variant)[0] == "FAIL"


def hydra(
    model: str,
    ref: dict[int, float],
    comp: dict[int, float],
    *,
    source: str = "run",
    steps: tuple[int, ...] = (100, 200),
) -> list[dict]:
    recs = []
    for step in steps:
        for layer, v in ref.items():
            recs.append(
                rows(model, "hydra", "reference", "drop", step, v, layer=layer, k=1, source=source)
            )
            recs.append(
                rows(model, "hydra", "reference", "drop", step, -v, layer=layer, k=2, source=source)
            )  # k=2 rows must be ignored
        for layer, c in comp.items():
            recs.append(
                rows(
                    model, "hydra", "standard", "compensation", step, c, layer=layer, source=source
                )
            )
    return recs


def test_c7_c8_hydra_signs() -> None:
    good = hydra("pcfg", {1: -0.3, 2: -1.2, 3: -2.0}, {0: 0.2, 1: 0.1, 2: 0.3}) + hydra(
        "ngram", {1: 0.3, 2: 1.2, 3: 6.0}, {0: -0.1, 1: 0.0, 2: -0.2}
    )
    bad = hydra("pcfg", {1: 0.3, 2: -1.2, 3: -2.0}, {0: -0.2, 1: 0.1, 2: 0.3}) + hydra(
        "ngram", {1: -0.3, 2: 1.2, 3: 6.0}, {0: 0.1, 1: 0.0, 2: -0.2}
    )
    g = RunData.from_tables(to_table(good), kinds=KINDS)
    b = RunData.from_tables(to_table(bad), kinds=KINDS)
    for variant in ("reference", "standard"):
        assert verdict(g, "C7", variant) == ("PASS", 1.0)
        assert verdict(g, "C8", variant) == ("PASS", 1.0)
        assert verdict(b, "C7", variant) == ("FAIL", pytest.approx(2 / 3))
        assert verdict(b, "C8", variant) == ("FAIL", pytest.approx(2 / 3))


def test_c9_external_late_layers() -> None:
    late = {layer: (-2.0 if layer >= 14 else 0.5) for layer in range(1, 16)}
    early = {layer: (-2.0 if layer <= 3 else 0.5) for layer in range(1, 16)}
    everywhere = dict.fromkeys(range(1, 16), -1.0)
    comp_late = {layer: (1.0 if layer >= 13 else -0.1) for layer in range(16)}
    comp_early = {layer: (1.0 if layer <= 3 else -0.1) for layer in range(16)}
    ok = RunData.from_tables(to_table(hydra(OLMO, late, comp_late, source=HUB)))
    no = RunData.from_tables(to_table(hydra(OLMO, early, comp_early, source=HUB)))
    full = RunData.from_tables(to_table(hydra(OLMO, everywhere, comp_late, source=HUB)))
    for variant in ("reference", "standard"):
        assert verdict(ok, "C9", variant) == ("PASS", 1.0)
        assert verdict(no, "C9", variant) == ("FAIL", 0.0)
    assert verdict(full, "C9")[0] == "FAIL"  # not partial: every cell compensates


def fv(gains: list[float], steps: list[int]) -> RunData:
    recs = []
    for step, gmax in zip(steps, gains, strict=True):
        for layer in range(4):
            g = gmax if layer == 2 else gmax / 3
            recs.append(rows("pcfg", "fv", "reference", "fv_improvement", step, g, layer=layer))
            recs.append(
                rows(
                    "pcfg", "fv", "standard", "fv_accuracy:copy_object", step, 0.1 + g, layer=layer
                )
            )
        recs.append(rows("pcfg", "fv", "standard", "zero_shot_accuracy:copy_object", step, 0.1))
    return RunData.from_tables(to_table(recs), kinds=KINDS)


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c10(variant: str) -> None:
    assert verdict(fv([0.0, 0.2, 0.5], [100, 200, 300]), "C10", variant) == (
        "PASS",
        pytest.approx(0.5),
    )
    assert verdict(fv([0.5, 0.2, 0.1], [100, 200, 300]), "C10", variant)[0] == "FAIL"
    assert verdict(fv([-0.2, -0.1], [100, 200]), "C10", variant)[0] == "FAIL"
    assert verdict(fv([0.5], [300]), "C10", variant)[0] == "N/A"


def test_all_na_without_data() -> None:
    t = evaluate_claims(data=RunData.from_tables(), write=False)
    assert list(t.columns) == COLUMNS
    assert len(t) == 22 and set(t["verdict"]) == {"N/A"}
    assert "N/A" in format_claims(t)


def test_registry_orders_the_table() -> None:
    t = evaluate_claims(data=RunData.from_tables(), write=False)
    ids = [f"C{i}" for i in range(1, 6)] + ["C5-copy"] + [f"C{i}" for i in range(6, 11)]
    assert list(CLAIMS) == ids and list(dict.fromkeys(t["claim"])) == ids
    assert list(t["variant"][:2]) == ["reference", "standard"]


def test_thresholds_are_configurable() -> None:
    data = RunData.from_tables(to_table(induction("ngram", [0.02, 0.15, 0.025])), kinds=KINDS)
    assert verdict(data, "C4")[0] == "FAIL"
    cfg = FiguresConfig(claims=ClaimThresholds(c4_max_score=0.2))
    t = evaluate_claims(data=data, cfg=cfg, write=False)
    assert t.loc[(t["claim"] == "C4") & (t["variant"] == "reference"), "verdict"].item() == "PASS"


def test_synthetic_run_claims_written(synthetic_run_dir: Path) -> None:
    run = synthetic_run_dir
    t = evaluate_claims(run)
    on_disk = pd.read_csv(run / "claims.csv")
    assert list(on_disk.columns) == COLUMNS and len(on_disk) == len(t) == 22
    got = t.set_index(["claim", "variant"])["verdict"]
    for claim in ("C2", "C3", "C4", "C5", "C7", "C8", "C10"):
        assert got[(claim, "reference")] == "PASS", t.to_string()
    assert got[("C6", "reference")] == "N/A"  # no external model in this run
    assert got[("C5-copy", "reference")] == "N/A"  # nor a copy design


def test_c1_flat_from_first_log_is_na_and_rising_loss_fails() -> None:
    flat = RunData.from_tables(
        kinds=KINDS, losses={"ngram": loss_df(STEPS, 1.77 + 0 * STEPS, "train_loss")}
    )
    assert verdict(flat, "C1")[0] == "N/A"
    rising = RunData.from_tables(
        kinds=KINDS, losses={"ngram": loss_df(STEPS, 1.7 + STEPS / 1000, "train_loss")}
    )
    assert verdict(rising, "C1")[0] == "FAIL"


def _labels(model: str, codes: list[int]) -> list[dict]:
    """``label_model`` rows (mechanism probe) at the same steps as :func:`induction`."""
    recs = induction(model, [0.0] * len(codes))
    steps = sorted({r["step"] for r in recs})
    return [rows(model, "mechanism", "standard", "label_model", s, c, layer=1, head=0)
            for s, c in zip(steps, codes, strict=True)]


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c5_needs_the_content_induction_label(variant: str) -> None:
    """An abrupt rise made by a positional head fails C5; the same rise with the final
    label content induction passes; without the mechanism probe the old rule stands."""
    from hierlab.contracts import MECHANISM_LABELS

    pos, ind = MECHANISM_LABELS.index("positional copy"), MECHANISM_LABELS.index(
        "content induction")
    positional = RunData.from_tables(
        to_table(induction("pcfg", ABRUPT) + _labels("pcfg", [0] * 5 + [pos] * 15)), kinds=KINDS)
    res = verdict(positional, "C5", variant)
    assert res[0] == "FAIL"
    content = RunData.from_tables(
        to_table(induction("pcfg", ABRUPT) + _labels("pcfg", [0] * 5 + [ind] * 15)), kinds=KINDS)
    assert verdict(content, "C5", variant)[0] == "PASS"


@pytest.mark.parametrize("variant", ["reference", "standard"])
def test_c5_copy_reads_the_copy_design_model(variant: str) -> None:
    """C5-copy applies C5's test to the copy design's model and to no other: a PCFG rise
    leaves it N/A; the copy model's rise passes only with its final label content
    induction (a local content copy fails)."""
    from hierlab.contracts import MECHANISM_LABELS

    kinds = {**KINDS, "copy": "copy"}
    pcfg_only = RunData.from_tables(to_table(induction("pcfg", ABRUPT)), kinds=kinds)
    assert verdict(pcfg_only, "C5-copy", variant)[0] == "N/A"
    ind = MECHANISM_LABELS.index("content induction")
    local = MECHANISM_LABELS.index("local content copy")
    real = RunData.from_tables(
        to_table(induction("copy", ABRUPT) + _labels("copy", [0] * 5 + [ind] * 15)), kinds=kinds)
    assert verdict(real, "C5-copy", variant)[0] == "PASS"
    assert verdict(real, "C5", variant)[0] == "N/A"  # no PCFG rows
    short = RunData.from_tables(
        to_table(induction("copy", ABRUPT) + _labels("copy", [0] * 5 + [local] * 15)),
        kinds=kinds)
    assert verdict(short, "C5-copy", variant)[0] == "FAIL"
