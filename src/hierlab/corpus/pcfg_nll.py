"""Exact per-token probabilities of the PCFG given a document's latent: the loss floor.

:func:`sentence_nll` is what ``PcfgSampler.latent_known_nll`` sums over Monte-Carlo
documents when repetition makes the entropy rate lack a closed form
(:func:`hierlab.corpus.entropy.pcfg_floors`). It runs inside the sampler's compiled loop
(``score``), which holds each document's latent and earlier sentences as it draws them.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.jit import njit

__all__ = ["sentence_nll"]


@njit(cache=True, inline="always")
def _mix_prob(beta, tok, bound, q):
    """P(tok) under "the bound word with probability beta, else the rank law (q = P_law)"."""
    return beta * (1.0 if tok == bound else 0.0) + (1.0 - beta) * q


@njit(cache=True, inline="always")
def _subject_prob(tok, rs, zs, n_active, act_mask):
    """P_law(subject tok): the rank law, or uniform over the paragraph's active set (MQAR)."""
    if n_active > 0:
        return act_mask[tok] / n_active
    return zs[rs[tok]]


@njit(cache=True)
def _fresh_prob(buf, pos, tok, svo_p, die_cum, n_c, off_v, off_o, off_c, eos, beta,
                n_active, act_mask, rs, rv, ro, zs, zv, zo, b_sv, b_vo, b_vs, b_so):
    """P(tok at ``pos`` | the sentence's first ``pos`` tokens, latent), for a fresh sentence.

    ``rs, rv, ro`` map a word id (within its role) to its Zipf rank index in the current
    latent; ``zs, zv, zo`` are rank probabilities; ``die_cum[k] = P(m >= k)``. With
    ``n_active > 0`` (MQAR) every subject is uniform over the active set ``act_mask`` and
    every object is keyed on its clause's subject (S->O), also in SVO.
    """
    is_s = tok < off_v
    is_v = off_v <= tok < off_o
    is_o = off_o <= tok < off_c
    if pos == 0:
        if is_s:
            return svo_p * _subject_prob(tok, rs, zs, n_active, act_mask)
        if is_v:
            return (1.0 - svo_p) * zv[rv[tok - off_v]]
        return 0.0
    first_s = buf[0] < off_v
    if not first_s:  # VSO: v s o EOS
        if pos == 1:
            if not is_s:
                return 0.0
            if n_active > 0:
                return act_mask[tok] / n_active
            bound = b_vs[buf[0] - off_v]
            return _mix_prob(beta, tok, bound, zs[rs[tok]])
        if pos == 2:
            if not is_o:
                return 0.0
            bound = b_so[buf[1]]
            return _mix_prob(beta, tok, bound, zo[ro[tok - off_o]])
        return 1.0 if (pos == 3 and tok == eos) else 0.0
    # SVO: s v o (c s v o)^m EOS
    slot = (pos - 1) % 4  # 0: verb, 1: object, 2: EOS or connector, 3: clause subject
    if slot == 0:
        if not is_v:
            return 0.0
        bound = b_sv[buf[pos - 1]]
        return _mix_prob(beta, tok, bound, zv[rv[tok - off_v]])
    if slot == 1:
        if not is_o:
            return 0.0
        bound = b_so[buf[pos - 2]] if n_active > 0 else b_vo[buf[pos - 1] - off_v]
        return _mix_prob(beta, tok, bound, zo[ro[tok - off_o]])
    if slot == 2:
        k = (pos - 3) // 4  # clauses completed
        if die_cum[k] <= 0.0:
            return 0.0
        more = die_cum[k + 1] / die_cum[k] if k + 1 < die_cum.shape[0] else 0.0
        if tok == eos:
            return 1.0 - more
        if off_c <= tok < eos:
            return more / n_c
        return 0.0
    return _subject_prob(tok, rs, zs, n_active, act_mask) if is_s else 0.0


@njit(cache=True)
def sentence_nll(out, start, length, prev_starts, prev_lens, n_prev, w_fresh, alive, svo_p,
                  die_cum, n_c, off_v, off_o, off_c, eos, beta, n_active, act_mask,
                  rs, rv, ro, zs, zv, zo, b_sv, b_vo, b_vs, b_so):
    """Exact -log P of one sentence given the document latent and its earlier sentences,
    and the posterior probability that it was drawn fresh.

    The hypotheses are "fresh" (prior weight ``w_fresh``) and "a copy of earlier sentence
    i" (prior weight ``alive[i]``, i < n_prev; 0 for a sentence that cannot be a source;
    overwritten here); each token is predicted by their posterior mixture. The reference
    repeats use ``w_fresh = 1 - rho`` and ``rho / n_prev`` each.
    """
    w_f = w_fresh
    nll = 0.0
    buf = out[start : start + length]
    for pos in range(length):
        tok = buf[pos]
        pf = 0.0
        if w_f > 0.0:
            pf = _fresh_prob(buf, pos, tok, svo_p, die_cum, n_c, off_v, off_o, off_c, eos,
                             beta, n_active, act_mask, rs, rv, ro, zs, zv, zo,
                             b_sv, b_vo, b_vs, b_so)
        num = w_f * pf
        den = w_f
        for i in range(n_prev):
            if alive[i] > 0.0:
                den += alive[i]
                if pos < prev_lens[i] and out[prev_starts[i] + pos] == tok:
                    num += alive[i]
                else:
                    alive[i] = 0.0
        nll -= np.log(num / den)
        w_f *= pf
        # renormalise to avoid underflow on long sentences
        tot = w_f
        for i in range(n_prev):
            tot += alive[i]
        if tot > 0.0:
            w_f /= tot
            for i in range(n_prev):
                alive[i] /= tot
    return nll, w_f
