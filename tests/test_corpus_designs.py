"""Designs without a positional shortcut: distant copies, permuted recall, MQAR bindings.

Checks, per knob: the config is validated; the exact conditionals of the ``latent_known``
floor agree with an independent per-token computation (or, for fresh-only sources, the
exact marginal lies between the reported bounds); the analytic floors agree with Monte
Carlo; ``no_context`` holds on generated corpora; the realised rates match the config;
annotations keep the roles; shards stay position-pure; and the knobs left off keep the
bytes of every existing knob.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from pydantic import ValidationError

from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.entropy import pcfg_floors
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.rng import STAGE_FLOOR, zipf_probs
from hierlab.corpus.sampler import (
    ROLE_CONNECTOR,
    ROLE_OBJECT,
    ROLE_SPECIAL,
    ROLE_SUBJECT,
    ROLE_VERB,
)

LEX = {"subjects": 16, "verbs": 12, "objects": 20, "connectors": 8}
FLOOR_BASE = 1 << 40  # base ids of the loss-floor stream


def _cfg(**kw) -> PcfgConfig:
    base = dict(lexicon=LEX, zipf_exponent=1.3, sections=2, paragraphs_per_section=2,
                sentences_per_paragraph=4, train_documents=40, test_documents=10,
                repetitions=2)
    base.update(kw)
    return PcfgConfig(**base)


# ----- config ----------------------------------------------------------------------------
def test_design_fields_are_validated() -> None:
    with pytest.raises(ValidationError, match="repeat_min_distance"):
        _cfg(repeat_min_distance=0)
    with pytest.raises(ValidationError, match="repeat_source"):
        _cfg(repeat_source="copies")
    with pytest.raises(ValidationError, match="even sentences_per_paragraph"):
        _cfg(permuted_recall=True, sentences_per_paragraph=3)
    with pytest.raises(ValidationError, match="even sentences_per_paragraph"):
        _cfg(permuted_recall=True, sentences_per_paragraph=1)
    with pytest.raises(ValidationError, match="permuted_recall and repeat_probability"):
        _cfg(permuted_recall=True, repeat_probability=0.2)
    with pytest.raises(ValidationError, match="active_subjects"):
        _cfg(active_subjects=17)
    with pytest.raises(ValidationError, match="active_subjects"):
        _cfg(active_subjects=0)
    _cfg(active_subjects=16, permuted_recall=True, repeat_source="fresh")  # all fine


def test_designs_off_keep_the_corpus_hash() -> None:
    """The new fields are left out of a dump at their defaults, so every existing config
    keeps its corpus hash (its published corpora stay recognised); set, they count."""
    from hierlab.corpus.generate import corpus_hash

    assert corpus_hash(PcfgConfig()) == "8796ffb9bcc0a094"
    assert "repeat_source" not in PcfgConfig().model_dump(mode="json")
    on = PcfgConfig(repeat_source="fresh", repeat_min_distance=2, permuted_recall=True,
                    active_subjects=4)
    assert PcfgConfig(**on.model_dump(mode="json")) == on
    hashes = {corpus_hash(PcfgConfig(**{k: v})) for k, v in
              dict(repeat_source="fresh", repeat_min_distance=2, permuted_recall=True,
                   active_subjects=4).items()}
    assert len(hashes) == 4 and "8796ffb9bcc0a094" not in hashes


def _digest(cfg: PcfgConfig) -> str:
    o = PcfgSampler(cfg).generate("train", 0, 60)
    h = hashlib.sha256(o.tokens.tobytes() + o.doc_starts.tobytes())
    if o.annotations:
        h.update(o.annotations["role"].tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(("kw", "digest", "floor"), [
    (dict(repeat_probability=0.6, binding_probability=0.5), "698e7a8f2b29c56a",
     1.0077007517099372),
    (dict(repeat_probability=0.4, repeat_scope="paragraph", binding_level="paragraph",
          binding_probability=0.7, annotations=True), "70598734c230c866", 1.135206552445767),
])
def test_designs_off_keep_the_existing_knobs_bytes(kw, digest, floor) -> None:
    """Digests and Monte-Carlo floors taken with the code before these knobs existed; the
    new knobs at their defaults (also when written out) change nothing."""
    explicit = dict(repeat_source="any", repeat_min_distance=1, permuted_recall=False,
                    active_subjects=None)
    for extra in ({}, explicit):
        cfg = _cfg(**kw, **extra)
        assert _digest(cfg) == digest
        assert pcfg_floors(cfg, 50)["latent_known"] == floor


# ----- an independent computation of -log P(document | latent) ---------------------------
def _sentences(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eos)
    return np.split(tokens, ends + 1)[: len(ends)]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool((a == b).all())


class _Grammar:
    """Per-token probabilities of a fresh sentence given a document's latent, written from
    the README's description of the grammar (not from the kernel)."""

    def __init__(self, cfg: PcfgConfig, sampler: PcfgSampler, base: int) -> None:
        self.cfg, self.sampler, self.base = cfg, sampler, base
        lx = cfg.lexicon
        self.zipf = {r: zipf_probs(n, cfg.zipf_exponent) for r, n in
                     (("subject", lx.subjects), ("verb", lx.verbs), ("object", lx.objects))}
        lat = sampler.document_latent(base)
        self.rank = {r: {int(w): k for k, w in enumerate(lat[r])} for r in lat}

    def probs(self, sent: np.ndarray, sc: int, pg: int) -> list[float]:
        cfg, off = self.cfg, self.cfg.role_offsets
        p, beta = cfg.svo_probability, cfg.binding_probability
        die = np.asarray(cfg.extra_clause_probs)
        b = self.sampler.document_bindings(self.base, sc, pg)
        mqar = cfg.active_subjects is not None
        act = set(self.sampler.active_subjects(self.base, sc, pg).tolist()) if mqar else None

        def law(role: str, w: int, bound: int | None) -> float:
            q = self.zipf[role][self.rank[role][w]] if w in self.rank[role] else 0.0
            return q if bound is None else beta * (w == bound) + (1 - beta) * q

        def subject(w: int) -> float:
            return (w in act) / len(act) if mqar else law("subject", w, None)

        s0 = int(sent[0])
        if s0 < off[1]:  # SVO
            probs = [p * subject(s0)]
            m = (len(sent) - 4) // 4
            for k in range(m + 1):
                i = 4 * k
                if k > 0:
                    probs += [die[k:].sum() / die[k - 1:].sum() / cfg.lexicon.connectors,
                              subject(int(sent[i]))]
                s, v, o = int(sent[i]), int(sent[i + 1]), int(sent[i + 2])
                key_o = b["subject_object"][s] if mqar else b["verb_object"][v - off[1]]
                probs += [law("verb", v, int(b["subject_verb"][s])),
                          law("object", o, int(key_o))]
            probs.append(die[m] / die[m:].sum())
            return probs
        v, s, o = s0, int(sent[1]), int(sent[2])
        p_s = subject(s) if mqar else law("subject", s, int(b["verb_subject"][v - off[1]]))
        return [(1 - p) * law("verb", v, None), p_s,
                law("object", o, int(b["subject_object"][s])), 1.0]


def _mixture(sent: np.ndarray, pf: list[float], hyps: list) -> float:
    """-log P(sent) under prior hypotheses [(weight, None = fresh | source sentence)]."""
    nll = 0.0
    for pos, tok in enumerate(sent):
        num = den = 0.0
        new = []
        for w, src in hyps:
            like = pf[pos] if src is None else float(pos < len(src) and src[pos] == tok)
            num += w * like
            den += w
            new.append((w * like, src))
        nll -= math.log(num / den)
        hyps = [(w, s) for w, s in new if w > 0]
    return nll


def _hyps(cfg: PcfgConfig, sents: list, j: int, flags: list[bool]) -> list:
    """Prior hypotheses of sentence j: fresh / copy of each eligible source."""
    spp = cfg.sentences_per_paragraph
    pg = j // spp
    if cfg.permuted_recall:
        t, half = j - pg * spp, spp // 2
        if t < half:
            return [(1.0, None)]
        left = list(sents[pg * spp:pg * spp + half])
        for x in sents[pg * spp + half:j]:  # remove one instance of each recalled sentence
            left.pop(next(k for k, y in enumerate(left) if _same(x, y)))
        return [(1.0 / len(left), x) for x in left]
    rho = cfg.repeat_probability
    first = pg * spp if cfg.repeat_scope == "paragraph" else 0
    elig = [i for i in range(first, j - cfg.repeat_min_distance + 1)
            if not (cfg.repeat_source == "fresh" and flags[i])]
    if rho <= 0 or not elig:
        return [(1.0, None)]
    return [(1 - rho, None)] + [(rho / len(elig), sents[i]) for i in elig]


def _brute_doc(cfg: PcfgConfig, sampler: PcfgSampler, doc: np.ndarray, base: int
               ) -> tuple[float, float]:
    """(-log P(doc | latent, inferred fresh/copy flags), exact -log P(doc | latent)).

    The first infers each sentence's flag as "equal to an eligible source" (the truth
    unless a fresh sentence coincides with one); the second sums over every flag history.
    """
    g = _Grammar(cfg, sampler, base)
    spp, paras = cfg.sentences_per_paragraph, cfg.paragraphs_per_section
    sents = _sentences(doc, cfg.eos_id)
    nll, flags = 0.0, []
    states: dict[tuple, float] = {(): 1.0}  # flag history -> P(sentences so far, flags)
    for j, sent in enumerate(sents):
        pg = j // spp
        pf = g.probs(sent, pg // paras, pg % paras)
        hy = _hyps(cfg, sents, j, flags)
        nll += _mixture(sent, pf, hy)
        flags.append(any(src is not None and _same(src, sent) for _, src in hy))
        nxt: dict[tuple, float] = {}
        for hist, w in states.items():
            hy = _hyps(cfg, sents, j, list(hist))
            p_f = sum(h for h, src in hy if src is None) * math.prod(pf)
            p_c = sum(h for h, src in hy if src is not None and _same(src, sent))
            for flag, p in ((False, p_f), (True, p_c)):
                if p > 0:
                    nxt[hist + (flag,)] = nxt.get(hist + (flag,), 0.0) + w * p
        states = nxt
    return nll, -math.log(sum(states.values()))


def _floor_docs(cfg: PcfgConfig, n_docs: int):
    sampler = PcfgSampler(cfg)
    tokens, starts, *_ = sampler._run("test", 0, n_docs, None, score=False, stage=STAGE_FLOOR)
    bounds = list(starts) + [len(tokens)]
    docs = [tokens[bounds[d]:bounds[d + 1]] for d in range(n_docs)]
    return sampler, docs, [FLOOR_BASE + d // cfg.repetitions for d in range(n_docs)]


@pytest.mark.parametrize("kw", [
    {"repeat_probability": 0.7, "repeat_min_distance": 2},
    {"repeat_probability": 0.5, "repeat_min_distance": 3, "repeat_scope": "paragraph",
     "sentences_per_paragraph": 6, "binding_probability": 0.6},
    {"permuted_recall": True},
    {"permuted_recall": True, "sentences_per_paragraph": 6, "binding_probability": 0.7,
     "binding_level": "paragraph", "extra_clause_probs": [0.2, 0.5, 0.3]},
    {"active_subjects": 3, "binding_probability": 0.8, "binding_level": "paragraph"},
    {"active_subjects": 5, "binding_probability": 0.5, "svo_probability": 0.3,
     "binding_level": "section"},
    {"active_subjects": 2, "binding_probability": 0.9, "binding_level": "paragraph",
     "permuted_recall": True},
    {"active_subjects": 4, "binding_probability": 0.9, "repeat_probability": 0.5},
])
def test_exact_conditionals_match_an_independent_computation(kw) -> None:
    """Positional eligibility (any source), recall and MQAR: the floor's conditionals are
    exact, also for this small lexicon where sentences coincide by chance."""
    cfg = _cfg(**kw)
    sampler, docs, bases = _floor_docs(cfg, 6)
    nll, n = sampler.latent_known_nll(len(docs))
    brute = [_brute_doc(cfg, sampler, doc, b) for doc, b in zip(docs, bases, strict=True)]
    assert n == sum(len(d) for d in docs)
    assert nll == pytest.approx(sum(x for x, _ in brute), rel=1e-9)
    assert nll == pytest.approx(sum(x for _, x in brute), rel=1e-9)  # flags do not matter


def test_fresh_sources_conditionals_match_with_flags_known() -> None:
    """With fresh-only sources and a lexicon where chance coincidences are rare, the flags
    inferred from the tokens are the true ones and the conditionals agree exactly."""
    lex = {"subjects": 200, "verbs": 200, "objects": 200, "connectors": 50}
    cfg = _cfg(lexicon=lex, zipf_exponent=0.5, repeat_probability=0.8,
               repeat_source="fresh", repeat_min_distance=2, binding_probability=0.5)
    sampler, docs, bases = _floor_docs(cfg, 6)
    nll, flag_h, n = sampler.latent_known_terms(len(docs))
    brute = sum(_brute_doc(cfg, sampler, doc, b)[0] for doc, b in zip(docs, bases, strict=True))
    assert nll == pytest.approx(brute, rel=1e-9)
    assert 0 < flag_h < 1e-3 * nll  # the bounds are 0.1 % apart


def test_fresh_sources_bounds_hold_on_a_tiny_lexicon() -> None:
    """Where fresh sentences often coincide, the exact marginal -log P(doc | latent) (summed
    over every flag history) lies between the reported lower and upper bounds."""
    lex = {"subjects": 2, "verbs": 2, "objects": 2, "connectors": 1}
    cfg = _cfg(lexicon=lex, zipf_exponent=1.0, repeat_probability=0.5,
               repeat_source="fresh", repeat_min_distance=2, repeat_scope="paragraph",
               extra_clause_probs=[1.0], sentences_per_paragraph=6, paragraphs_per_section=1)
    n_docs = 1500
    sampler, docs, bases = _floor_docs(cfg, n_docs)
    lower, flag_h, n = sampler.latent_known_terms(n_docs)
    exact = sum(_brute_doc(cfg, sampler, doc, b)[1] for doc, b in zip(docs, bases, strict=True))
    upper = lower + flag_h
    assert flag_h > 0.02 * lower  # the flags are genuinely uncertain here
    assert lower < exact < upper
    floors = pcfg_floors(cfg, n_docs)
    assert floors["latent_known"] == pytest.approx(lower / n)
    assert floors["latent_known_upper"] == pytest.approx(upper / n)


# ----- analytic floors --------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"active_subjects": 3, "binding_probability": 0.8, "binding_level": "paragraph"},
    {"active_subjects": 6, "binding_probability": 0.4, "svo_probability": 0.3,
     "boundary_token": True},
    {"active_subjects": 16},
])
def test_analytic_mqar_floor_matches_monte_carlo(kw) -> None:
    cfg = _cfg(**kw)
    analytic = pcfg_floors(cfg)["latent_known"]
    nll, n = PcfgSampler(cfg).latent_known_nll(3000)
    assert nll / n == pytest.approx(analytic, rel=0.005)


def test_recall_floor_is_ln_k_factorial_with_a_large_lexicon() -> None:
    """With no chance coincidences the second half of a paragraph costs ln K! in all."""
    lex = {"subjects": 300, "verbs": 300, "objects": 300, "connectors": 50}
    cfg = _cfg(lexicon=lex, permuted_recall=True, sentences_per_paragraph=6)
    plain = _cfg(lexicon=lex, sentences_per_paragraph=6)
    nll, n = PcfgSampler(cfg).latent_known_nll(400)
    paragraphs = 400 * cfg.sections * cfg.paragraphs_per_section
    # the first half (n / 2 tokens) at the fresh rate; the second picks one of the K! orders
    fresh_rate = pcfg_floors(plain)["latent_known"]
    predicted = (fresh_rate * n / 2 + paragraphs * math.log(math.factorial(3))) / n
    assert nll / n == pytest.approx(predicted, rel=0.01)


# ----- no_context, marginals and realised rates on generated corpora ---------------------
def _uniform_word_nll(cfg: PcfgConfig, tokens: np.ndarray) -> float:
    lx, off = cfg.lexicon, cfg.role_offsets
    nll = 0.0
    for s in _sentences(tokens, cfg.eos_id):
        svo = s[0] < off[1]
        nll -= math.log(cfg.svo_probability if svo else 1 - cfg.svo_probability)
        if svo:
            m = (len(s) - 4) // 4
            nll -= math.log(cfg.extra_clause_probs[m]) - m * math.log(lx.connectors)
        for n, lo, hi in ((lx.subjects, off[0], off[1]), (lx.verbs, off[1], off[2]),
                          (lx.objects, off[2], off[3])):
            nll += math.log(n) * int(((s >= lo) & (s < hi)).sum())
    return nll


@pytest.mark.parametrize("kw", [
    {"repeat_probability": 0.8, "repeat_source": "fresh", "repeat_min_distance": 2},
    {"permuted_recall": True, "sentences_per_paragraph": 6},
    {"active_subjects": 3, "binding_probability": 0.9, "binding_level": "paragraph"},
    {"active_subjects": 2, "binding_probability": 1.0, "binding_level": "paragraph",
     "permuted_recall": True},
])
def test_no_context_floor_holds_on_generated_corpora(kw) -> None:
    """Every role stays marginally uniform: per-role word frequencies are flat and the
    uniform-word NLL of the corpus equals the analytic no-context floor."""
    cfg = _cfg(train_documents=1500, **kw)
    out = PcfgSampler(cfg).generate("train", 0, 3000)
    floors = pcfg_floors(cfg)
    assert _uniform_word_nll(cfg, out.tokens) / len(out.tokens) == pytest.approx(
        floors["no_context"], rel=0.01)
    assert floors["no_context"] == pytest.approx(pcfg_floors(_cfg())["no_context"])
    off = cfg.role_offsets
    for lo, hi in zip(off[:3], off[1:], strict=True):
        freq = np.bincount(out.tokens[(out.tokens >= lo) & (out.tokens < hi)] - lo,
                           minlength=hi - lo)
        share = freq / freq.sum()
        assert np.abs(share * (hi - lo) - 1).max() < 0.2  # flat within 20 % per word
    assert floors["latent_known"] < floors["no_context"]


def _rates(cfg: PcfgConfig, n_docs: int = 400):
    from hierlab.corpus.stats import _latent_rates

    sampler = PcfgSampler(cfg)
    out = sampler.generate("train", 0, n_docs)
    bases = sampler.document_bases("train", np.arange(n_docs))
    bounds = np.append(out.doc_starts, len(out.tokens))
    return out, _latent_rates(cfg, sampler, out.tokens, bounds, bases, n_docs)


def test_distant_copies_realised_rates() -> None:
    """A scope's first sentence is always fresh, so with fresh sources exactly the
    sentences at least d into their scope have one: copies = rho (N - d) / N."""
    rho, d = 0.9, 2
    lex = {"subjects": 60, "verbs": 60, "objects": 60, "connectors": 8}
    any_cfg = _cfg(lexicon=lex, train_documents=300, repeat_probability=rho)
    far_cfg = any_cfg.model_copy(update=dict(repeat_source="fresh", repeat_min_distance=d))
    out, rates = _rates(far_cfg)
    n_sent = far_cfg.sentences_per_document
    assert out.copies / out.sentences == pytest.approx(rho * (n_sent - d) / n_sent, abs=0.02)
    r = rates["repetition_rate"]
    assert r["expected_without_chance"] == pytest.approx(rho * (n_sent - d) / n_sent)
    assert r["expected_without_chance"] <= r["measured"] + 0.01
    assert r["measured"] <= r["expected_without_chance"] + 0.03
    # the positional shortcut: the sentence before is rarely the same sentence
    _, any_rates = _rates(any_cfg)
    assert any_rates["adjacent_repeat_rate"] > 0.3
    assert rates["adjacent_repeat_rate"] < 0.5 * any_rates["adjacent_repeat_rate"]
    # d = 2 alone: never a copy of the sentence just before ... unless both copy one source
    assert rates["adjacent_repeat_rate"] > 0


def test_permuted_recall_realised_rates() -> None:
    cfg = _cfg(permuted_recall=True, sentences_per_paragraph=6, train_documents=300)
    out, rates = _rates(cfg)
    assert out.copies * 2 == out.sentences
    r = rates["recall_rate"]
    assert r["measured"] == 1.0
    assert r["in_order_expected"] == pytest.approx(1 / 6)
    assert r["in_order_paragraphs"] == pytest.approx(1 / 6, abs=0.03)
    assert "repetition_rate" not in rates


def test_mqar_realised_rates() -> None:
    cfg = _cfg(active_subjects=3, binding_probability=0.7, binding_level="paragraph",
               train_documents=300)
    out, rates = _rates(cfg)
    assert rates["active_subject_rate"]["measured"] == 1.0
    b = rates["binding_rate"]
    assert b["measured"] == pytest.approx(b["expected"], abs=0.02)
    assert out.copies == 0
    # the set differs between paragraphs and is fixed across a latent's realisations
    s = PcfgSampler(cfg)
    sets = {tuple(sorted(s.active_subjects(7, sc, pg))) for sc in range(2) for pg in range(2)}
    assert len(sets) > 1
    assert np.array_equal(s.active_subjects(7, 1, 0), s.active_subjects(7, 1, 0))


# ----- annotations, purity, stats output --------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"repeat_probability": 0.7, "repeat_source": "fresh", "repeat_min_distance": 2},
    {"permuted_recall": True},
    {"active_subjects": 3, "binding_probability": 0.8, "binding_level": "paragraph",
     "permuted_recall": True},
])
def test_annotations_keep_the_roles(kw) -> None:
    cfg = _cfg(annotations=True, **kw)
    out = PcfgSampler(cfg).generate("train", 0, 30)
    t, a = out.tokens, out.annotations
    off = cfg.role_offsets
    want = np.select([t < off[1], t < off[2], t < off[3], t < cfg.eos_id],
                     [ROLE_SUBJECT, ROLE_VERB, ROLE_OBJECT, ROLE_CONNECTOR], ROLE_SPECIAL)
    assert np.array_equal(a["role"], want)
    # sentence index runs 0..N-1 within a document and paragraph matches it
    sent_ids = a["sentence"][t == cfg.eos_id]
    n = cfg.sentences_per_document
    assert np.array_equal(sent_ids, np.tile(np.arange(n), 30))
    spp, paras = cfg.sentences_per_paragraph, cfg.paragraphs_per_section
    assert np.array_equal(a["paragraph"][t == cfg.eos_id], (sent_ids // spp) % paras)


def test_design_shards_are_position_pure() -> None:
    for kw in ({"repeat_probability": 0.6, "repeat_source": "fresh", "repeat_min_distance": 2},
               {"permuted_recall": True, "active_subjects": 4, "binding_probability": 0.5}):
        s = PcfgSampler(_cfg(**kw))
        whole = s.generate("train", 0, 60).tokens
        parts = np.concatenate([s.generate("train", a, b).tokens
                                for a, b in ((0, 17), (17, 40), (40, 60))])
        assert np.array_equal(whole, parts)


def test_format_stats_prints_the_design_rates() -> None:
    from hierlab.corpus.stats import format_stats

    cfg = _cfg(active_subjects=3, binding_probability=0.7, binding_level="paragraph",
               permuted_recall=True, train_documents=100)
    _, rates = _rates(cfg, 100)
    split = dict(tokens_total=1, units=1, tokens_read=1, sentences_read=1,
                 mean_sentence_length=1.0, unique_sentence_fraction=1.0, max_id=1, **rates)
    text = format_stats({"corpus": "c", "kind": "pcfg", "loss_floors": {}, "splits":
                         {"train": split}})
    assert "recalled sentences 1.0000" in text
    assert "active set 1.0000" in text
    assert "binding rate" in text
