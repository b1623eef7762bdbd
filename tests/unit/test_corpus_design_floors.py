"""The designs' loss floors: the exact conditionals of the ``latent_known`` floor agree
with an independent per-token computation (or, for fresh-only sources, the exact marginal
lies between the reported bounds), and the analytic floors agree with Monte Carlo.

The configs, bytes, realised rates and annotations of the same designs are checked in
``test_corpus_designs.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from design_helpers import design_cfg, mixture_nll, split_sentences
from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.entropy import pcfg_floors
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.rng import STAGE_FLOOR, zipf_probs

FLOOR_BASE = 1 << 40  # base ids of the loss-floor stream


# ----- an independent computation of -log P(document | latent) ---------------------------
def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool((a == b).all())


class _Grammar:
    """Per-token probabilities of a fresh sentence given a document's latent, written from
    the description of the grammar in docs/corpora.md (not from the kernel)."""

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
    sents = split_sentences(doc, cfg.eos_id)
    nll, flags = 0.0, []
    states: dict[tuple, float] = {(): 1.0}  # flag history -> P(sentences so far, flags)
    for j, sent in enumerate(sents):
        pg = j // spp
        pf = g.probs(sent, pg // paras, pg % paras)
        hy = _hyps(cfg, sents, j, flags)
        nll += mixture_nll(sent, pf, hy)
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
    cfg = design_cfg(**kw)
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
    cfg = design_cfg(lexicon=lex, zipf_exponent=0.5, repeat_probability=0.8,
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
    cfg = design_cfg(lexicon=lex, zipf_exponent=1.0, repeat_probability=0.5,
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
    cfg = design_cfg(**kw)
    analytic = pcfg_floors(cfg)["latent_known"]
    nll, n = PcfgSampler(cfg).latent_known_nll(3000)
    assert nll / n == pytest.approx(analytic, rel=0.005)


def test_recall_floor_is_ln_k_factorial_with_a_large_lexicon() -> None:
    """With no chance coincidences the second half of a paragraph costs ln K! in all."""
    lex = {"subjects": 300, "verbs": 300, "objects": 300, "connectors": 50}
    cfg = design_cfg(lexicon=lex, permuted_recall=True, sentences_per_paragraph=6)
    plain = design_cfg(lexicon=lex, sentences_per_paragraph=6)
    nll, n = PcfgSampler(cfg).latent_known_nll(400)
    paragraphs = 400 * cfg.sections * cfg.paragraphs_per_section
    # the first half (n / 2 tokens) at the fresh rate; the second picks one of the K! orders
    fresh_rate = pcfg_floors(plain)["latent_known"]
    predicted = (fresh_rate * n / 2 + paragraphs * math.log(math.factorial(3))) / n
    assert nll / n == pytest.approx(predicted, rel=0.01)
