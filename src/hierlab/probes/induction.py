"""Induction-type attention on repeated random tokens, copying scores, phase changes.

The reference study's induction score (in fact a duplicate-token score) beside the
literature's prefix-matching, duplicate-token and OV copying scores, all on one set of
seeded random repeats; the in-distribution and in-context scores are in
:mod:`hierlab.probes.in_context`. Formulas: docs/probes.md#induction; caveats:
docs/design-probes.md#induction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from hierlab.errors import DataError
from hierlab.probes import in_context as icmod
from hierlab.probes.hooks import HookedModel
from hierlab.probes.registry import register

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]

__all__ = [
    "attention_scores",
    "copying_scores",
    "induction_reference",
    "induction_standard",
    "measure_reference",
    "measure_standard",
    "phase_change",
    "repeated_random_tokens",
]


def repeated_random_tokens(
    samples: int,
    half_length: int,
    vocab_size: int,
    margin: int = 100,
    seed: int = 0,
    id_range: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Random ids repeated twice: the prompt on which a copying head shows itself.

    Args:
        samples: how many prompts.
        half_length: ids per half, ``n``.
        vocab_size: the model's vocabulary ``V``.
        margin: ids are drawn from ``[margin, V - margin)``, away from special tokens.
        seed: seed of the draw (the reference's was unseeded).
        id_range: ``[lo, hi)`` to draw from instead (small vocabularies, where the
            margin leaves nothing).

    Returns:
        ``[samples, 2 * half_length]`` ids, each row two equal halves.

    Raises:
        DataError: no id left to draw from, or ``id_range`` beyond the vocabulary.
    """
    lo, hi = id_range if id_range is not None else (margin, vocab_size - margin)
    if id_range is not None and hi > vocab_size:
        raise DataError(f"induction.id_range {id_range} exceeds the vocabulary ({vocab_size})")
    if hi <= lo:
        raise DataError(f"vocabulary of {vocab_size} ids leaves no ids in [{lo}, {hi})")
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(lo, hi, (samples, half_length), generator=g)
    return torch.cat([half, half], dim=1)


@torch.no_grad()
def attention_scores(
    model: HookedModel,
    tokens: torch.Tensor,
    half_length: int,
    k_max: int = 10,
    batch_size: int = 20,
) -> dict[str, torch.Tensor]:
    """Per-sample attention scores on repeated prompts, from one eager forward each.

    Args:
        model: the hooked model.
        tokens: ``[S, 2n]`` prompts whose halves are equal.
        half_length: ``n``, the length of each half.
        k_max: the reference score is computed for ``k = 1..k_max``.
        batch_size: prompts per forward.

    Returns:
        ``reference [S, K, L, H]`` (key ``q - n``, queries ``n+k..2n-1``),
        ``prefix_matching [S, L, H]`` (key ``q - n + 1``) and
        ``duplicate_token [S, L, H]`` (key ``q - n``, queries ``n+1..2n-1``).
    """
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.n_layers)]
    q = torch.arange(half_length, 2 * half_length)
    ref, pm, dup = [], [], []
    with model.eager():
        for b in range(0, tokens.shape[0], batch_size):
            _, cache = model.run_with_cache(tokens[b : b + batch_size], names)
            pat = torch.stack([cache[nm].float() for nm in names], dim=1)  # [B, L, H, T, T]
            diag_dup = pat[..., q, q - half_length]  # [B, L, H, n]
            diag_pm = pat[..., q, q - half_length + 1]
            dup.append(diag_dup[..., 1:].mean(-1).cpu())  # query n: key 0, the sink
            pm.append(diag_pm.mean(-1).cpu())
            # reference: queries n+k+j, keys k+j, j=0..n-k-1 -> the tail of diag_dup from k
            per_k = [diag_dup[..., k:].mean(-1) for k in range(1, k_max + 1)]
            ref.append(torch.stack(per_k, 1).cpu())
    return {
        "reference": torch.cat(ref),
        "prefix_matching": torch.cat(pm),
        "duplicate_token": torch.cat(dup),
    }


def _base(metric: str, value: float, n: int, seed: int, layer=None, head=None, k=None) -> Row:
    return {
        "metric": metric,
        "layer": layer,
        "head": head,
        "k": k,
        "value": float(value),
        "n_samples": n,
        "seed": seed,
    }


def induction_reference(scores: dict[str, torch.Tensor], seed: int) -> list[Row]:
    """The reference study's rows from :func:`attention_scores`.

    Args:
        scores: the output of :func:`attention_scores`.
        seed: the prompts' seed, recorded in the rows.

    Returns:
        Rows ``score`` (max over heads of the mean over samples; the study's notebook),
        ``score_max_then_mean`` (mean over samples of the per-sample max; its OLMo
        evaluator), both per ``k``, and ``head_score`` per ``k``, layer and head.
    """
    r = scores["reference"]  # [S, K, L, H]
    s, kk, nl, nh = r.shape
    rows: list[Row] = []
    mean = r.mean(0)  # [K, L, H]
    per_sample_max = r.reshape(s, kk, -1).max(-1).values  # [S, K]
    for ki in range(kk):
        k = ki + 1
        rows.append(_base("score", mean[ki].max(), s, seed, k=k))
        rows.append(_base("score_max_then_mean", per_sample_max[:, ki].mean(), s, seed, k=k))
        for layer in range(nl):
            for head in range(nh):
                rows.append(_base("head_score", mean[ki, layer, head], s, seed, layer, head, k))
    return rows


@torch.no_grad()
def copying_scores(model: HookedModel) -> torch.Tensor:
    """OV-circuit copying score ``sum(lambda) / sum(|lambda|)`` (Elhage et al. 2021).

    The full OV circuit ``W_U G_f W_O^h W_V^h G_1 W_E`` (``V x V``) has the same non-zero
    eigenvalues as the ``dh x dh`` matrix ``W_V^h G_1 (W_E^T W_U G_f) W_O^h``, which is what
    we diagonalise, so the score costs no ``V x V`` matrix. ``G_1`` is the gain of the norm
    attention reads through (none in OLMo-2); a family that normalises the attention
    output (OLMo-2) has that norm's gain folded into ``W_O``.

    Args:
        model: the hooked model (weights only; no forward is run).

    Returns:
        ``[L, H]`` scores in ``[-1, 1]``; +1 means the head copies the attended token to
        the output.
    """
    we = model.embed.weight.float()  # [V, d]
    wu = model.lm_head.weight.float()  # [V, d]
    gf = getattr(model.final_norm, "weight", None)
    wu_eff = wu * gf.float() if gf is not None else wu
    eu = we.T @ wu_eff  # [d, d]: sum_t e_t u_t^T
    out = torch.zeros(model.n_layers, model.n_heads)
    rep = model.n_heads // model.n_kv_heads
    for layer in range(model.n_layers):
        wv = model.v_weight(layer).float()  # [Hkv*dh, d]
        wo = model.o_weight(layer).float()  # [d, H*dh]
        norm = model.input_norm(layer)
        g1 = getattr(norm, "weight", None) if norm is not None else None
        wv_eff = wv * g1.float() if g1 is not None else wv
        post = model.attn_out(layer)
        g_post = getattr(post, "weight", None) if post is not model.attn(layer) else None
        if g_post is not None:
            wo = wo * g_post.float()[:, None]
        for h in range(model.n_heads):
            kv = h // rep
            wvh = wv_eff[kv * model.d_head : (kv + 1) * model.d_head]  # [dh, d]
            woh = wo[:, h * model.d_head : (h + 1) * model.d_head]  # [d, dh]
            m = wvh @ eu @ woh  # [dh, dh]
            lam = torch.linalg.eigvals(m.double())
            denom = lam.abs().sum().item()
            out[layer, h] = float(lam.real.sum().item() / denom) if denom > 0 else 0.0
    return out


def induction_standard(
    scores: dict[str, torch.Tensor], copying: torch.Tensor, seed: int
) -> list[Row]:
    """The literature's rows from :func:`attention_scores` and :func:`copying_scores`.

    Args:
        scores: the output of :func:`attention_scores`.
        copying: the output of :func:`copying_scores`.
        seed: the prompts' seed, recorded in the rows.

    Returns:
        Rows ``prefix_matching_max`` and, per head, ``prefix_matching``,
        ``duplicate_token`` and ``copying``.
    """
    pm = scores["prefix_matching"].mean(0)
    dup = scores["duplicate_token"].mean(0)
    s = scores["prefix_matching"].shape[0]
    rows: list[Row] = [_base("prefix_matching_max", pm.max(), s, seed)]
    for layer in range(pm.shape[0]):
        for head in range(pm.shape[1]):
            rows.append(_base("prefix_matching", pm[layer, head], s, seed, layer, head))
            rows.append(_base("duplicate_token", dup[layer, head], s, seed, layer, head))
            rows.append(_base("copying", copying[layer, head], 0, seed, layer, head))
    return rows



# ------------------------------------------------------------------ registered units
def _random_scores(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Scores on repeated random tokens, computed once per checkpoint for both variants."""
    if "induction" not in ctx.memo:
        c = ctx.cfg.induction
        toks = repeated_random_tokens(c.samples, c.n, ctx.vocab, c.id_margin, c.seed, c.id_range)
        ctx.memo["induction"] = attention_scores(ctx.hm, toks, c.n, c.k_max, c.batch_size)
    return ctx.memo["induction"]


def _indist_scores(ctx: ProbeContext) -> dict[str, torch.Tensor] | None:
    """Scores on test-split spans repeated twice (None without a test split)."""
    if "induction_indist" not in ctx.memo:
        c = ctx.cfg.induction
        out = None
        if ctx.reader is not None:
            n = c.indist_n or c.n
            try:
                toks = icmod.repeated_spans(ctx.reader, c.indist_samples, n, c.seed)
                out = attention_scores(ctx.hm, toks, n, c.k_max, c.batch_size)
            except DataError as err:
                log.warning("%s: in-distribution induction skipped: %s", ctx.ckpt.name, err)
        ctx.memo["induction_indist"] = out
    return ctx.memo["induction_indist"]


@register("induction", "reference")
def measure_reference(context: ProbeContext) -> list[Row]:
    """The registered reference unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        The reference rows and, with a test split, the same metrics on test-split
        repeats (suffixed ``_indist``).
    """
    seed = context.cfg.induction.seed
    scores = _random_scores(context)
    indist = _indist_scores(context)
    rows = induction_reference(scores, seed)
    return rows + (icmod.indist_reference_rows(indist, seed) if indist else [])


@register("induction", "standard")
def measure_standard(context: ProbeContext) -> list[Row]:
    """The registered standard unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        Prefix matching, duplicate-token and copying rows, their ``_indist`` twins, then
        the loss by position, ICL and previous-token rows
        (:func:`~hierlab.probes.in_context.in_context_rows`).
    """
    seed = context.cfg.induction.seed
    scores = _random_scores(context)
    indist = _indist_scores(context)
    rows = induction_standard(scores, copying_scores(context.hm), seed)
    rows += icmod.indist_standard_rows(indist, seed) if indist else []
    return rows + icmod.in_context_rows(context)


def phase_change(
    metrics: pd.DataFrame,
    metric: str = "score",
    *,
    probe: str | None = None,
    variant: str | None = None,
    k: int | None = 1,
    reduce: str = "max",
) -> pd.DataFrame:
    """Where a metric rises fastest across checkpoints, per (source, model).

    The metric is reduced over layers and heads per checkpoint, sorted by step, and the
    largest increase per step between consecutive checkpoints is located: the phase
    change of an induction score.

    Args:
        metrics: a metrics table (``hierlab.load_run(RUN).metrics`` or one probe's).
        metric: the metric to follow.
        probe: keep only this probe's rows (``None``: all).
        variant: keep only this variant's rows (``None``: all).
        k: keep only rows with this ``k`` when the metric has one (``None``: all).
        reduce: ``max`` or ``mean`` over layers and heads per checkpoint.

    Returns:
        One row per (source, model) with at least two checkpoints: ``source, model,
        metric, step_before, step_after, step`` (the midpoint), ``rise`` (the value
        change over the interval) and ``slope``.
    """
    d = metrics[metrics["metric"] == metric]
    if probe is not None:
        d = d[d["probe"] == probe]
    if variant is not None:
        d = d[d["variant"] == variant]
    if k is not None and "k" in d and d["k"].notna().any():
        d = d[d["k"] == k]
    out = []
    for (source, model), g in d.groupby(["source", "model"], sort=True):
        s = g.groupby("step")["value"].agg(reduce).sort_index()
        if len(s) < 2:
            continue
        steps = s.index.to_numpy(dtype=np.float64)
        vals = s.to_numpy(dtype=np.float64)
        slope = np.diff(vals) / np.maximum(np.diff(steps), 1e-12)
        i = int(np.argmax(slope))
        out.append(
            {
                "source": source,
                "model": model,
                "metric": metric,
                "step_before": int(steps[i]),
                "step_after": int(steps[i + 1]),
                "step": float((steps[i] + steps[i + 1]) / 2),
                "rise": float(vals[i + 1] - vals[i]),
                "slope": float(slope[i]),
            }
        )
    return pd.DataFrame(
        out,
        columns=["source", "model", "metric", "step_before", "step_after", "step", "rise", "slope"],
    )
