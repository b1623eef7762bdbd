"""The emergence knobs of the PCFG: bindings and within-document repetition.

Checks: the defaults keep the reference grammar's bytes; the knobs' loss floors agree
with independent per-token computations; the realised rates match the config; shards
stay a pure function of (config, position).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from pydantic import ValidationError

from design_helpers import mixture_nll
from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.entropy import pcfg_floors
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.rng import STAGE_FLOOR, zipf_probs

LEX = {"subjects": 16, "verbs": 12, "objects": 20, "connectors": 8}


def _cfg(**kw) -> PcfgConfig:
    base = dict(lexicon=LEX, zipf_exponent=1.3, sections=2, paragraphs_per_section=2,
                sentences_per_paragraph=4, train_documents=40, test_documents=10,
                repetitions=2)
    base.update(kw)
    return PcfgConfig(**base)


def test_defaults_keep_the_reference_bytes() -> None:
    """Golden hashes taken before the knobs existed (beta = rho = 0 draws as before)."""
    cfg = PcfgConfig(lexicon=dict(subjects=16, verbs=16, objects=16, connectors=8),
                     train_documents=50, test_documents=5, zipf_exponent=1.5)
    got = []
    for split in ("train", "test"):
        o = PcfgSampler(cfg).generate(split, 0, 50)
        got.append(hashlib.sha256(o.tokens.tobytes() + o.doc_starts.tobytes()).hexdigest()[:16])
    assert got == ["297cbd9e331247b0", "6eabbbbdacb5db1e"]


def test_knob_fields_are_validated() -> None:
    with pytest.raises(ValidationError, match="binding_level"):
        _cfg(binding_level="sentence")
    with pytest.raises(ValidationError, match="repeat_probability"):
        _cfg(repeat_probability=1.5)


def _sentences(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eos)
    return np.split(tokens, ends + 1)[: len(ends)]


def _brute_nll(cfg: PcfgConfig, sampler: PcfgSampler, doc: np.ndarray, base: int) -> float:
    """-log P(doc | latent) written independently of the sampler: grammar mixture with the
    binding maps, and a posterior over "fresh" and "copy of an earlier sentence"."""
    lx = cfg.lexicon
    off = cfg.role_offsets
    zipf = {r: zipf_probs(n, cfg.zipf_exponent)
            for r, n in (("subject", lx.subjects), ("verb", lx.verbs), ("object", lx.objects))}
    lat = sampler.document_latent(base)
    rank = {r: {int(w): k for k, w in enumerate(lat[r])} for r in lat}
    p, beta, rho = cfg.svo_probability, cfg.binding_probability, cfg.repeat_probability
    die = np.asarray(cfg.extra_clause_probs)

    def law(role: str, w: int, bound: int | None) -> float:
        q = zipf[role][rank[role][w]] if w in rank[role] else 0.0
        return q if bound is None else beta * (w == bound) + (1 - beta) * q

    def fresh(sent: np.ndarray, b: dict) -> list[float]:
        """Per-token probabilities of a fresh sentence."""
        s0 = int(sent[0])
        if s0 < off[1]:  # SVO
            probs = [p * law("subject", s0, None)]
            m = (len(sent) - 4) // 4
            for k in range(m + 1):
                i = 4 * k
                if k > 0:
                    tail = die[k:].sum()
                    probs += [tail / die[k - 1:].sum() / lx.connectors,
                              law("subject", int(sent[i]), None)]
                s, v, o = int(sent[i]), int(sent[i + 1]), int(sent[i + 2])
                probs += [law("verb", v, int(b["subject_verb"][s - off[0]])),
                          law("object", o, int(b["verb_object"][v - off[1]]))]
            probs.append(die[m] / die[m:].sum())
            return probs
        v, s, o = s0, int(sent[1]), int(sent[2])
        return [(1 - p) * law("verb", v, None),
                law("subject", s, int(b["verb_subject"][v - off[1]])),
                law("object", o, int(b["subject_object"][s - off[0]])), 1.0]

    sents = _sentences(doc, cfg.eos_id)
    spp, paras = cfg.sentences_per_paragraph, cfg.paragraphs_per_section
    nll = 0.0
    for j, sent in enumerate(sents):
        pg = j // spp
        b = sampler.document_bindings(base, pg // paras, pg % paras)
        first = pg * spp if cfg.repeat_scope == "paragraph" else 0
        prev = sents[first:j]
        pf = fresh(sent, b)
        hyps = [(1 - rho if prev else 1.0, None)] + [(rho / len(prev), x) for x in prev]
        nll += mixture_nll(sent, pf, hyps)
    return nll


@pytest.mark.parametrize("kw", [
    {"binding_probability": 0.8},
    {"binding_probability": 0.6, "binding_level": "paragraph", "svo_probability": 0.7},
    {"repeat_probability": 0.5},
    {"repeat_probability": 0.4, "repeat_scope": "paragraph", "binding_probability": 0.9,
     "binding_level": "section"},
])
def test_exact_conditionals_match_an_independent_computation(kw) -> None:
    cfg = _cfg(**kw)
    sampler = PcfgSampler(cfg)
    n_docs = 6
    tokens, starts, *_ = sampler._run("test", 0, n_docs, None, score=False, stage=STAGE_FLOOR)
    nll, n = sampler.latent_known_nll(n_docs)
    bounds = list(starts) + [len(tokens)]
    brute = sum(_brute_nll(cfg, sampler, tokens[bounds[d]:bounds[d + 1]],
                           (1 << 40) + d // cfg.repetitions) for d in range(n_docs))
    assert n == len(tokens)
    assert nll == pytest.approx(brute, rel=1e-9)


@pytest.mark.parametrize("kw", [{"binding_probability": 0.8},
                                {"binding_probability": 0.5, "binding_level": "paragraph",
                                 "section_latent_fraction": 0.5, "boundary_token": True}])
def test_analytic_binding_floor_matches_monte_carlo(kw) -> None:
    cfg = _cfg(**kw)
    analytic = pcfg_floors(cfg)["latent_known"]
    nll, n = PcfgSampler(cfg).latent_known_nll(3000)
    assert nll / n == pytest.approx(analytic, rel=0.005)
    assert analytic < pcfg_floors(_cfg())["latent_known"]  # bindings lower the floor


def test_no_context_floor_is_unchanged_by_the_knobs() -> None:
    """Marginally every word stays uniform over its role: the uniform-word NLL of a corpus
    with bindings and repeats equals the analytic no-context floor."""
    cfg = _cfg(binding_probability=0.9, repeat_probability=0.5, train_documents=1500)
    out = PcfgSampler(cfg).generate("train", 0, 3000)
    lx = cfg.lexicon
    off = cfg.role_offsets
    nll = 0.0
    for s in _sentences(out.tokens, cfg.eos_id):
        svo = s[0] < off[1]
        nll -= math.log(cfg.svo_probability if svo else 1 - cfg.svo_probability)
        if svo:
            m = (len(s) - 4) // 4
            nll -= math.log(cfg.extra_clause_probs[m]) - m * math.log(lx.connectors)
        content = s[(s < off[3])]
        nll += sum(math.log(n) for n, lo, hi in
                   ((lx.subjects, off[0], off[1]), (lx.verbs, off[1], off[2]),
                    (lx.objects, off[2], off[3]))
                   for _ in range(int(((content >= lo) & (content < hi)).sum())))
    floors = pcfg_floors(cfg)
    assert nll / len(out.tokens) == pytest.approx(floors["no_context"], rel=0.01)
    assert floors["latent_known"] < floors["no_context"]


def test_repetition_lowers_the_latent_known_floor() -> None:
    plain = pcfg_floors(_cfg())["latent_known"]
    rep = pcfg_floors(_cfg(repeat_probability=0.5))["latent_known"]
    assert rep < plain - 0.2


def test_realised_rates_match_the_config(tmp_path) -> None:
    from hierlab.corpus.stats import _latent_rates

    cfg = _cfg(binding_probability=0.7, repeat_probability=0.3, train_documents=300)
    sampler = PcfgSampler(cfg)
    out = sampler.generate("train", 0, 400)
    bases = sampler.document_bases("train", np.arange(400))
    bounds = np.append(out.doc_starts, len(out.tokens))
    rates = _latent_rates(cfg, sampler, out.tokens, bounds, bases, 400)
    b, r = rates["binding_rate"], rates["repetition_rate"]
    assert b["measured"] == pytest.approx(b["expected"], abs=0.02)
    assert r["expected_without_chance"] <= r["measured"] <= r["expected_without_chance"] + 0.06
    assert out.copies / out.sentences == pytest.approx(0.3 * 15 / 16, abs=0.03)


def test_knob_shards_are_position_pure() -> None:
    cfg = _cfg(binding_probability=0.7, repeat_probability=0.3, binding_level="section",
               train_order="shuffled")
    s = PcfgSampler(cfg)
    whole = s.generate("train", 0, 60).tokens
    parts = np.concatenate([s.generate("train", a, b).tokens
                            for a, b in ((0, 17), (17, 40), (40, 60))])
    assert np.array_equal(whole, parts)
