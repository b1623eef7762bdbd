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
):
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
    scratch = np.empty(max(n_s, max(n_v, n_o)), np.int32)
    buf = np.empty(max_len, np.uint16)
    roles = np.empty(max_len, np.uint8)
    state = np.empty(1, dtype=np.uint64)
    order_key = unit_seed(seed, STAGE_ORDER, sent_stage, 0)
    level_latent = sec_k[0] + sec_k[1] + sec_k[2] + par_k[0] + par_k[1] + par_k[2] > 0
    n_out = 0
    rejected = 0
    sentences = 0
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
                for _ in range(sents_pp):
                    while True:
                        length = 0
                        s = cs[alias_draw(state, zs_p, zs_a)]
                        v = cv[alias_draw(state, zv_p, zv_a)]
                        o = co[alias_draw(state, zo_p, zo_a)]
                        if next_float(state) < svo_p:
                            buf[0], buf[1], buf[2] = s, v, o
                            roles[0], roles[1], roles[2] = ROLE_S, ROLE_V, ROLE_O
                            length = 3
                            m = alias_draw(state, die_p, die_a)
                            for _c in range(m):
                                buf[length] = off_c + next_below(state, n_c)
                                buf[length + 1] = cs[alias_draw(state, zs_p, zs_a)]
                                buf[length + 2] = cv[alias_draw(state, zv_p, zv_a)]
                                buf[length + 3] = co[alias_draw(state, zo_p, zo_a)]
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
                    n_out += length
                    sent_in_doc += 1
                    sentences += 1
    if annotate:
        ann = (a_doc[:n_out].copy(), a_sec[:n_out].copy(), a_par[:n_out].copy(),
               a_sen[:n_out].copy(), a_role[:n_out].copy())
    else:
        ann = (a_doc, a_sec, a_par, a_sen, a_role)
    return out[:n_out].copy(), doc_starts, ann, rejected, sentences


@dataclass
class ShardOutput:
    """What one shard's generation returns."""

    tokens: np.ndarray
    doc_starts: np.ndarray
    annotations: dict[str, np.ndarray] | None
    units: int
    rejected: int = 0
    sentences: int = 0


class PcfgSampler:
    """Generates any contiguous range of a split's documents, independently of the rest."""

    def __init__(self, cfg: PcfgConfig) -> None:
        self.cfg = cfg
        lx = cfg.lexicon
        self._zs = alias_table(zipf_probs(lx.subjects, cfg.zipf_exponent))
        self._zv = alias_table(zipf_probs(lx.verbs, cfg.zipf_exponent))
        self._zo = alias_table(zipf_probs(lx.objects, cfg.zipf_exponent))
        self._die = alias_table(np.asarray(cfg.extra_clause_probs))
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

    def generate(
        self, split: str, start: int, stop: int, test_set: SentenceSet | None = None
    ) -> ShardOutput:
        """Realisations at output positions ``[start, stop)`` of ``split``."""
        cfg = self.cfg
        lx = cfg.lexicon
        _, off_v, off_o, off_c = cfg.role_offsets
        is_train = split == "train"
        dedup = bool(is_train and cfg.dedup and test_set is not None and test_set.n_unique)
        ts = test_set if dedup else SentenceSet.empty()
        tokens, doc_starts, ann, rejected, sentences = _sample_docs(
            cfg.seed, start, stop, *self._split_layout(split),
            lx.subjects, lx.verbs, lx.objects, lx.connectors, off_v, off_o, off_c,
            cfg.eos_id, -1 if cfg.boundary_id is None else cfg.boundary_id,
            *self._zs, *self._zv, *self._zo, cfg.svo_probability, *self._die,
            cfg.sections, cfg.paragraphs_per_section, cfg.sentences_per_paragraph,
            self._sec_k, self._par_k, ts.table, ts.starts, ts.tokens, dedup,
            cfg.annotations,
        )
        annotations = None
        if cfg.annotations:
            annotations = dict(zip(("doc", "section", "paragraph", "sentence", "role"), ann,
                                   strict=True))
        return ShardOutput(tokens, doc_starts, annotations, stop - start, int(rejected),
                           int(sentences))

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
