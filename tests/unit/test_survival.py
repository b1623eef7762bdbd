"""Emergence statistics: t* on hand-made label sequences, Kaplan-Meier and log-rank against
values computed by hand, the paired log ratios' censoring bounds and a seeded bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hierlab.errors import DataError
from hierlab.sweep.survival import (
    arm_summary,
    bootstrap_ci,
    emergence_statistics,
    emergence_time,
    kaplan_meier,
    log_ratio_summary,
    logrank,
    paired_log_ratios,
)

CI, NO = "content induction", "none"
TOKENS = [0, 100, 200, 300, 400]


def _labels(*names: str) -> pd.Series:
    return pd.Series(list(names), index=TOKENS[: len(names)])


@pytest.mark.parametrize(("labels", "expected"), [
    ((NO, NO, CI, CI, CI), (200.0, True)),  # stays from its first appearance
    ((NO, CI, NO, CI, CI), (300.0, True)),  # drops back: only the final run counts
    ((CI, CI, CI, CI, NO), (400.0, False)),  # lost at the end: censored at the budget
    ((NO, NO, NO, NO, NO), (400.0, False)),  # never: censored at the last checkpoint
    ((NO, NO, NO, NO, CI), (400.0, True)),  # last checkpoint only
    ((CI, CI, CI, CI, CI), (0.0, True)),
    ((NO, "positional copy", "local content copy", CI, CI), (300.0, True)),
])
def test_emergence_time_is_where_the_label_comes_to_stay(labels, expected):
    assert emergence_time(_labels(*labels)) == expected


def test_emergence_time_sorts_checkpoints_and_takes_booleans_and_other_labels():
    shuffled = pd.Series([CI, NO, CI, CI], index=[300, 100, 400, 200])
    assert emergence_time(shuffled) == (200.0, True)
    scores = pd.Series([0.1, 0.35, 0.2, 0.31, 0.4], index=TOKENS)
    assert emergence_time(scores >= 0.3) == (300.0, True)
    assert emergence_time(scores >= 0.5) == (400.0, False)
    copy = _labels(NO, "local content copy", "local content copy", CI, "local content copy")
    assert emergence_time(copy, label="local content copy") == (400.0, True)
    assert emergence_time(copy) == (400.0, False)
    # a set of labels: any content-matching copy head holds the checkpoint
    either = ["local content copy", CI]
    assert emergence_time(copy, label=either) == (100.0, True)
    t, seen = emergence_time(pd.Series([], dtype=object))
    assert math.isnan(t) and not seen
    with pytest.raises(DataError, match="two checkpoints at one token count"):
        emergence_time(pd.Series([CI, CI], index=[100, 100]))


def _times(arm: str, events: list[tuple[float, bool]], seeds=None) -> pd.DataFrame:
    seeds = seeds if seeds is not None else range(len(events))
    return pd.DataFrame({"arm": arm, "seed": list(seeds), "t_star": [t for t, _ in events],
                         "observed": [o for _, o in events]})


def test_kaplan_meier_matches_the_hand_computed_curve():
    # S(1) = 3/4; the run censored at 2 leaves the risk set; S(3) = 3/4 * (1 - 1/2) = 3/8;
    # S(4) = 0. A naive count of "formed by 3" would say 2/4, Kaplan-Meier says 5/8.
    times = _times("A", [(1, True), (2, False), (3, True), (4, True)])
    km = kaplan_meier(times).set_index("tokens")
    assert km["fraction"].to_dict() == pytest.approx({0: 0, 1: 0.25, 2: 0.25, 3: 0.625, 4: 1})
    assert km["at_risk"].to_dict() == {0: 4, 1: 4, 2: 3, 3: 2, 4: 1}
    assert km["censored"].to_dict() == {0: 0, 1: 0, 2: 1, 3: 0, 4: 0}
    assert (km["lower"] <= km["fraction"] + 1e-12).all()
    assert (km["upper"] >= km["fraction"] - 1e-12).all()
    row = arm_summary(times).iloc[0]
    # first t with S <= 0.5 / 0.75 / 0.25
    assert (row["km_median"], row["km_q25"], row["km_q75"]) == (3.0, 1.0, 4.0)
    assert (row["n"], row["n_observed"], row["median_observed"]) == (4, 3, 3.0)
    assert (row["budget_min"], row["min_observed"], row["max_observed"]) == (2.0, 1.0, 4.0)
    from lifelines import KaplanMeierFitter

    kmf = KaplanMeierFitter().fit(times["t_star"], times["observed"])
    assert row["km_median"] == kmf.median_survival_time_
    never = arm_summary(_times("B", [(5, False), (6, False)])).iloc[0]
    assert never["km_median"] == math.inf and math.isnan(never["median_observed"])


def test_logrank_matches_the_hand_computed_statistic():
    # A: formed at 1, 2, 3; B: formed at 2, censored at 4, formed at 5.
    # event times 1, 2, 3 (5: A is empty):  O_A = 3,  E_A = 1/2 + 4/5 + 1/3 = 49/30,
    # V = 1/4 + 2*(2/5)(3/5)(3/4) + (1/3)(2/3) = 749/900, chi2 = (41/30)^2 / V = 1681/749
    times = pd.concat([_times("A", [(1, True), (2, True), (3, True)]),
                       _times("B", [(2, True), (4, False), (5, True)])], ignore_index=True)
    tests = logrank(times, control="A").set_index("comparison")
    chi2 = 1681 / 749
    p = math.erfc(math.sqrt(chi2 / 2))  # chi-square survival function, 1 degree of freedom
    assert tests.loc["B vs A", "statistic"] == pytest.approx(chi2, rel=1e-9)
    assert tests.loc["B vs A", "p_value"] == pytest.approx(p, rel=1e-9)
    assert tests.loc["all arms", "statistic"] == pytest.approx(chi2, rel=1e-9)
    three = pd.concat([times, _times("C", [(7, True), (8, True), (9, False)])])
    t3 = logrank(three, control="A").set_index("comparison")
    assert t3.loc["all arms", "df"] == 2 and 0 < t3.loc["all arms", "p_value"] < 1
    assert list(t3.index) == ["all arms", "B vs A", "C vs A"]
    assert logrank(times, control="Z")["comparison"].tolist() == ["all arms"]


def test_paired_log_ratios_mark_what_censoring_bounds():
    ctrl = _times("F", [(100, True), (100, True), (400, False), (400, False)])
    arm = _times("H", [(200, True), (400, False), (100, True), (400, False)])
    pairs = paired_log_ratios(pd.concat([ctrl, arm]), "F").set_index("seed")
    assert pairs["bound"].tolist() == ["exact", "lower", "upper", "none"]
    assert pairs.loc[0, "log_ratio"] == pytest.approx(math.log(2))
    assert math.isnan(pairs.loc[1, "log_ratio"])
    assert pairs.loc[1, "log_ratio_bound"] == pytest.approx(math.log(4))
    assert pairs.loc[2, "log_ratio_bound"] == pytest.approx(math.log(1 / 4))
    s = log_ratio_summary(pairs.reset_index(), n_resamples=200).iloc[0]
    assert (s["n_pairs"], s["n_exact"], s["n_lower"], s["n_upper"], s["n_none"]) == (4, 1, 1,
                                                                                     1, 1)
    assert s["log_ratio"] == pytest.approx(math.log(2)) and s["ratio"] == pytest.approx(2)
    assert s["bound_kind"] == "not a bound"
    lower_only = log_ratio_summary(pairs.reset_index().iloc[:2], n_resamples=200).iloc[0]
    assert lower_only["bound_kind"] == "lower"
    assert lower_only["log_ratio_bound"] == pytest.approx((math.log(2) + math.log(4)) / 2)
    # a seed the control did not run is left out
    extra = pd.concat([ctrl, arm, _times("H", [(50, True)], seeds=[9])])
    with pytest.raises(DataError, match=r"\(arm, seed\) pair appears twice"):
        paired_log_ratios(pd.concat([ctrl, ctrl]), "F")
    assert len(paired_log_ratios(extra, "F")) == 4


def test_bootstrap_is_seeded_and_covers_a_known_ratio():
    rng = np.random.default_rng(123)
    t_f = 1e6 * np.exp(rng.normal(0, 0.5, 30))
    t_h = 2 * t_f * np.exp(rng.normal(0, 0.1, 30))  # H takes twice as long, per seed
    logs = np.log(t_h / t_f)
    first = bootstrap_ci(logs, seed=7)
    assert first == bootstrap_ci(logs, seed=7)
    assert first != bootstrap_ci(logs, seed=8)
    est, lo, hi = first
    assert lo < math.log(2) < hi and lo > 0  # contains the truth, excludes "no effect"
    assert lo <= est <= hi
    _, mlo, mhi = bootstrap_ci(logs, statistic="median", seed=7)
    assert mlo < math.log(2) < mhi
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan]))
    with pytest.raises(DataError, match="statistic 'max'"):
        bootstrap_ci(logs, statistic="max")  # type: ignore[arg-type]


def test_emergence_statistics_joins_counts_ratios_and_tests():
    times = pd.concat([_times("F", [(100, True), (200, True), (150, True)]),
                       _times("H", [(300, True), (500, False), (450, True)])])
    st = emergence_statistics(times, "F", n_resamples=500).set_index("arm")
    assert st.loc["F", "control"] and not st.loc["H", "control"]
    assert math.isnan(st.loc["F", "log_ratio"])
    assert st.loc["H", "n_exact"] == 2 and st.loc["H", "bound_kind"] == "lower"
    assert st.loc["H", "log_ratio"] == pytest.approx((math.log(3) + math.log(3)) / 2)
    p = logrank(times, "F").set_index("comparison").loc["H vs F", "p_value"]
    assert st.loc["H", "logrank_p"] == pytest.approx(p)
    assert st.loc["F", "logrank_all_p"] == st.loc["H", "logrank_all_p"] == pytest.approx(p)
    with pytest.raises(DataError, match="missing column"):
        emergence_statistics(times.drop(columns="seed"), "F")
    with pytest.raises(DataError, match="t_star must be a finite"):
        emergence_statistics(times.assign(t_star=np.nan), "F")
