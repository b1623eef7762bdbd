"""Induction-type attention on repeated random tokens, copying, phase changes.

Prompts: ``n`` ids uniform in ``[margin, V - margin)`` repeated twice (length ``2n``, no
BOS), drawn from a seeded ``torch.Generator`` (the reference was unseeded).
``A[l, h, q, key]`` is the eager attention probability.

* **reference** (docs/reference-study.md#induction-score, exactly): for ``k = 1..k_max``,
  ``head_score[k, l, h] = mean_{j=0..n-k-1} A[l, h, n+k+j, k+j]`` -- key ``q - n``, the
  *earlier copy of the query token itself* (a duplicate-token pattern). ``score[k]`` =
  max over (l, h) of the mean over samples (the notebook); ``score_max_then_mean[k]`` =
  mean over samples of the per-sample max (the OLMo evaluator).
* **standard**: ``prefix_matching[l, h] = mean_{q=n..2n-1} A[l, h, q, q-n+1]`` -- the token
  that *followed* the earlier occurrence (Olsson et al. 2022, "prefix matching"; the
  TransformerLens ``detect_head('induction_head')`` pattern, which however divides by the
  total attention of *all* rows, so a perfect head scores ~0.5 there on a BOS-less
  repeat; we average over the second-half queries so a perfect head scores 1).
  ``duplicate_token[l, h] = mean_{q=n+1..2n-1} A[l, h, q, q-n]`` (query ``n``'s key 0 is
  the attention sink without BOS; the reference's ``k >= 1`` leaves it out too).
  ``copying`` is the OV-circuit eigenvalue score ``sum(lambda) / sum(|lambda|)`` of
  ``W_U G_f W_O^h W_V^h G_1 W_E``
  (Elhage et al. 2021; Olsson et al. 2022), with the RMSNorm gains ``G`` folded in when the
  norms have weights.

The in-distribution repeats, the previous-token score, the loss by position and the ICL
score are in :mod:`hierlab.probes.in_context`.
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
    n: int,
    vocab_size: int,
    margin: int = 100,
    seed: int = 0,
    id_range: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``[samples, 2n]`` ids: ``n`` uniform ids in ``[margin, V - margin)`` (or in
    ``id_range``), repeated twice."""
    lo, hi = id_range if id_range is not None else (margin, vocab_size - margin)
    if id_range is not None and hi > vocab_size:
        raise DataError(f"induction.id_range {id_range} exceeds the vocabulary ({vocab_size})")
    if hi <= lo:
        raise DataError(f"vocabulary of {vocab_size} ids leaves no ids in [{lo}, {hi})")
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(lo, hi, (samples, n), generator=g)
    return torch.cat([half, half], dim=1)


@torch.no_grad()
def attention_scores(
    hm: HookedModel, tokens: torch.Tensor, n: int, k_max: int = 10, batch_size: int = 20
) -> dict[str, torch.Tensor]:
    """Per-sample scores from the attention patterns.

    Returns ``reference [S, K, L, H]`` (key ``q - n``, queries ``n+k..2n-1``),
    ``prefix_matching [S, L, H]`` (key ``q - n + 1``) and ``duplicate_token [S, L, H]``
    (key ``q - n``, queries ``n+1..2n-1``).
    """
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(hm.n_layers)]
    q = torch.arange(n, 2 * n)
    ref, pm, dup = [], [], []
    with hm.eager():
        for b in range(0, tokens.shape[0], batch_size):
            _, cache = hm.run_with_cache(tokens[b : b + batch_size], names)
            pat = torch.stack([cache[nm].float() for nm in names], dim=1)  # [B, L, H, T, T]
            diag_dup = pat[..., q, q - n]  # [B, L, H, n]
            diag_pm = pat[..., q, q - n + 1]
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
    """Rows ``score``, ``score_max_then_mean`` (per k) and ``head_score`` (per k, l, h)."""
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
def copying_scores(hm: HookedModel) -> torch.Tensor:
    """``[L, H]`` OV-circuit copying score ``sum(lambda) / sum(|lambda|)`` (Elhage et al. 2021).

    The full OV circuit ``W_U G_f W_O^h W_V^h G_1 W_E`` (``V x V``) has the same non-zero
    eigenvalues as the ``dh x dh`` matrix ``W_V^h G_1 (W_E^T W_U G_f) W_O^h``, which is what
    we diagonalise. +1 means the head copies the attended token to the output. ``G_1`` is
    the gain of the norm attention reads through (none in OLMo-2); a family that normalises
    the attention output (OLMo-2) has that norm's gain folded into ``W_O``.
    """
    we = hm.embed.weight.float()  # [V, d]
    wu = hm.lm_head.weight.float()  # [V, d]
    gf = getattr(hm.final_norm, "weight", None)
    wu_eff = wu * gf.float() if gf is not None else wu
    eu = we.T @ wu_eff  # [d, d]: sum_t e_t u_t^T
    out = torch.zeros(hm.n_layers, hm.n_heads)
    rep = hm.n_heads // hm.n_kv_heads
    for layer in range(hm.n_layers):
        wv = hm.v_weight(layer).float()  # [Hkv*dh, d]
        wo = hm.o_weight(layer).float()  # [d, H*dh]
        norm = hm.input_norm(layer)
        g1 = getattr(norm, "weight", None) if norm is not None else None
        wv_eff = wv * g1.float() if g1 is not None else wv
        post = hm.attn_out(layer)
        g_post = getattr(post, "weight", None) if post is not hm.attn(layer) else None
        if g_post is not None:
            wo = wo * g_post.float()[:, None]
        for h in range(hm.n_heads):
            kv = h // rep
            wvh = wv_eff[kv * hm.d_head : (kv + 1) * hm.d_head]  # [dh, d]
            woh = wo[:, h * hm.d_head : (h + 1) * hm.d_head]  # [d, dh]
            m = wvh @ eu @ woh  # [dh, dh]
            lam = torch.linalg.eigvals(m.double())
            denom = lam.abs().sum().item()
            out[layer, h] = float(lam.real.sum().item() / denom) if denom > 0 else 0.0
    return out


def induction_standard(
    scores: dict[str, torch.Tensor], copying: torch.Tensor, seed: int
) -> list[Row]:
    """Rows ``prefix_matching(_max)``, ``duplicate_token`` and ``copying``."""
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
def measure_reference(ctx: ProbeContext) -> list[Row]:
    """The reference scores, beside them the same metrics on test-split repeats (``_indist``)."""
    seed = ctx.cfg.induction.seed
    scores = _random_scores(ctx)
    indist = _indist_scores(ctx)
    rows = induction_reference(scores, seed)
    return rows + (icmod.indist_reference_rows(indist, seed) if indist else [])


@register("induction", "standard")
def measure_standard(ctx: ProbeContext) -> list[Row]:
    """Prefix matching, duplicate-token and copying scores, their ``_indist`` twins, then
    the loss by position, ICL and previous-token rows (:func:`in_context.in_context_rows`)."""
    seed = ctx.cfg.induction.seed
    scores = _random_scores(ctx)
    indist = _indist_scores(ctx)
    rows = induction_standard(scores, copying_scores(ctx.hm), seed)
    rows += icmod.indist_standard_rows(indist, seed) if indist else []
    return rows + icmod.in_context_rows(ctx)


def phase_change(
    df: pd.DataFrame,
    metric: str = "score",
    *,
    probe: str | None = None,
    variant: str | None = None,
    k: int | None = 1,
    reduce: str = "max",
) -> pd.DataFrame:
    """Step of the steepest rise of a metric across checkpoints, per (source, model).

    The metric is reduced over layers/heads per checkpoint (``reduce``: max or mean),
    sorted by step, and the largest increase per step between consecutive checkpoints is
    located. Returns ``source, model, metric, step_before, step_after, step`` (the midpoint),
    ``rise`` (value change over the interval) and ``slope``.
    """
    d = df[df["metric"] == metric]
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
