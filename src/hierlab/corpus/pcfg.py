"""The PCFG sampler: documents of sections of paragraphs of SVO/VSO sentences (SPEC §1).

A *base document* ``d`` has a latent state: for each content role (subject, verb, object)
a random permutation mapping a Zipf rank to a word, derived from ``(seed, d)`` alone.
Optionally each section and paragraph re-permutes a fraction of those ranks (our
extension: latent state at every level, so users can ablate which level matters). A base
document is realised ``repetitions`` times with fresh sentence draws.

Sentence grammar (draw order does not matter for the distribution):
``s v o (c s v o){m} EOS`` with probability ``svo_probability`` and m drawn from
``extra_clause_probs``; otherwise ``v s o EOS``. Connectors are uniform, not permuted.

Why numba: the sampler is a tight per-token loop with data-dependent branching (clauses,
rejection against the test set) that vectorises poorly; compiled it runs at the speed of
the reference's Rust generator per core, and it is a pure function of (config, shard), so
shards parallelise across processes or machines with identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.rng import (
    STAGE_BINDING,
    STAGE_LATENT,
    STAGE_ORDER,
    STAGE_PARAGRAPH,
    STAGE_SECTION,
    STAGE_SENT_TEST,
    STAGE_SENT_TRAIN,
    alias_draw,
    alias_table,
    feistel_index,
    mix64,
    next_below,
    next_float,
    shuffle_inplace,
    unit_seed,
    zipf_probs,
)

ROLE_S, ROLE_V, ROLE_O, ROLE_C, ROLE_SPECIAL = 0, 1, 2, 3, 4
_EMPTY16 = np.zeros(0, dtype=np.uint16)
_LEVELS = {"document": 0, "section": 1, "paragraph": 2}
_SCOPES = {"document": 0, "paragraph": 1}


# --------------------------------------------------------------------------------------
# exact de-duplication against the test split
# --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _sentence_key(buf: np.ndarray, length: int) -> np.uint64:
    """A 4-token sentence packed exactly into 64 bits; a 64-bit hash otherwise."""
    if length == 4:
        return (np.uint64(buf[0]) | (np.uint64(buf[1]) << np.uint64(16))
                | (np.uint64(buf[2]) << np.uint64(32)) | (np.uint64(buf[3]) << np.uint64(48)))
    h = mix64(np.uint64(length) + np.uint64(0x9E3779B97F4A7C15))
    for i in range(length):
        h = mix64(h ^ (np.uint64(buf[i]) + np.uint64(0x632BE59BD9B4E019)))
    return h


@njit(cache=True)
def sentence_spans(tokens: np.ndarray, eos: int, boundary: int) -> tuple:
    """Start and length (with EOS) of every sentence; boundary tokens are skipped."""
    n_sent = 0
    for t in tokens:
        if t == eos:
            n_sent += 1
    starts = np.empty(n_sent, dtype=np.int64)
    lens = np.empty(n_sent, dtype=np.int32)
    k = 0
    start = 0
    for i in range(tokens.shape[0]):
        t = tokens[i]
        if t == boundary:
            start = i + 1
        elif t == eos:
            starts[k] = start
            lens[k] = i + 1 - start
            k += 1
            start = i + 1
    return starts, lens


@njit(cache=True, inline="always")
def _probe(buf, length, table, starts, tokens) -> np.int64:
    """Slot of ``buf`` in ``table``: its own if present, else the empty slot ending the run.

    Each slot is two uint64 in one cache line: the key and ``length << 32 | index + 1``
    (0 = empty). 4-token sentences (most test duplicates) are decided by the exact packed
    key alone; longer ones compare their tokens after a 64-bit hash match.
    """
    mask = table.shape[0] // 2 - 1
    key = _sentence_key(buf, length)
    slot = np.int64(mix64(key) & np.uint64(mask))
    while True:
        meta = table[2 * slot + 1]
        if meta == 0:
            return slot
        if table[2 * slot] == key and np.int64(meta >> np.uint64(32)) == length:
            if length == 4:
                return slot
            o = np.int64(meta & np.uint64(0xFFFFFFFF)) - 1
            same = True
            for q in range(length):
                if tokens[starts[o] + q] != buf[q]:
                    same = False
                    break
            if same:
                return slot
        slot = (slot + 1) & mask


@njit(cache=True)
def _build_table(tokens: np.ndarray, eos: int, boundary: int) -> tuple:
    """Index every distinct sentence of ``tokens`` in an open-addressing hash table."""
    starts, lens = sentence_spans(tokens, eos, boundary)
    n_sent = starts.shape[0]
    size = 1
    while size < 2 * n_sent + 2:
        size *= 2
    table = np.zeros(2 * size, dtype=np.uint64)
    n_unique = 0
    for j in range(n_sent):
        s, length = starts[j], lens[j]
        sent = tokens[s : s + length]
        slot = _probe(sent, length, table, starts, tokens)
        if table[2 * slot + 1] == 0:
            table[2 * slot] = _sentence_key(sent, length)
            table[2 * slot + 1] = (np.uint64(length) << np.uint64(32)) | np.uint64(j + 1)
            n_unique += 1
    return table, starts, lens, n_unique


@njit(cache=True, inline="always")
def _in_table(buf, length, table, starts, tokens) -> bool:
    return table[2 * _probe(buf, length, table, starts, tokens) + 1] != 0


@dataclass
class SentenceSet:
    """Exact membership of token sequences: the test split's sentences (with EOS)."""

    tokens: np.ndarray
    table: np.ndarray
    starts: np.ndarray
    lens: np.ndarray
    n_unique: int

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, eos: int, boundary: int | None) -> SentenceSet:
        tokens = np.ascontiguousarray(tokens, dtype=np.uint16)
        table, starts, lens, n_unique = _build_table(
            tokens, eos, -1 if boundary is None else boundary
        )
        return cls(tokens, table, starts, lens, int(n_unique))

    @classmethod
    def empty(cls) -> SentenceSet:
        return cls(_EMPTY16, np.zeros(2, np.uint64), np.zeros(0, np.int64),
                   np.zeros(0, np.int32), 0)

    def __contains__(self, sentence: object) -> bool:
        buf = np.asarray(sentence, dtype=np.uint16)
        if self.n_unique == 0:
            return False
        return bool(_in_table(buf, len(buf), self.table, self.starts, self.tokens))


# --------------------------------------------------------------------------------------
# latent state
# --------------------------------------------------------------------------------------
@njit(cache=True)
def _doc_latent(seed, base, n_s, n_v, n_o, off_v, off_o, ps, pv, po) -> None:
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, STAGE_LATENT, base, 0)
    for i in range(n_s):
        ps[i] = i
    for i in range(n_v):
        pv[i] = off_v + i
    for i in range(n_o):
        po[i] = off_o + i
    shuffle_inplace(state, ps)
    shuffle_inplace(state, pv)
    shuffle_inplace(state, po)


@njit(cache=True)
def _repermute(state, perm, k, scratch) -> None:
    """Re-permute the words at k uniformly chosen ranks of ``perm`` (in place)."""
    n = perm.shape[0]
    if k <= 0:
        return
    for i in range(n):
        scratch[i] = i
    for i in range(k):  # partial Fisher-Yates: scratch[:k] is a uniform k-subset
        j = i + next_below(state, n - i)
        tmp = scratch[i]
        scratch[i] = scratch[j]
        scratch[j] = tmp
    vals = np.empty(k, dtype=perm.dtype)
    for i in range(k):
        vals[i] = perm[scratch[i]]
    shuffle_inplace(state, vals)
    for i in range(k):
        perm[scratch[i]] = vals[i]


@njit(cache=True)
def _level_latent(seed, stage, base, sub, src_s, src_v, src_o, dst_s, dst_v, dst_o, ks, kv, ko,
                  scratch) -> None:
    dst_s[:] = src_s
    dst_v[:] = src_v
    dst_o[:] = src_o
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, stage, base, sub)
    _repermute(state, dst_s, ks, scratch)
    _repermute(state, dst_v, kv, scratch)
    _repermute(state, dst_o, ko, scratch)


@njit(cache=True)
def _draw_bindings(seed, base, sub, n_s, n_v, n_o, off_v, off_o, b_sv, b_vo, b_vs, b_so):
    """Uniform random maps S->V, V->O, V->S, S->O (global ids) of one binding unit."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, STAGE_BINDING, base, sub)
    for i in range(n_s):
        b_sv[i] = off_v + next_below(state, n_v)
    for i in range(n_v):
        b_vo[i] = off_o + next_below(state, n_o)
    for i in range(n_v):
        b_vs[i] = next_below(state, n_s)
    for i in range(n_s):
        b_so[i] = off_o + next_below(state, n_o)


@njit(cache=True, inline="always")
def _binding_sub(level, sc, pg, paras):
    """Sub-unit index of the binding map in force: 0 (document), per section, per paragraph."""
    if level == 0:
        return 0
    if level == 1:
        return 1 + sc
    return (1 << 20) + sc * paras + pg


@njit(cache=True, inline="always")
def _bound_or_law(state, beta, bound, perm, zp, za):
    """The bound word with probability beta, else a draw from the rank law."""
    if next_float(state) < beta:
        return bound
    return perm[alias_draw(state, zp, za)]


@njit(cache=True, inline="always")
def _mix_prob(beta, tok, bound, q):
    """P(tok) under "the bound word with probability beta, else the rank law (q = P_law)"."""
    return beta * (1.0 if tok == bound else 0.0) + (1.0 - beta) * q


@njit(cache=True)
def _fresh_prob(buf, pos, tok, svo_p, die_cum, n_c, off_v, off_o, off_c, eos, beta,
                rs, rv, ro, zs, zv, zo, b_sv, b_vo, b_vs, b_so):
    """P(tok at ``pos`` | the sentence's first ``pos`` tokens, latent), for a fresh sentence.

    ``rs, rv, ro`` map a word id (within its role) to its Zipf rank index in the current
    latent; ``zs, zv, zo`` are rank probabilities; ``die_cum[k] = P(m >= k)``.
    """
    is_s = tok < off_v
    is_v = off_v <= tok < off_o
    is_o = off_o <= tok < off_c
    if pos == 0:
        if is_s:
            return svo_p * zs[rs[tok]]
        if is_v:
            return (1.0 - svo_p) * zv[rv[tok - off_v]]
        return 0.0
    first_s = buf[0] < off_v
    if not first_s:  # VSO: v s o EOS
        if pos == 1:
            if not is_s:
                return 0.0
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
        bound = b_vo[buf[pos - 1] - off_v]
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
    return zs[rs[tok]] if is_s else 0.0


@njit(cache=True)
def _sentence_nll(out, start, length, prev_starts, prev_lens, n_prev, rho, svo_p, die_cum,
                  n_c, off_v, off_o, off_c, eos, beta, rs, rv, ro, zs, zv, zo,
                  b_sv, b_vo, b_vs, b_so, alive):
    """Exact -log P of one sentence given the document latent and its earlier sentences.

    The hypotheses are "fresh" (weight 1 - rho) and "a copy of earlier sentence i" (rho /
    n_prev each, when n_prev > 0); each token is predicted by their posterior mixture.
    """
    w_f = 1.0 - rho if n_prev > 0 else 1.0
    w_c = rho / n_prev if n_prev > 0 else 0.0
    for i in range(n_prev):
        alive[i] = w_c
    nll = 0.0
    buf = out[start : start + length]
    for pos in range(length):
        tok = buf[pos]
        pf = _fresh_prob(buf, pos, tok, svo_p, die_cum, n_c, off_v, off_o, off_c, eos, beta,
                         rs, rv, ro, zs, zv, zo, b_sv, b_vo, b_vs, b_so)
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
    return nll


@njit(cache=True)
def _inverse(perm, offset, inv):
    for k in range(perm.shape[0]):
        inv[perm[k] - offset] = k


# --------------------------------------------------------------------------------------
# documents
# --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _document_base(p, n_real, reps, base_offset, shuffled, order_key):
    """Realisation index and base document id at output position ``p`` of a split."""
    r = feistel_index(p, n_real, order_key) if shuffled else p
    return r, base_offset + r // reps


@njit(cache=True)
def _document_bases(seed, sent_stage, positions, n_real, reps, base_offset, shuffled):
    order_key = unit_seed(seed, STAGE_ORDER, sent_stage, 0)
    out = np.empty(positions.shape[0], dtype=np.int64)
    for i in range(positions.shape[0]):
        out[i] = _document_base(positions[i], n_real, reps, base_offset, shuffled, order_key)[1]
    return out


@njit(cache=True)
def _sample_docs(
    seed, pos_start, pos_end, sent_stage, n_real, reps, base_offset, shuffled,
    n_s, n_v, n_o, n_c, off_v, off_o, off_c, eos, boundary,
    zs_p, zs_a, zv_p, zv_a, zo_p, zo_a, svo_p, die_p, die_a,
    sections, paras, sents_pp, sec_k, par_k,
    dd_table, dd_starts, dd_tokens, dedup, annotate,
    beta, bind_level, rho, rep_scope, score, zs, zv, zo, die_cum,
):
    """Documents at positions ``[pos_start, pos_end)``; with ``score`` also the exact
    -log P of every token given the document latent (the Monte-Carlo loss floor)."""
    n_docs = pos_end - pos_start
    max_m = die_p.shape[0] - 1
    max_len = 4 + 4 * max_m
    n_sent_doc = sections * paras * sents_pp
    cap = n_docs * (n_sent_doc * max_len + (1 if boundary >= 0 else 0))
    out = np.empty(cap, dtype=np.uint16)
    acap = cap if annotate else 0
    a_doc = np.empty(acap, dtype=np.uint32)
    a_sec = np.empty(acap, dtype=np.uint16)
    a_par = np.empty(acap, dtype=np.uint16)
    a_sen = np.empty(acap, dtype=np.uint32)
    a_role = np.empty(acap, dtype=np.uint8)
    doc_starts = np.empty(n_docs, dtype=np.int64)
    ps = np.empty(n_s, np.int32)
    pv = np.empty(n_v, np.int32)
    po = np.empty(n_o, np.int32)
    ss, sv, so = ps.copy(), pv.copy(), po.copy()
    qs, qv, qo = ps.copy(), pv.copy(), po.copy()
    rs, rv, ro = ps.copy(), pv.copy(), po.copy()  # word -> rank index (scoring only)
    b_sv = np.zeros(n_s, np.int32)
    b_vo = np.zeros(n_v, np.int32)
    b_vs = np.zeros(n_v, np.int32)
    b_so = np.zeros(n_s, np.int32)
    sent_start = np.empty(n_sent_doc, np.int64)  # sentences of the current document
    sent_len = np.empty(n_sent_doc, np.int64)
    alive = np.empty(n_sent_doc, np.float64)
    scratch = np.empty(max(n_s, max(n_v, n_o)), np.int32)
    buf = np.empty(max_len, np.uint16)
    roles = np.empty(max_len, np.uint8)
    state = np.empty(1, dtype=np.uint64)
    order_key = unit_seed(seed, STAGE_ORDER, sent_stage, 0)
    level_latent = sec_k[0] + sec_k[1] + sec_k[2] + par_k[0] + par_k[1] + par_k[2] > 0
    bind = beta > 0.0
    n_out = 0
    rejected = 0
    sentences = 0
    copies = 0
    nll = 0.0
    n_scored = 0
    for d in range(n_docs):
        p = pos_start + d
        r, base = _document_base(p, n_real, reps, base_offset, shuffled, order_key)
        _doc_latent(seed, base, n_s, n_v, n_o, off_v, off_o, ps, pv, po)
        state[0] = unit_seed(seed, sent_stage, r, 0)
        doc_starts[d] = n_out
        if boundary >= 0:
            out[n_out] = boundary
            if annotate:
                a_doc[n_out] = base
                a_sec[n_out] = 0
                a_par[n_out] = 0
                a_sen[n_out] = 0
                a_role[n_out] = ROLE_SPECIAL
            n_out += 1
        sent_in_doc = 0
        for sc in range(sections):
            if level_latent:
                _level_latent(seed, STAGE_SECTION, base, sc, ps, pv, po, ss, sv, so,
                              sec_k[0], sec_k[1], sec_k[2], scratch)
            for pg in range(paras):
                if level_latent:
                    _level_latent(seed, STAGE_PARAGRAPH, base, sc * paras + pg, ss, sv, so,
                                  qs, qv, qo, par_k[0], par_k[1], par_k[2], scratch)
                    cs, cv, co = qs, qv, qo
                else:
                    cs, cv, co = ps, pv, po
                if bind and (pg == 0 and sc == 0 or bind_level == 2
                             or (bind_level == 1 and pg == 0)):
                    _draw_bindings(seed, base, _binding_sub(bind_level, sc, pg, paras),
                                   n_s, n_v, n_o, off_v, off_o, b_sv, b_vo, b_vs, b_so)
                if score:
                    _inverse(cs, 0, rs)
                    _inverse(cv, off_v, rv)
                    _inverse(co, off_o, ro)
                para_first = sent_in_doc
                for _ in range(sents_pp):
                    scope_first = para_first if rep_scope == 1 else 0
                    n_prev = sent_in_doc - scope_first
                    copied = -1
                    if rho > 0.0 and n_prev > 0 and next_float(state) < rho:
                        copied = scope_first + next_below(state, n_prev)
                    if copied >= 0:
                        src = sent_start[copied]
                        length = sent_len[copied]
                        for q in range(length):
                            buf[q] = out[src + q]
                            roles[q] = a_role[src + q] if annotate else 0
                        copies += 1
                    while copied < 0:
                        length = 0
                        if not bind:  # the reference draw order (bytes kept for beta = 0)
                            s = cs[alias_draw(state, zs_p, zs_a)]
                            v = cv[alias_draw(state, zv_p, zv_a)]
                            o = co[alias_draw(state, zo_p, zo_a)]
                            svo = next_float(state) < svo_p
                        else:
                            svo = next_float(state) < svo_p
                            if svo:
                                s = cs[alias_draw(state, zs_p, zs_a)]
                                v = _bound_or_law(state, beta, b_sv[s], cv, zv_p, zv_a)
                                o = _bound_or_law(state, beta, b_vo[v - off_v], co, zo_p, zo_a)
                            else:
                                v = cv[alias_draw(state, zv_p, zv_a)]
                                s = _bound_or_law(state, beta, b_vs[v - off_v], cs, zs_p, zs_a)
                                o = _bound_or_law(state, beta, b_so[s], co, zo_p, zo_a)
                        if svo:
                            buf[0], buf[1], buf[2] = s, v, o
                            roles[0], roles[1], roles[2] = ROLE_S, ROLE_V, ROLE_O
                            length = 3
                            m = alias_draw(state, die_p, die_a)
                            for _c in range(m):
                                buf[length] = off_c + next_below(state, n_c)
                                s2 = cs[alias_draw(state, zs_p, zs_a)]
                                if bind:
                                    v2 = _bound_or_law(state, beta, b_sv[s2], cv, zv_p, zv_a)
                                    o2 = _bound_or_law(state, beta, b_vo[v2 - off_v], co,
                                                       zo_p, zo_a)
                                else:
                                    v2 = cv[alias_draw(state, zv_p, zv_a)]
                                    o2 = co[alias_draw(state, zo_p, zo_a)]
                                buf[length + 1] = s2
                                buf[length + 2] = v2
                                buf[length + 3] = o2
                                roles[length] = ROLE_C
                                roles[length + 1] = ROLE_S
                                roles[length + 2] = ROLE_V
                                roles[length + 3] = ROLE_O
                                length += 4
                        else:
                            buf[0], buf[1], buf[2] = v, s, o
                            roles[0], roles[1], roles[2] = ROLE_V, ROLE_S, ROLE_O
                            length = 3
                        buf[length] = eos
                        roles[length] = ROLE_SPECIAL
                        length += 1
                        if dedup and _in_table(buf, length, dd_table, dd_starts, dd_tokens):
                            rejected += 1
                            continue
                        break
                    for q in range(length):
                        out[n_out + q] = buf[q]
                    if annotate:
                        for q in range(length):
                            a_doc[n_out + q] = base
                            a_sec[n_out + q] = sc
                            a_par[n_out + q] = pg
                            a_sen[n_out + q] = sent_in_doc
                            a_role[n_out + q] = roles[q]
                    if score:
                        nll += _sentence_nll(
                            out, n_out, length, sent_start[scope_first:],
                            sent_len[scope_first:], n_prev, rho, svo_p, die_cum, n_c,
                            off_v, off_o, off_c, eos, beta, rs, rv, ro, zs, zv, zo,
                            b_sv, b_vo, b_vs, b_so, alive)
                        n_scored += length
                    sent_start[sent_in_doc] = n_out
                    sent_len[sent_in_doc] = length
                    n_out += length
                    sent_in_doc += 1
                    sentences += 1
    if annotate:
        ann = (a_doc[:n_out].copy(), a_sec[:n_out].copy(), a_par[:n_out].copy(),
               a_sen[:n_out].copy(), a_role[:n_out].copy())
    else:
        ann = (a_doc, a_sec, a_par, a_sen, a_role)
    return (out[:n_out].copy(), doc_starts, ann, rejected, sentences, copies, nll,
            n_scored)


@dataclass
class ShardOutput:
    """What one shard's generation returns."""

    tokens: np.ndarray
    doc_starts: np.ndarray
    annotations: dict[str, np.ndarray] | None
    units: int
    rejected: int = 0
    sentences: int = 0
    copies: int = 0


class PcfgSampler:
    """Generates any contiguous range of a split's documents, independently of the rest."""

    def __init__(self, cfg: PcfgConfig) -> None:
        self.cfg = cfg
        lx = cfg.lexicon
        self._zs = alias_table(zipf_probs(lx.subjects, cfg.zipf_exponent))
        self._zv = alias_table(zipf_probs(lx.verbs, cfg.zipf_exponent))
        self._zo = alias_table(zipf_probs(lx.objects, cfg.zipf_exponent))
        self._die = alias_table(np.asarray(cfg.extra_clause_probs))
        self._zipf = tuple(zipf_probs(n, cfg.zipf_exponent)
                           for n in (lx.subjects, lx.verbs, lx.objects))
        die = np.asarray(cfg.extra_clause_probs, dtype=np.float64)
        self._die_cum = np.ascontiguousarray(np.cumsum(die[::-1])[::-1])  # P(m >= k)
        sizes = (lx.subjects, lx.verbs, lx.objects)
        self._sec_k = np.array(
            [round(cfg.section_latent_fraction * n) for n in sizes], dtype=np.int64
        )
        self._par_k = np.array(
            [round(cfg.paragraph_latent_fraction * n) for n in sizes], dtype=np.int64
        )

    def _split_layout(self, split: str) -> tuple[int, int, int, int, bool]:
        """(sentence stage, realisations, repetitions, first base id, shuffled) of a split:
        test bases are 0..T-1 and train bases follow them, as in the reference."""
        cfg = self.cfg
        is_train = split == "train"
        order = cfg.train_order if is_train else cfg.test_order
        return (STAGE_SENT_TRAIN if is_train else STAGE_SENT_TEST, cfg.split_units(split),
                cfg.repetitions, cfg.test_documents if is_train else 0, order == "shuffled")

    def document_bases(self, split: str, positions: np.ndarray) -> np.ndarray:
        """Base document id (the latent's index) of the realisations at ``positions``."""
        stage, *layout = self._split_layout(split)
        return _document_bases(self.cfg.seed, stage, np.asarray(positions, dtype=np.int64),
                               *layout)

    def _run(self, split: str, start: int, stop: int, test_set: SentenceSet | None,
             score: bool, stage: int | None = None) -> tuple:
        cfg = self.cfg
        lx = cfg.lexicon
        _, off_v, off_o, off_c = cfg.role_offsets
        is_train = split == "train"
        dedup = bool(is_train and cfg.dedup and test_set is not None and test_set.n_unique)
        ts = test_set if dedup else SentenceSet.empty()
        layout = self._split_layout(split)
        if stage is not None:  # a dedicated stream (loss-floor documents)
            layout = (stage, stop, cfg.repetitions, 1 << 40, False)
        return _sample_docs(
            cfg.seed, start, stop, *layout,
            lx.subjects, lx.verbs, lx.objects, lx.connectors, off_v, off_o, off_c,
            cfg.eos_id, -1 if cfg.boundary_id is None else cfg.boundary_id,
            *self._zs, *self._zv, *self._zo, cfg.svo_probability, *self._die,
            cfg.sections, cfg.paragraphs_per_section, cfg.sentences_per_paragraph,
            self._sec_k, self._par_k, ts.table, ts.starts, ts.tokens, dedup,
            cfg.annotations and not score,
            cfg.binding_probability, _LEVELS[cfg.binding_level], cfg.repeat_probability,
            _SCOPES[cfg.repeat_scope], score, *self._zipf, self._die_cum,
        )

    def generate(
        self, split: str, start: int, stop: int, test_set: SentenceSet | None = None
    ) -> ShardOutput:
        """Realisations at output positions ``[start, stop)`` of ``split``."""
        tokens, doc_starts, ann, rejected, sentences, copies, _, _ = self._run(
            split, start, stop, test_set, score=False)
        annotations = None
        if self.cfg.annotations:
            annotations = dict(zip(("doc", "section", "paragraph", "sentence", "role"), ann,
                                   strict=True))
        return ShardOutput(tokens, doc_starts, annotations, stop - start, int(rejected),
                           int(sentences), int(copies))

    def latent_known_nll(self, n_docs: int) -> tuple[float, int]:
        """Exact -log P summed over the tokens of ``n_docs`` fresh documents given their
        latent (permutations, bindings) and their earlier sentences, and the token count.

        Why Monte Carlo: with repetition the source of a repeat is latent and ambiguous for
        small lexicons, so the entropy rate has no closed form; the conditionals are exact
        (a posterior over "fresh" and "copy of sentence i"), only the average is sampled.
        The documents come from a dedicated stream, never from a split.
        """
        from hierlab.corpus.rng import STAGE_FLOOR

        _, _, _, _, _, _, nll, n = self._run("test", 0, n_docs, None, score=True,
                                             stage=STAGE_FLOOR)
        if self.cfg.boundary_token:
            n += n_docs  # the boundary token is certain
        return float(nll), int(n)

    def binding_unit(self, section: int = 0, paragraph: int = 0) -> int:
        """Index of the binding map in force at ``(section, paragraph)`` of a document: the
        same for every paragraph at document level, per section at section level."""
        cfg = self.cfg
        return int(_binding_sub(_LEVELS[cfg.binding_level], section, paragraph,
                                cfg.paragraphs_per_section))

    def document_bindings(self, base: int, section: int = 0,
                          paragraph: int = 0) -> dict[str, np.ndarray]:
        """The binding maps in force in ``(base, section, paragraph)``: arrays indexed by
        the source word's index within its role, holding the bound word's global id."""
        cfg = self.cfg
        lx = cfg.lexicon
        _, off_v, off_o, _ = cfg.role_offsets
        maps = [np.zeros(n, np.int32) for n in (lx.subjects, lx.verbs, lx.verbs, lx.subjects)]
        sub = self.binding_unit(section, paragraph)
        _draw_bindings(cfg.seed, base, sub, lx.subjects, lx.verbs, lx.objects, off_v, off_o,
                       *maps)
        return dict(zip(("subject_verb", "verb_object", "verb_subject", "subject_object"),
                        maps, strict=True))

    def document_latent(self, base: int) -> dict[str, np.ndarray]:
        """The rank->word permutations of base document ``base`` (train ids start at
        ``test_documents``). Index k-1 holds the word of Zipf rank k."""
        lx = self.cfg.lexicon
        _, off_v, off_o, _ = self.cfg.role_offsets
        ps = np.empty(lx.subjects, np.int32)
        pv = np.empty(lx.verbs, np.int32)
        po = np.empty(lx.objects, np.int32)
        _doc_latent(self.cfg.seed, base, lx.subjects, lx.verbs, lx.objects, off_v, off_o,
                    ps, pv, po)
        return {"subject": ps, "verb": pv, "object": po}
