"""Emergence statistics over paired training seeds: when a mechanism forms, and whether arms differ.

A run's emergence token count t* is the first checkpoint from which a criterion holds through
the last checkpoint; a run where it never settles is right-censored at its last checkpoint.
Kaplan-Meier curves and log-rank tests (``lifelines``) compare arms with the censoring taken
into account; log ratios ``log(t*_arm / t*_control)`` over seeds shared by both arms, with a
seeded bootstrap, give each arm's effect size. Pure functions over tables: the sweep reads
the runs and writes the files. Definitions and formulas: ``docs/emergence-statistics.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from hierlab.errors import DataError

__all__ = ["TIMES_COLUMNS", "arm_summary", "bootstrap_ci", "emergence_statistics",
           "emergence_time", "kaplan_meier", "log_ratio_summary", "logrank", "paired_log_ratios"]

NAN = float("nan")

TIMES_COLUMNS: tuple[str, ...] = ("arm", "seed", "t_star", "observed")
"""The columns every function below reads: one row per run, t* in tokens, observed a bool
(False: censored at ``t_star``, the run's last checkpoint)."""

Statistic = Literal["mean", "median"]


def emergence_time(
    label_by_tokens: pd.Series, label: str | Sequence[str] = "content induction"
) -> tuple[float, bool]:
    """The first checkpoint from which the label stays ``label`` through the last checkpoint.

    A label that appears and drops back does not count: only the final, unbroken run of
    checkpoints does, so a head that flickers in and out emerges where it last came to stay.
    A run whose last checkpoint does not hold the label is censored at that checkpoint's
    token count (its budget): its head, if any, forms later. A label reached at the last
    checkpoint only counts as observed there; nothing after it can confirm it.

    Args:
        label_by_tokens: one value per checkpoint, indexed by ``tokens_seen``: label names
            (compared with ``label``), or booleans (any criterion, e.g. ``score >= 0.3``;
            ``label`` is then ignored). Missing values count as "does not hold".
        label: the label name whose stable arrival is sought, or several (any of them
            holds the checkpoint) (names of
            :data:`hierlab.contracts.MECHANISM_LABELS`, never its code).

    Returns:
        ``(t_star, observed)``: the token count and True, or the last checkpoint's token
        count and False (censored). ``(nan, False)`` for an empty series.

    Raises:
        DataError: two checkpoints share one token count.
    """
    if not len(label_by_tokens):
        return NAN, False
    if label_by_tokens.index.has_duplicates:
        raise DataError("emergence_time: label_by_tokens has two checkpoints at one token count")
    s = label_by_tokens.sort_index()
    if pd.api.types.is_bool_dtype(s.dtype):
        hit = s.fillna(False).to_numpy(dtype=bool)
    else:
        wanted = [label] if isinstance(label, str) else list(label)
        hit = s.isin(wanted).to_numpy(dtype=bool)
    tokens = s.index.to_numpy(dtype=float)
    if not hit[-1]:
        return float(tokens[-1]), False
    misses = np.flatnonzero(~hit)
    first = int(misses[-1]) + 1 if len(misses) else 0
    return float(tokens[first]), True


def _check(times: pd.DataFrame) -> pd.DataFrame:
    """The times table with its columns checked and ``observed`` as bool."""
    missing = [c for c in TIMES_COLUMNS if c not in times.columns]
    if missing:
        raise DataError(f"emergence times: missing column(s) {', '.join(missing)} "
                        f"(expected {', '.join(TIMES_COLUMNS)})")
    t = pd.to_numeric(times["t_star"], errors="coerce")
    if not (np.isfinite(t) & (t >= 0)).all():
        raise DataError("emergence times: t_star must be a finite token count >= 0 in every row")
    if times.duplicated(["arm", "seed"]).any():
        raise DataError("emergence times: an (arm, seed) pair appears twice")
    return times.assign(t_star=t.astype(float), observed=times["observed"].astype(bool))


def _arms(times: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(times["arm"]))


def kaplan_meier(times: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Kaplan-Meier curves of the fraction of seeds that have the mechanism, per arm.

    ``fraction`` is ``1 - S(t)``, S the Kaplan-Meier estimate of "not formed yet":
    ``S(t) = prod_{t_i <= t} (1 - d_i / n_i)`` over the token counts ``t_i`` where ``d_i``
    runs formed it, ``n_i`` runs still without it and not yet censored. A censored run
    leaves the risk set at its budget without counting as "never": this is what lets runs
    with different budgets, and runs that never formed a head, share one curve.

    Args:
        times: :data:`TIMES_COLUMNS`, one row per run.
        confidence: level of the pointwise interval (lifelines' exponential Greenwood).

    Returns:
        One row per arm and token count where a run formed the mechanism or was censored
        (and tokens 0): ``arm, tokens, fraction, lower, upper, at_risk, events, censored,
        n`` (``n``: the arm's runs). The curve is a step function, constant after each row.
    """
    from lifelines import KaplanMeierFitter

    times = _check(times)
    frames = []
    for arm in _arms(times):
        g = times[times["arm"] == arm]
        kmf = KaplanMeierFitter(alpha=1 - confidence).fit(g["t_star"], g["observed"])
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_survival_function_
        et = kmf.event_table.reindex(sf.index, fill_value=0)
        frames.append(pd.DataFrame({
            "arm": arm, "tokens": sf.index.to_numpy(dtype=float),
            "fraction": 1.0 - sf.to_numpy(), "lower": 1.0 - ci.iloc[:, 1].to_numpy(),
            "upper": 1.0 - ci.iloc[:, 0].to_numpy(), "at_risk": et["at_risk"].to_numpy(),
            "events": et["observed"].to_numpy(), "censored": et["censored"].to_numpy(),
            "n": len(g),
        }))
    cols = ["arm", "tokens", "fraction", "lower", "upper", "at_risk", "events", "censored", "n"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def logrank(times: pd.DataFrame, control: str) -> pd.DataFrame:
    """Log-rank tests: all arms at once, and each arm against ``control``.

    The test compares, at every token count where some run formed the mechanism, each arm's
    observed events with those expected if all arms shared one hazard; censored runs count
    in the risk sets until their budget. ``chi2 = (O - E)^T V^-1 (O - E)`` with ``k - 1``
    degrees of freedom for ``k`` arms. It tests "the curves differ anywhere", not which arm
    is earlier: read the direction from the curves and the log ratios.

    Args:
        times: :data:`TIMES_COLUMNS`, one row per run.
        control: the arm every other arm is compared with.

    Returns:
        Rows ``comparison`` ("all arms" or "<arm> vs <control>"), ``arm`` (None for all
        arms), ``statistic``, ``df``, ``p_value``. No "all arms" row with fewer than two
        arms; no pairwise rows without the control. NaN where no run formed it at all.
    """
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    times = _check(times)
    arms = _arms(times)
    rows: list[dict[str, object]] = []
    if len(arms) >= 2:
        if times["observed"].any():
            r = multivariate_logrank_test(times["t_star"], times["arm"], times["observed"])
            stat, df, p = float(r.test_statistic), int(r.degrees_of_freedom), float(r.p_value)
        else:
            stat, df, p = NAN, len(arms) - 1, NAN
        rows.append({"comparison": "all arms", "arm": None, "statistic": stat, "df": df,
                     "p_value": p})
    if control in arms:
        c = times[times["arm"] == control]
        for arm in arms:
            if arm == control:
                continue
            a = times[times["arm"] == arm]
            stat = p = NAN
            if a["observed"].any() or c["observed"].any():
                r = logrank_test(a["t_star"], c["t_star"], a["observed"], c["observed"])
                stat, p = float(r.test_statistic), float(r.p_value)
            rows.append({"comparison": f"{arm} vs {control}", "arm": arm, "statistic": stat,
                         "df": 1, "p_value": p})
    return pd.DataFrame(rows, columns=["comparison", "arm", "statistic", "df", "p_value"])


def _km_time(survival: pd.Series, level: float) -> float:
    """First token count where the Kaplan-Meier ``S(t) <= level`` (lifelines' convention
    for its median); ``inf`` when the curve never gets there. The tolerance matters: with
    4 seeds ``S`` is exactly 3/4 after one event, and lifelines' product of logs returns
    it a rounding error above."""
    hit = survival.index[survival.to_numpy() <= level + 1e-9]
    return float(hit[0]) if len(hit) else float("inf")


def arm_summary(times: pd.DataFrame) -> pd.DataFrame:
    """Per arm: how many runs formed the mechanism, the median t* and its spread.

    ``km_median`` is the Kaplan-Meier median, the first token count where at least half the
    arm's runs have it (``inf`` when fewer than half did within their budgets); ``km_q25``
    and ``km_q75`` are the same at a quarter and three quarters, so ``[km_q25, km_q75]`` is
    a censoring-aware interquartile range. ``median_observed``, ``min_observed`` and
    ``max_observed`` are plain statistics of the runs that formed it: biased early when
    some did not (the late ones are missing), so read them beside ``n_observed / n``.

    Args:
        times: :data:`TIMES_COLUMNS`, one row per run.

    Returns:
        One row per arm: ``arm, n, n_observed, km_median, km_q25, km_q75, median_observed,
        min_observed, max_observed, budget_min, budget_max`` (budgets: the censored runs'
        token counts; NaN when none was censored).
    """
    from lifelines import KaplanMeierFitter

    times = _check(times)
    rows = []
    for arm in _arms(times):
        g = times[times["arm"] == arm]
        sf = KaplanMeierFitter().fit(g["t_star"], g["observed"]).survival_function_.iloc[:, 0]
        obs = g.loc[g["observed"], "t_star"]
        cens = g.loc[~g["observed"], "t_star"]
        rows.append({
            "arm": arm, "n": len(g), "n_observed": len(obs),
            "km_median": _km_time(sf, 0.5),
            "km_q25": _km_time(sf, 0.75), "km_q75": _km_time(sf, 0.25),
            "median_observed": float(obs.median()) if len(obs) else NAN,
            "min_observed": float(obs.min()) if len(obs) else NAN,
            "max_observed": float(obs.max()) if len(obs) else NAN,
            "budget_min": float(cens.min()) if len(cens) else NAN,
            "budget_max": float(cens.max()) if len(cens) else NAN,
        })
    return pd.DataFrame(rows)


def paired_log_ratios(times: pd.DataFrame, control: str) -> pd.DataFrame:
    """``log(t*_arm / t*_control)`` for every seed that both an arm and the control ran.

    A censored t* is a lower bound on the true one (the head forms after the budget, if at
    all), so a pair's ratio is exact only when both runs formed the mechanism. Otherwise the
    ratio computed with the censoring time in place of t* is a bound: a **lower** bound when
    only the arm is censored, an **upper** bound when only the control is, and no bound
    when both are (``bound`` says which). A t* of 0 (formed at initialisation) has no log:
    such pairs get ``bound = "none"``.

    Args:
        times: :data:`TIMES_COLUMNS`, one row per run.
        control: the arm every other arm is paired with.

    Returns:
        One row per (arm, seed), arms other than the control: ``arm, seed, t_arm,
        observed_arm, t_control, observed_control, log_ratio`` (exact pairs only, else NaN),
        ``log_ratio_bound`` (censoring times substituted) and ``bound`` (``exact``,
        ``lower``, ``upper`` or ``none``). Seeds without a control run are left out.
    """
    times = _check(times)
    ctrl = times[times["arm"] == control].set_index("seed")
    rows = []
    for arm in _arms(times):
        if arm == control:
            continue
        for _, r in times[times["arm"] == arm].iterrows():
            if r["seed"] not in ctrl.index:
                continue
            c = ctrl.loc[r["seed"]]
            ta, tc = float(r["t_star"]), float(c["t_star"])
            oa, oc = bool(r["observed"]), bool(c["observed"])
            ok = ta > 0 and tc > 0
            lr = float(np.log(ta / tc)) if ok else NAN
            bound = ("none" if not ok or not (oa or oc) else
                     "exact" if oa and oc else "lower" if oc else "upper")
            rows.append({"arm": arm, "seed": r["seed"], "t_arm": ta, "observed_arm": oa,
                         "t_control": tc, "observed_control": oc,
                         "log_ratio": lr if bound == "exact" else NAN,
                         "log_ratio_bound": lr, "bound": bound})
    cols = ["arm", "seed", "t_arm", "observed_arm", "t_control", "observed_control",
            "log_ratio", "log_ratio_bound", "bound"]
    return pd.DataFrame(rows, columns=cols)


def bootstrap_ci(
    values: np.ndarray | pd.Series | list[float],
    statistic: Statistic = "mean",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The statistic of ``values`` and its percentile bootstrap interval.

    Resampling whole pairs (each value is one seed's log ratio) keeps the pairing: the
    seed-to-seed variation shared by both arms has already cancelled in each value. With
    five pairs the percentile interval is crude (it can be no wider than the values' range),
    so report the values beside it. Deterministic: one ``numpy`` Generator from ``seed``.

    Args:
        values: the per-pair values (NaN are dropped).
        statistic: ``mean`` or ``median`` of each resample.
        n_resamples: bootstrap resamples.
        confidence: the interval's level, e.g. 0.95 for the 2.5th and 97.5th percentiles.
        seed: seed of the Generator.

    Returns:
        ``(estimate, low, high)``; all NaN without values, ``low == high`` with one value.
    """
    if statistic not in ("mean", "median"):
        raise DataError(f"bootstrap_ci: statistic '{statistic}': allowed: mean, median")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return NAN, NAN, NAN
    fn = np.mean if statistic == "mean" else np.median
    rng = np.random.default_rng(seed)
    draws = fn(x[rng.integers(0, len(x), size=(n_resamples, len(x)))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(fn(x)), float(low), float(high)


def log_ratio_summary(
    pairs: pd.DataFrame,
    statistic: Statistic = "mean",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per arm: the statistic of the paired log ratios with a bootstrap CI, two ways.

    * ``log_ratio`` over the exact (doubly observed) pairs only, with their count
      ``n_exact``: unbiased by censoring but silent about the runs that never formed it.
    * ``log_ratio_bound`` over every pair with a bound, censoring times substituted. The
      mean and median grow with each value, so when every substituted pair is a lower
      bound the result is a lower bound on the true statistic (``bound_kind = lower``);
      likewise ``upper``; mixed or ``none`` pairs make it no bound (``not a bound``),
      and it is ``exact`` when no pair was censored. Its CI is a CI of that bound.

    Args:
        pairs: the output of :func:`paired_log_ratios`.
        statistic, n_resamples, confidence, seed: as :func:`bootstrap_ci` (each arm uses
            ``seed``, so an arm's interval does not depend on the other arms).

    Returns:
        One row per arm: ``arm, n_pairs, n_exact, n_lower, n_upper, n_none, log_ratio,
        log_ratio_low, log_ratio_high, ratio, ratio_low, ratio_high`` (``exp`` of the
        three: the geometric-mean ratio for ``mean``), ``log_ratio_bound,
        log_ratio_bound_low, log_ratio_bound_high, bound_kind``.
    """
    rows = []
    for arm in dict.fromkeys(pairs["arm"]):
        g = pairs[pairs["arm"] == arm]
        counts = {k: int((g["bound"] == k).sum()) for k in ("exact", "lower", "upper", "none")}
        est, lo, hi = bootstrap_ci(g["log_ratio"], statistic, n_resamples, confidence, seed)
        usable = g[g["bound"] != "none"]
        best, blo, bhi = bootstrap_ci(usable["log_ratio_bound"], statistic, n_resamples,
                                      confidence, seed)
        kinds = set(usable["bound"]) - {"exact"}
        kind = ("not a bound" if counts["none"] or len(kinds) > 1 else
                next(iter(kinds)) if kinds else "exact")
        rows.append({
            "arm": arm, "n_pairs": len(g), **{f"n_{k}": v for k, v in counts.items()},
            "log_ratio": est, "log_ratio_low": lo, "log_ratio_high": hi,
            "ratio": float(np.exp(est)), "ratio_low": float(np.exp(lo)),
            "ratio_high": float(np.exp(hi)),
            "log_ratio_bound": best, "log_ratio_bound_low": blo, "log_ratio_bound_high": bhi,
            "bound_kind": kind,
        })
    return pd.DataFrame(rows)


def emergence_statistics(
    times: pd.DataFrame,
    control: str,
    statistic: Statistic = "mean",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Everything per arm in one table: counts, medians, log ratios and log-rank tests.

    Args:
        times: :data:`TIMES_COLUMNS`, one row per run.
        control: the arm the others are paired with and tested against.
        statistic, n_resamples, confidence, seed: the paired bootstrap
            (:func:`log_ratio_summary`).

    Returns:
        One row per arm: the columns of :func:`arm_summary`, then ``control`` (bool), the
        columns of :func:`log_ratio_summary` (NaN for the control), ``logrank_statistic``
        and ``logrank_p`` against the control, and ``logrank_all_statistic``,
        ``logrank_all_df``, ``logrank_all_p`` of all arms (the same in every row).
    """
    times = _check(times)
    out = arm_summary(times)
    out["control"] = out["arm"] == control
    pairs = paired_log_ratios(times, control)
    if len(pairs):
        out = out.merge(log_ratio_summary(pairs, statistic, n_resamples, confidence, seed),
                        on="arm", how="left")
    tests = logrank(times, control)
    pair_tests = tests[tests["arm"].notna()].set_index("arm")
    out["logrank_statistic"] = out["arm"].map(pair_tests["statistic"]).astype(float)
    out["logrank_p"] = out["arm"].map(pair_tests["p_value"]).astype(float)
    every = tests[tests["comparison"] == "all arms"]
    for col, src in (("statistic", "statistic"), ("df", "df"), ("p", "p_value")):
        out[f"logrank_all_{col}"] = float(every[src].iloc[0]) if len(every) else NAN
    return out
