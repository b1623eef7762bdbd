"""Designs without a positional shortcut: distant copies, permuted recall, MQAR bindings.

Checks, per knob: the config is validated; ``no_context`` holds on generated corpora; the
realised rates match the config; annotations keep the roles; shards stay position-pure;
and the knobs left off keep the bytes of every existing knob. The loss floors of the same
designs (exact conditionals, bounds, analytic floors) are in
``test_corpus_design_floors.py``.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from pydantic import ValidationError

from design_helpers import design_cfg, split_sentences
from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.entropy import pcfg_floors
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.sampler import (
    ROLE_CONNECTOR,
    ROLE_OBJECT,
    ROLE_SPECIAL,
    ROLE_SUBJECT,
    ROLE_VERB,
)


# ----- config ----------------------------------------------------------------------------
def test_design_fields_are_validated() -> None:
    with pytest.raises(ValidationError, match="repeat_min_distance"):
        design_cfg(repeat_min_distance=0)
    with pytest.raises(ValidationError, match="repeat_source"):
        design_cfg(repeat_source="copies")
    with pytest.raises(ValidationError, match="even sentences_per_paragraph"):
        design_cfg(permuted_recall=True, sentences_per_paragraph=3)
    with pytest.raises(ValidationError, match="even sentences_per_paragraph"):
        design_cfg(permuted_recall=True, sentences_per_paragraph=1)
    with pytest.raises(ValidationError, match="permuted_recall and repeat_probability"):
        design_cfg(permuted_recall=True, repeat_probability=0.2)
    with pytest.raises(ValidationError, match="active_subjects"):
        design_cfg(active_subjects=17)
    with pytest.raises(ValidationError, match="active_subjects"):
        design_cfg(active_subjects=0)
    design_cfg(active_subjects=16, permuted_recall=True, repeat_source="fresh")  # all fine


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
        cfg = design_cfg(**kw, **extra)
        assert _digest(cfg) == digest
        assert pcfg_floors(cfg, 50)["latent_known"] == floor


# ----- no_context, marginals and realised rates on generated corpora ---------------------
def _uniform_word_nll(cfg: PcfgConfig, tokens: np.ndarray) -> float:
    lx, off = cfg.lexicon, cfg.role_offsets
    nll = 0.0
    for s in split_sentences(tokens, cfg.eos_id):
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
    cfg = design_cfg(train_documents=1500, **kw)
    out = PcfgSampler(cfg).generate("train", 0, 3000)
    floors = pcfg_floors(cfg)
    assert _uniform_word_nll(cfg, out.tokens) / len(out.tokens) == pytest.approx(
        floors["no_context"], rel=0.01)
    assert floors["no_context"] == pytest.approx(pcfg_floors(design_cfg())["no_context"])
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
    any_cfg = design_cfg(lexicon=lex, train_documents=300, repeat_probability=rho)
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
    cfg = design_cfg(permuted_recall=True, sentences_per_paragraph=6, train_documents=300)
    out, rates = _rates(cfg)
    assert out.copies * 2 == out.sentences
    r = rates["recall_rate"]
    assert r["measured"] == 1.0
    assert r["in_order_expected"] == pytest.approx(1 / 6)
    assert r["in_order_paragraphs"] == pytest.approx(1 / 6, abs=0.03)
    assert "repetition_rate" not in rates


def test_mqar_realised_rates() -> None:
    cfg = design_cfg(active_subjects=3, binding_probability=0.7, binding_level="paragraph",
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
    cfg = design_cfg(annotations=True, **kw)
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
        s = PcfgSampler(design_cfg(**kw))
        whole = s.generate("train", 0, 60).tokens
        parts = np.concatenate([s.generate("train", a, b).tokens
                                for a, b in ((0, 17), (17, 40), (40, 60))])
        assert np.array_equal(whole, parts)


def test_format_stats_prints_the_design_rates() -> None:
    from hierlab.corpus.stats import format_stats

    cfg = design_cfg(active_subjects=3, binding_probability=0.7, binding_level="paragraph",
               permuted_recall=True, train_documents=100)
    _, rates = _rates(cfg, 100)
    split = dict(tokens_total=1, units=1, tokens_read=1, sentences_read=1,
                 mean_sentence_length=1.0, unique_sentence_fraction=1.0, max_id=1, **rates)
    text = format_stats({"corpus": "c", "kind": "pcfg", "loss_floors": {}, "splits":
                         {"train": split}})
    assert "recalled sentences 1.0000" in text
    assert "active set 1.0000" in text
    assert "binding rate" in text
