"""Check the reference study's claims C1-C10 on a run's tables, for both metric variants.

The claims are hypotheses: every check returns the number behind it and PASS, FAIL or N/A
(the data it needs are missing), and a FAIL is reported as plainly as a PASS. Each check is
registered with ``@claim(id, statement)`` and its docstring states the exact test; its
thresholds are :class:`~hierlab.figures.config.ClaimThresholds` and the series it reads
follow the conventions of :mod:`hierlab.figures.series` (``docs/design-pipeline.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hierlab.contracts import VARIANTS
from hierlab.figures.claim_table import COLUMNS, FAIL, NA, PASS, ClaimResult, fmt
from hierlab.figures.config import ClaimThresholds, FiguresConfig
from hierlab.figures.data import COPY_KIND, KIND_TITLES, RunData, load_run_data
from hierlab.figures.series import (
    fv_gain,
    hydra_cells,
    induction_series,
    loss_at,
    loss_curve,
    mechanism_labels,
    rise,
    smooth,
)
from hierlab.io import atomic_write_text

log = logging.getLogger(__name__)

FLAT_REL_TOL = 0.01
"""C1: a curve whose first and final loss differ by at most 1% is flat from its first log:
when it converged cannot be seen, so C1 is N/A (and FAIL if the loss rose by more)."""


@dataclass(frozen=True)
class Outcome:
    """What a check decides; :meth:`Claim.result` adds the claim, variant and statement.

    Attributes:
        value: the number behind the verdict (None: there is none).
        threshold: the test, in words.
        verdict: PASS, FAIL or N/A.
        detail: the numbers a reader needs to judge the verdict.
    """

    value: float | None
    threshold: str
    verdict: str
    detail: str


def na(threshold: str, why: str) -> Outcome:
    """The outcome of a check whose data are missing: N/A, never a silent PASS or FAIL.

    Args:
        threshold: the test, in words.
        why: which data are missing.

    Returns:
        An N/A outcome without a value.
    """
    return Outcome(None, threshold, NA, why)


Check = Callable[[RunData, str, ClaimThresholds], Outcome]


@dataclass(frozen=True)
class Claim:
    """A claim of the reference study (docs/reference-study.md#claims): its id, the statement
    it tests and the check that tests it."""

    id: str
    statement: str
    check: Check

    def result(self, data: RunData, variant: str, thresholds: ClaimThresholds) -> ClaimResult:
        """The claims-table row of this claim for one variant.

        Args:
            data: the run's tables.
            variant: ``reference`` or ``standard``.
            thresholds: the claim thresholds.

        Returns:
            The row: the check's outcome with the claim's id, variant and statement.
        """
        o = self.check(data, variant, thresholds)
        value = float("nan") if o.value is None else float(o.value)
        return ClaimResult(
            self.id, variant, self.statement, value, o.threshold, o.verdict, o.detail
        )


CLAIMS: dict[str, Claim] = {}
"""Every claim by id, in the order of the table (the order of registration below)."""


def claim(claim_id: str, statement: str) -> Callable[[Check], Check]:
    """Register a check as a claim, so that a new claim is one decorated function.

    Args:
        claim_id: the claim's id (``C1`` ...); the table lists claims in registration order.
        statement: what the claim says, in words.

    Returns:
        The decorator; the check itself is returned unchanged.
    """

    def register(check: Check) -> Check:
        CLAIMS[claim_id] = Claim(claim_id, statement, check)
        return check

    return register


# --------------------------------------------------------------------------------------------
# the checks
def _no_curve(model: str, variant: str) -> str:
    return f"no {model} {'loss' if variant == 'reference' else 'eval'}.csv with ≥ 2 points"


@claim("C1", "n-gram LM converges almost immediately, then stays flat")
def check_c1(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """early share = (L_init - L(C1_EARLY_FRACTION)) / (L_init - L_final) >=
    C1_MIN_EARLY_SHARE; N/A when the curve is flat (within FLAT_REL_TOL) from its first
    logged step on.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the early share.
    """
    thr = (f"early share ≥ {thresholds.c1_min_early_share:g} at "
           f"{thresholds.c1_early_fraction:.0%} of training")
    curve = loss_curve(data, "ngram", variant)
    if curve is None:
        return na(thr, _no_curve("n-gram", variant))
    l_init = float(curve["loss"].iloc[0])
    l_early = loss_at(curve, thresholds.c1_early_fraction)
    l_final = float(smooth(curve["loss"].to_numpy())[-1])
    if l_early is None:
        return na(
            thr,
            f"first logged step {int(curve['step'].iloc[0])} is after "
            f"{thresholds.c1_early_fraction:.0%} of training",
        )
    detail = (
        f"L_init {fmt(l_init)}, L({thresholds.c1_early_fraction:.0%}) {fmt(l_early)}, "
        f"final {fmt(l_final)}"
    )
    if l_init - l_final <= FLAT_REL_TOL * abs(l_final):
        if abs(l_init - l_final) <= FLAT_REL_TOL * abs(l_final):
            # flat from the first log on: any convergence happened before it, unseen
            return na(thr, detail + "; flat from the first logged step on")
        return Outcome(None, thr, FAIL, detail + "; the loss rose")
    share = (l_init - l_early) / (l_init - l_final)
    return Outcome(share, thr, PASS if share >= thresholds.c1_min_early_share else FAIL, detail)


@claim("C2", "PCFG LM improves throughout training")
def check_c2(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """late share = (L(0.5) - L_final) / (L_init - L_final) >= C2_MIN_LATE_SHARE (so the
    final loss is below the mid-training loss by a real margin).

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the late share.
    """
    thr = f"late share ≥ {thresholds.c2_min_late_share:g} (decrease after 50% / total decrease)"
    curve = loss_curve(data, "pcfg", variant)
    if curve is None:
        return na(thr, _no_curve("PCFG", variant))
    l_init = float(curve["loss"].iloc[0])
    l_mid = loss_at(curve, 0.5)
    l_final = float(smooth(curve["loss"].to_numpy())[-1])
    if l_mid is None:
        return na(thr, "the log starts after 50% of training")
    early = loss_at(curve, thresholds.c1_early_fraction)
    detail = f"L_init {fmt(l_init)}, L(50%) {fmt(l_mid)}, final {fmt(l_final)}"
    if l_init - l_final <= 0:
        return Outcome(None, thr, FAIL, detail + "; the loss did not decrease")
    share = (l_mid - l_final) / (l_init - l_final)
    if early is not None:
        done = (l_init - early) / (l_init - l_final)
        detail += f"; share done at {thresholds.c1_early_fraction:.0%}: {fmt(done)}"
    return Outcome(share, thr, PASS if share >= thresholds.c2_min_late_share else FAIL, detail)


@claim("C3", "PCFG model learns the syntax")
def check_c3(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """min(verb_to_object, connector_to_subject) at the final checkpoint >= C3_MIN_SCORE
    (subject_to_verb is reported: VSO sentences cap it ~0.84).

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is min(verb_to_object, connector_to_subject).
    """
    thr = f"min(V→O, C→S) at the final checkpoint ≥ {thresholds.c3_min_score:g}"
    m = data.panel("pcfg")
    scores = {}
    df = data.rows(m, "structure", variant)
    if len(df):
        last = df[df["step"] == df["step"].max()]
        scores = last.groupby("metric")["value"].mean().to_dict()
    need = ("verb_to_object", "connector_to_subject")
    if not all(k in scores for k in need):
        return na(thr, "no verb_to_object / connector_to_subject rows for PCFG")
    value = min(scores[k] for k in need)
    step = int(df["step"].max())
    detail = f"step {step}: " + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(scores.items()))
    return Outcome(value, thr, PASS if value >= thresholds.c3_min_score else FAIL, detail)


@claim("C4", "induction heads never form on n-gram data")
def check_c4(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """max over checkpoints of the induction series < C4_MAX_SCORE.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the maximum score.
    """
    thr = f"max over checkpoints < {thresholds.c4_max_score:g}"
    s = induction_series(data, "ngram", variant)
    if not len(s):
        return na(thr, f"no {variant} induction rows for the n-gram model")
    value = float(s.max())
    detail = f"{len(s)} checkpoints; max at step {int(s.idxmax())}, final {fmt(float(s.iloc[-1]))}"
    return Outcome(value, thr, PASS if value < thresholds.c4_max_score else FAIL, detail)


@claim("C5", "induction heads form abruptly on PCFG data")
def check_c5(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """With s0 the first and smax the maximum of the series and D = smax - s0, t10 / t90
    the first checkpoints where s >= s0 + 0.1 D / s0 + 0.9 D: smax >= C5_MIN_SCORE and rise
    width (t90 - t10) / last step <= C5_MAX_RISE_WIDTH. The steepest rise between
    consecutive checkpoints, its step and its share of D are reported. Where the mechanism
    probe ran, the claim also needs the final checkpoint's mechanism label to read
    ``content induction``: a score made by a positional or role-keyed copy head is not an
    induction head.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the rise width.
    """
    return _abrupt_induction(data, variant, thresholds, "pcfg")


@claim("C5-copy", "induction heads form abruptly on copy-design data (our control for C5)")
def check_c5_copy(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """C5's test on the copy design's model, where a real induction head can form: it shows
    what C5's scores and label say about a head that passes the random-repeat test. N/A
    when the run has no copy-design model.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the rise width.
    """
    return _abrupt_induction(data, variant, thresholds, COPY_KIND)


def _abrupt_induction(data: RunData, variant: str, thresholds: ClaimThresholds,
                      kind: str) -> Outcome:
    thr = (f"max ≥ {thresholds.c5_min_score:g} and 10→90% rise within ≤ "
           f"{thresholds.c5_max_rise_width:g} of training")
    who = KIND_TITLES[kind]
    if kind == COPY_KIND and data.panel(kind) is None:
        return na(thr, f"no {who} model in the run")
    s = induction_series(data, kind, variant)
    if len(s) < 3:
        return na(thr, f"{len(s)} {who} {variant} induction checkpoints (need ≥ 3)")
    labels = mechanism_labels(data, kind)
    if len(labels):
        thr += "; final mechanism label = content induction"
    r = rise(s)
    detail = f"max {fmt(r['max'])} (first {fmt(r['first'])})"
    mech = ""
    if len(labels):
        first = labels[labels == "content induction"]
        mech = (f"; mechanism label at the final checkpoint: {labels.iloc[-1]} (content "
                + (f"induction first at step {int(first.index[0])})" if len(first)
                   else "induction at no checkpoint)"))
    if not np.isfinite(r["width"]):
        return Outcome(None, thr, FAIL, detail + "; the score never rises" + mech)
    detail += (
        f"; 10→90% between steps {int(r['t10'])} and {int(r['t90'])}; steepest rise "
        f"+{fmt(r['steep'])} between steps {int(r['steep_from'])} and {int(r['steep_to'])}"
        f" ({r['steep_share']:.0%} of the rise)"
    )
    ok = r["max"] >= thresholds.c5_min_score and r["width"] <= thresholds.c5_max_rise_width
    if len(labels):
        ok = ok and labels.iloc[-1] == "content induction"
    return Outcome(r["width"], thr, PASS if ok else FAIL, detail + mech)


@claim("C6", "induction heads form early in the external model and persist")
def check_c6(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """The first checkpoint with s >= C6_MIN_SCORE lies within C6_EARLY_FRACTION of its
    training, and the final score >= C6_MIN_PERSIST x its maximum.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the fraction of training at which the score
        is reached.
    """
    thr = (
        f"reaches {thresholds.c6_min_score:g} within {thresholds.c6_early_fraction:.0%} of "
        f"training; final ≥ {thresholds.c6_min_persist:g} × max"
    )
    s = induction_series(data, "external", variant)
    if len(s) < 2:
        return na(thr, f"no external-model {variant} induction series")
    smax, final = float(s.max()), float(s.iloc[-1])
    reached = s[s >= thresholds.c6_min_score]
    persist = final / smax if smax > 0 else 0.0
    name = data.panel("external").model
    if not len(reached):
        return Outcome(
            None, thr, FAIL, f"{name}: never reaches {thresholds.c6_min_score:g} (max {fmt(smax)})"
        )
    frac = float(reached.index[0]) / float(s.index[-1])
    detail = (
        f"{name}: reaches {thresholds.c6_min_score:g} at step {int(reached.index[0])}; "
        f"max {fmt(smax)}, final {fmt(final)} ({persist:.0%} of max)"
    )
    ok = frac <= thresholds.c6_early_fraction and persist >= thresholds.c6_min_persist
    return Outcome(frac, thr, PASS if ok else FAIL, detail)


def _cell_detail(cells: pd.DataFrame, ok: pd.Series | None = None) -> str:
    """Cell counts and range, plus the first step from which every later cell satisfies
    the claim (so a failure confined to the untrained first checkpoints is visible)."""
    text = (
        f"{len(cells)} cells ({cells['layer'].nunique()} layers × {cells['step'].nunique()} "
        f"checkpoints), values {fmt(cells['value'].min())} … {fmt(cells['value'].max())}"
    )
    if ok is not None and not ok.all():
        bad_steps = cells.loc[~ok, "step"]
        later = sorted(s for s in cells["step"].unique() if s > bad_steps.max())
        text += (
            f"; holds at every cell from step {int(later[0])} on"
            if later
            else "; fails at the last checkpoint"
        )
        text += f" (violations at steps {sorted(int(x) for x in bad_steps.unique())[:8]})"
    return text


@claim("C7", "Hydra compensation at every PCFG layer and checkpoint")
def check_c7(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """Fraction of compensating PCFG cells >= C7_MIN_FRACTION.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the fraction of compensating cells.
    """
    what = "drop (k=1) < 0" if variant == "reference" else "compensation > 0"
    thr = f"fraction of cells with {what} ≥ {thresholds.c7_min_fraction:g}"
    cells = hydra_cells(data, data.panel("pcfg"), variant)
    if not len(cells):
        return na(thr, f"no {variant} hydra rows for the PCFG model")
    frac = float(cells["compensates"].mean())
    return Outcome(
        frac,
        thr,
        PASS if frac >= thresholds.c7_min_fraction else FAIL,
        _cell_detail(cells, cells["compensates"]),
    )


@claim("C8", "no Hydra compensation for n-gram")
def check_c8(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """Fraction of non-compensating n-gram cells >= C8_MIN_FRACTION (reference: drop > 0).

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the fraction of non-compensating cells.
    """
    neg = "drop (k=1) > 0" if variant == "reference" else "compensation ≤ 0"
    thr = f"fraction of cells with {neg} ≥ {thresholds.c8_min_fraction:g}"
    cells = hydra_cells(data, data.panel("ngram"), variant)
    if not len(cells):
        return na(thr, f"no {variant} hydra rows for the n-gram model")
    ok = cells["value"] > 0 if variant == "reference" else ~cells["compensates"]
    frac = float(ok.mean())
    return Outcome(frac, thr, PASS if frac >= thresholds.c8_min_fraction else FAIL,
                   _cell_detail(cells, ok))


@claim("C9", "partial Hydra compensation in the external model, concentrated in late layers")
def check_c9(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """Some but not all cells compensate, and the compensation mass (sum of max(0, -drop)
    or of max(0, compensation)) in layers >= C9_LATE_LAYER_FRACTION x deepest layer is
    >= C9_MIN_LATE_SHARE of the total.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the late-layer share of the compensation mass.
    """
    thr = (
        f"0 < fraction compensating < 1 and late-layer (≥ {thresholds.c9_late_layer_fraction:g} × "
        f"deepest) share of compensation mass ≥ {thresholds.c9_min_late_share:g}"
    )
    m = data.panel("external")
    cells = hydra_cells(data, m, variant)
    if not len(cells):
        return na(thr, f"no external-model {variant} hydra rows")
    frac = float(cells["compensates"].mean())
    cut = thresholds.c9_late_layer_fraction * float(cells["layer"].max())
    late = cells["layer"].astype(float) >= cut
    total = float(cells["mass"].sum())
    share = float(cells.loc[late, "mass"].sum()) / total if total > 0 else 0.0
    detail = f"{m.model}: {frac:.0%} of cells compensate; late layers ≥ {cut:.3g}; " + _cell_detail(
        cells
    )
    ok = 0 < frac < 1 and share >= thresholds.c9_min_late_share
    return Outcome(share, thr, PASS if ok else FAIL, detail)


@claim("C10", "function vectors emerge over training in the PCFG model")
def check_c10(data: RunData, variant: str, thresholds: ClaimThresholds) -> Outcome:
    """Reference: max over layers of ``fv_improvement`` at the final checkpoint > 0 and >
    the same at the first checkpoint; standard: the FV gain (:func:`~hierlab.figures.series.
    fv_gain`) at the final checkpoint > 0 and > the gain at the first. N/A with a single
    checkpoint.

    Args:
        data: the run's tables.
        variant: ``reference`` or ``standard``.
        thresholds: the claim thresholds (``figures.claims``).

    Returns:
        The verdict and its detail; the value is the one at the final checkpoint.
    """
    m = data.panel("pcfg")
    if variant == "reference":
        thr = "max-layer fv_improvement at the final checkpoint > 0 and > at the first"
        df = data.rows(m, "fv", "reference", "fv_improvement")
        s = (
            df.groupby(["step", "layer"])["value"].mean().groupby(level="step").max()
            if len(df)
            else pd.Series(dtype=float)
        )
        what = "fv_improvement"
    else:
        thr = (
            "FV gain (max-layer accuracy − zero-shot) at the final checkpoint > 0 "
            "and > at the first"
        )
        s = fv_gain(data, m)
        what = "fv_accuracy"
    if not len(s):
        return na(thr, f"no {what} rows for the PCFG model")
    if len(s) < 2:
        return na(
            thr,
            f"only one checkpoint (step {int(s.index[0])}): "
            f"value {fmt(float(s.iloc[0]))}; emergence needs ≥ 2",
        )
    first, final = float(s.iloc[0]), float(s.iloc[-1])
    detail = (
        f"first (step {int(s.index[0])}) {fmt(first)}, final (step {int(s.index[-1])}) {fmt(final)}"
    )
    ok = final > 0 and final > first
    return Outcome(final, thr, PASS if ok else FAIL, detail)


# --------------------------------------------------------------------------------------------
def evaluate_claims(
    run_dir: Path | str | None = None,
    cfg: FiguresConfig | None = None,
    extra_runs: Iterable[Path | str] = (),
    *,
    data: RunData | None = None,
    write: bool = True,
) -> pd.DataFrame:
    """Evaluate C1-C10 for both variants and write ``RUN/claims.csv``.

    Args:
        run_dir: the run directory (may be None when ``data`` is given and nothing is
            written).
        cfg: the figures section, whose ``claims`` are the thresholds (None: defaults).
        extra_runs: other run directories merged in (the external model's claims).
        data: the tables, when the caller already loaded them.
        write: write ``claims.csv`` into the run directory.

    Returns:
        The claims table: claim, variant, statement, value, threshold, verdict, detail.
    """
    cfg = cfg or FiguresConfig()
    if data is None:
        if run_dir is None:
            raise ValueError("evaluate_claims needs run_dir or data")
        data = load_run_data(run_dir, extra_runs=extra_runs)
    results = [
        asdict(c.result(data, variant, cfg.claims)) for c in CLAIMS.values() for variant in VARIANTS
    ]
    table = pd.DataFrame(results, columns=COLUMNS)
    if write:
        path = Path(run_dir if run_dir is not None else data.run_dir) / "claims.csv"
        atomic_write_text(path, table.to_csv(index=False))
        log.info("claims: %s", path)
    return table
