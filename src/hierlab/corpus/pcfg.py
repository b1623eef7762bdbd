"""The PCFG document sampler (docs/reference-study.md#the-grammar): sections of paragraphs
of SVO/VSO sentences. A base document's latent (:mod:`~hierlab.corpus.pcfg_latent`: rank->word
permutations from ``(seed, d)`` alone, re-permuted per section and paragraph so the level that
matters can be ablated) is realised ``repetitions`` times with fresh sentence draws; ``score``
adds the loss floor's exact conditionals (:mod:`~hierlab.corpus.pcfg_nll`). Why numba: the
per-token loop branches on data (clauses, copies, test-set rejection) and vectorises poorly;
compiled, it is a pure function of (config, shard), so shards parallelise with identical bytes.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.dedup import SentenceSet, in_table
from hierlab.corpus.jit import njit
from hierlab.corpus.pcfg_latent import (
    active_sub,
    binding_sub,
    bound_or_law,
    doc_latent,
    draw_active,
    draw_bindings,
    inverse_permutation,
    level_latent,
)
from hierlab.corpus.pcfg_nll import sentence_nll
from hierlab.corpus.rng import (
    STAGE_FLOOR,
    STAGE_ORDER,
    STAGE_PARAGRAPH,
    STAGE_SECTION,
    STAGE_SENT_TEST,
    STAGE_SENT_TRAIN,
    alias_draw,
    alias_table,
    feistel_index,
    next_below,
    next_float,
    unit_seed,
    zipf_probs,
)
from hierlab.corpus.sampler import (
    ROLE_CONNECTOR,
    ROLE_OBJECT,
    ROLE_SPECIAL,
    ROLE_SUBJECT,
    ROLE_VERB,
    ShardOutput,
)

__all__ = ["PcfgSampler"]

_LEVELS = {"document": 0, "section": 1, "paragraph": 2}
_SCOPES = {"document": 0, "paragraph": 1}


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
def _choose_source(state, t, sents_pp, sent_in_doc, scope_first, recall, rho, rep_min_d,
                  rep_fresh, sent_copy, recalled, alive, score):
    """(index of the earlier sentence that sentence ``t`` of its paragraph copies, or -1
    for a fresh one; prior weight of "fresh"). With ``score`` the prior weight of a copy
    of each earlier sentence of the scope goes into ``alive`` (the exact conditionals)."""
    n_prev = sent_in_doc - scope_first
    half = sents_pp // 2
    copied = -1
    w_fresh = 1.0
    if score:
        alive[:n_prev] = 0.0
    if recall:  # second half: the first half's sentences, in random order
        if t >= half:
            n_left = sents_pp - t  # first-half sentences not yet recalled
            k = next_below(state, n_left)
            for i in range(scope_first, scope_first + half):
                if not recalled[i]:
                    if score:
                        alive[i - scope_first] = 1.0 / n_left
                    if k == 0:
                        copied = i
                    k -= 1
            recalled[copied] = True
            w_fresh = 0.0
        else:
            recalled[sent_in_doc] = False
    elif rho > 0.0:
        # eligible sources: at least rep_min_d back, only fresh ones if asked
        last = sent_in_doc - rep_min_d
        n_elig = 0
        for i in range(scope_first, last + 1):
            if not (rep_fresh and sent_copy[i]):
                n_elig += 1
        if n_elig > 0:  # else the sentence is fresh (no draw)
            w_fresh = 1.0 - rho
            if next_float(state) < rho:
                k = next_below(state, n_elig)
            else:
                k = -1
            for i in range(scope_first, last + 1):
                if not (rep_fresh and sent_copy[i]):
                    if score:
                        alive[i - scope_first] = rho / n_elig
                    if k == 0:
                        copied = i
                    k -= 1
    return copied, w_fresh


@njit(cache=True)
def _draw_sentence(state, buf, roles, cs, cv, co, zs_p, zs_a, zv_p, zv_a, zo_p, zo_a,
                  svo_p, die_p, die_a, n_c, off_v, off_c, eos, beta, bind,
                  b_sv, b_vo, b_vs, b_so, act, n_active):
    """A fresh sentence (tokens into ``buf``, roles into ``roles``) under the current
    permutations ``cs, cv, co``, bindings and active set; returns its length.

    The grammar: ``s v o (c s v o){m} EOS`` with probability ``svo_p`` and m drawn from
    the extra-clause law ``die``, otherwise ``v s o EOS``; connectors are uniform, not
    permuted. The draw order is part of the corpus bytes, so it is kept per case (the
    reference order when nothing is bound), even where the distribution would allow another.
    """
    mqar = n_active > 0
    if mqar:  # subjects uniform over the active set, keyed S->V, S->O
        svo = next_float(state) < svo_p
        if svo:
            s = act[next_below(state, n_active)]
            v = bound_or_law(state, beta, b_sv[s], cv, zv_p, zv_a)
        else:
            v = cv[alias_draw(state, zv_p, zv_a)]
            s = act[next_below(state, n_active)]
        o = bound_or_law(state, beta, b_so[s], co, zo_p, zo_a)
    elif not bind:  # the reference draw order (bytes kept for beta = 0)
        s = cs[alias_draw(state, zs_p, zs_a)]
        v = cv[alias_draw(state, zv_p, zv_a)]
        o = co[alias_draw(state, zo_p, zo_a)]
        svo = next_float(state) < svo_p
    else:
        svo = next_float(state) < svo_p
        if svo:
            s = cs[alias_draw(state, zs_p, zs_a)]
            v = bound_or_law(state, beta, b_sv[s], cv, zv_p, zv_a)
            o = bound_or_law(state, beta, b_vo[v - off_v], co, zo_p, zo_a)
        else:
            v = cv[alias_draw(state, zv_p, zv_a)]
            s = bound_or_law(state, beta, b_vs[v - off_v], cs, zs_p, zs_a)
            o = bound_or_law(state, beta, b_so[s], co, zo_p, zo_a)
    if svo:
        buf[0], buf[1], buf[2] = s, v, o
        roles[0], roles[1], roles[2] = ROLE_SUBJECT, ROLE_VERB, ROLE_OBJECT
        length = 3
        m = alias_draw(state, die_p, die_a)
        for _c in range(m):
            buf[length] = off_c + next_below(state, n_c)
            if mqar:
                s2 = act[next_below(state, n_active)]
                v2 = bound_or_law(state, beta, b_sv[s2], cv, zv_p, zv_a)
                o2 = bound_or_law(state, beta, b_so[s2], co, zo_p, zo_a)
            elif bind:
                s2 = cs[alias_draw(state, zs_p, zs_a)]
                v2 = bound_or_law(state, beta, b_sv[s2], cv, zv_p, zv_a)
                o2 = bound_or_law(state, beta, b_vo[v2 - off_v], co, zo_p, zo_a)
            else:
                s2 = cs[alias_draw(state, zs_p, zs_a)]
                v2 = cv[alias_draw(state, zv_p, zv_a)]
                o2 = co[alias_draw(state, zo_p, zo_a)]
            buf[length + 1] = s2
            buf[length + 2] = v2
            buf[length + 3] = o2
            roles[length] = ROLE_CONNECTOR
            roles[length + 1] = ROLE_SUBJECT
            roles[length + 2] = ROLE_VERB
            roles[length + 3] = ROLE_OBJECT
            length += 4
    else:
        buf[0], buf[1], buf[2] = v, s, o
        roles[0], roles[1], roles[2] = ROLE_VERB, ROLE_SUBJECT, ROLE_OBJECT
        length = 3
    buf[length] = eos
    roles[length] = ROLE_SPECIAL
    length += 1
    return length


@njit(cache=True)
def _sample_docs(
    seed, pos_start, pos_end, sent_stage, n_real, reps, base_offset, shuffled,
    n_s, n_v, n_o, n_c, off_v, off_o, off_c, eos, boundary,
    zs_p, zs_a, zv_p, zv_a, zo_p, zo_a, svo_p, die_p, die_a,
    sections, paras, sents_pp, sec_k, par_k,
    dd_table, dd_starts, dd_tokens, dedup, annotate,
    beta, bind_level, rho, rep_scope, rep_fresh, rep_min_d, recall, n_active,
    score, zs, zv, zo, die_cum,
):
    """Documents at positions ``[pos_start, pos_end)``; with ``score`` also the exact
    -log P of every token given the document latent (the Monte-Carlo loss floor) and the
    summed entropy of each sentence's fresh/copy flag given its tokens (the bound's gap)."""
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
    sent_copy = np.zeros(n_sent_doc, np.bool_)  # the sentence is a copy (repeat, recall)
    recalled = np.zeros(n_sent_doc, np.bool_)  # a first-half sentence already recalled
    mqar = n_active > 0
    act = np.zeros(max(n_active, 1), np.int32)
    act_mask = np.zeros(n_s, np.float64)
    act_scratch = np.empty(n_s, np.int32)
    scratch = np.empty(max(n_s, max(n_v, n_o)), np.int32)
    buf = np.empty(max_len, np.uint16)
    roles = np.empty(max_len, np.uint8)
    state = np.empty(1, dtype=np.uint64)
    order_key = unit_seed(seed, STAGE_ORDER, sent_stage, 0)
    per_level = sec_k[0] + sec_k[1] + sec_k[2] + par_k[0] + par_k[1] + par_k[2] > 0
    bind = beta > 0.0
    n_out = 0
    rejected = 0
    sentences = 0
    copies = 0
    nll = 0.0
    flag_h = 0.0
    n_scored = 0
    for d in range(n_docs):
        p = pos_start + d
        r, base = _document_base(p, n_real, reps, base_offset, shuffled, order_key)
        doc_latent(seed, base, n_s, n_v, n_o, off_v, off_o, ps, pv, po)
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
            if per_level:
                level_latent(seed, STAGE_SECTION, base, sc, ps, pv, po, ss, sv, so,
                             sec_k[0], sec_k[1], sec_k[2], scratch)
            for pg in range(paras):
                if per_level:
                    level_latent(seed, STAGE_PARAGRAPH, base, sc * paras + pg, ss, sv, so,
                                 qs, qv, qo, par_k[0], par_k[1], par_k[2], scratch)
                    cs, cv, co = qs, qv, qo
                else:
                    cs, cv, co = ps, pv, po
                if bind and (pg == 0 and sc == 0 or bind_level == 2
                             or (bind_level == 1 and pg == 0)):
                    draw_bindings(seed, base, binding_sub(bind_level, sc, pg, paras),
                                  n_s, n_v, n_o, off_v, off_o, b_sv, b_vo, b_vs, b_so)
                if mqar:
                    draw_active(seed, base, active_sub(sc, pg, paras), n_s, n_active, act,
                                act_mask, act_scratch)
                if score:
                    inverse_permutation(cs, 0, rs)
                    inverse_permutation(cv, off_v, rv)
                    inverse_permutation(co, off_o, ro)
                para_first = sent_in_doc
                for t in range(sents_pp):
                    scope_first = para_first if (rep_scope == 1 or recall) else 0
                    n_prev = sent_in_doc - scope_first
                    # prior of the exact conditionals: fresh w_fresh, copy of i alive[i]
                    copied, w_fresh = _choose_source(
                        state, t, sents_pp, sent_in_doc, scope_first, recall, rho, rep_min_d,
                        rep_fresh, sent_copy, recalled, alive, score)
                    if copied >= 0:
                        src = sent_start[copied]
                        length = sent_len[copied]
                        for q in range(length):
                            buf[q] = out[src + q]
                            roles[q] = a_role[src + q] if annotate else 0
                        copies += 1
                    while copied < 0:
                        length = _draw_sentence(
                            state, buf, roles, cs, cv, co, zs_p, zs_a, zv_p, zv_a, zo_p, zo_a,
                            svo_p, die_p, die_a, n_c, off_v, off_c, eos, beta, bind,
                            b_sv, b_vo, b_vs, b_so, act, n_active)
                        if dedup and in_table(buf, length, dd_table, dd_starts, dd_tokens):
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
                        s_nll, post_f = sentence_nll(
                            out, n_out, length, sent_start[scope_first:],
                            sent_len[scope_first:], n_prev, w_fresh, alive, svo_p, die_cum,
                            n_c, off_v, off_o, off_c, eos, beta, n_active, act_mask,
                            rs, rv, ro, zs, zv, zo, b_sv, b_vo, b_vs, b_so)
                        nll += s_nll
                        if 0.0 < post_f < 1.0:
                            flag_h -= post_f * np.log(post_f) + (1 - post_f) * np.log(1 - post_f)
                        n_scored += length
                    sent_copy[sent_in_doc] = copied >= 0
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
            n_scored, flag_h)


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
            _SCOPES[cfg.repeat_scope], cfg.repeat_source == "fresh", cfg.repeat_min_distance,
            cfg.permuted_recall, cfg.active_subjects or 0, score, *self._zipf, self._die_cum,
        )

    def generate(
        self, split: str, start: int, stop: int, test_set: SentenceSet | None = None
    ) -> ShardOutput:
        """Realisations at output positions ``[start, stop)`` of ``split``."""
        tokens, doc_starts, ann, rejected, sentences, copies, *_ = self._run(
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

        With ``repeat_source: fresh`` the earlier sentences' fresh/copy flags are given too
        (they decide which sources are eligible): see :meth:`latent_known_terms`.
        """
        nll, _, n = self.latent_known_terms(n_docs)
        return nll, n

    def latent_known_terms(self, n_docs: int) -> tuple[float, float, int]:
        """(sum of exact -log P(sentence | latent, earlier sentences, their fresh/copy
        flags), sum over sentences of the entropy of the sentence's own flag given its
        tokens, token count) over ``n_docs`` floor documents.

        The first term / n is a lower bound on the entropy rate given the latent, the sum of
        both / n an upper bound: H(X|L) = H(X,F|L) - H(F|X,L) and H(F|X,L) >= 0, and the
        chain rule over sentences gives H(X,F|L) = sum_j H(x_j|L,x_<j,F_<j) +
        H(F_j|L,x_<=j,F_<j). The flags matter only with ``repeat_source: fresh``; otherwise
        the eligible sources are positional and the first term is exact.
        """
        out = self._run("test", 0, n_docs, None, score=True, stage=STAGE_FLOOR)
        nll, n, flag_h = out[6], out[7], out[8]
        if self.cfg.boundary_token:
            n += n_docs  # the boundary token is certain
        return float(nll), float(flag_h), int(n)

    def binding_unit(self, section: int = 0, paragraph: int = 0) -> int:
        """Index of the binding map in force at ``(section, paragraph)`` of a document: the
        same for every paragraph at document level, per section at section level."""
        cfg = self.cfg
        return int(binding_sub(_LEVELS[cfg.binding_level], section, paragraph,
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
        draw_bindings(cfg.seed, base, sub, lx.subjects, lx.verbs, lx.objects, off_v, off_o,
                      *maps)
        return dict(zip(("subject_verb", "verb_object", "verb_subject", "subject_object"),
                        maps, strict=True))

    def active_subjects(self, base: int, section: int = 0, paragraph: int = 0) -> np.ndarray:
        """The active subject ids of ``(base, section, paragraph)`` (MQAR), in draw order."""
        cfg = self.cfg
        if cfg.active_subjects is None:
            raise ValueError("active_subjects is off in this config")
        n_s = cfg.lexicon.subjects
        act = np.zeros(cfg.active_subjects, np.int32)
        draw_active(cfg.seed, base, active_sub(section, paragraph, cfg.paragraphs_per_section),
                    n_s, cfg.active_subjects, act, np.zeros(n_s, np.float64),
                    np.empty(n_s, np.int32))
        return act

    def document_latent(self, base: int) -> dict[str, np.ndarray]:
        """The rank->word permutations of base document ``base`` (train ids start at
        ``test_documents``). Index k-1 holds the word of Zipf rank k."""
        lx = self.cfg.lexicon
        _, off_v, off_o, _ = self.cfg.role_offsets
        ps = np.empty(lx.subjects, np.int32)
        pv = np.empty(lx.verbs, np.int32)
        po = np.empty(lx.objects, np.int32)
        doc_latent(self.cfg.seed, base, lx.subjects, lx.verbs, lx.objects, off_v, off_o,
                   ps, pv, po)
        return {"subject": ps, "verb": pv, "object": po}
