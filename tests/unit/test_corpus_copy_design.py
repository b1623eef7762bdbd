"""The copy design with spread distances and matched latents (n-gram ``copy_gap_*``,
``latent``): streams, the arms' shared marginal, the exact floors and the statistics that
let a reader check that the arms are matched."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from hierlab.corpus.config import NgramConfig
from hierlab.corpus.entropy import loss_floors
from hierlab.corpus.ngram import NgramSampler
from hierlab.corpus.rng import zipf_probs
from hierlab.corpus.stats import copy_statistics

WORDS = 96


def _design(**over) -> NgramConfig:
    base = dict(vocab_size=WORDS + 1, num_contexts=1, orders=[1], exponent_mean=0.0,
                exponent_std=0.0, exponent_floor=0.0, min_length=6, max_length=12,
                copy_probability=1.0, copy_separator=False, emit_eos=False,
                copy_gap_max=26, train_sentences=4000, test_sentences=200,
                sentences_per_shard=4000)
    return NgramConfig(**{**base, **over})


def _units(cfg: NgramConfig, n: int) -> list[np.ndarray]:
    out = NgramSampler(cfg).generate("train", 0, n)
    return np.split(out.tokens, out.doc_starts[1:])


def test_no_gap_no_latent_keeps_the_flat_stream_and_dump():
    flat = _design(copy_gap_max=0)
    assert "copy_gap_max" not in flat.model_dump() and "latent" not in flat.model_dump()
    units = _units(flat, 300)
    for u in units:  # a sentence followed at once by its copy
        n = len(u) // 2
        assert len(u) % 2 == 0 and np.array_equal(u[:n], u[n:])


def test_gaps_spread_the_copy_distances():
    cfg = _design(copy_gap_min=2, copy_gap_max=20)
    gaps = []
    for u in _units(cfg, 2000):
        # a unit is L words, g fresh words, the L words again
        total = len(u)
        found = [(L, total - 2 * L) for L in range(6, 13)
                 if 2 <= total - 2 * L <= 20 and np.array_equal(u[:L], u[total - L:])]
        assert found, u
        gaps.append(found[0][1])
    gaps = np.array(gaps)
    assert gaps.min() == 2 and gaps.max() == 20
    assert abs(gaps.mean() - 11.0) < 0.5  # uniform over 2..20
    # the mixture puts about half of the copies right after their sentence
    mixed = _design(copy_gap_zero_probability=0.5)
    imm = [np.array_equal(u[:len(u) // 2], u[len(u) // 2:]) for u in _units(mixed, 2000)]
    assert 0.45 < np.mean(imm) < 0.58  # 0.5 + 0.5 / 27 (a gap of 0 drawn uniformly)


def test_the_stream_does_not_depend_on_the_shard_split():
    for latent in ("none", "document", "hierarchy", "segment"):
        cfg = _design(latent=latent, exponent_mean=1.0 if latent != "none" else 0.0)
        s = NgramSampler(cfg)
        whole = s.generate("train", 0, 200).tokens
        parts = np.concatenate([s.generate("train", a, b).tokens
                                for a, b in ((0, 37), (37, 150), (150, 200))])
        assert np.array_equal(whole, parts), latent
        assert not np.array_equal(whole[:500], s.generate("test", 0, 200).tokens[:500])


def _ranks_of(cfg: NgramConfig, sentences: int) -> np.ndarray:
    return np.concatenate(_units(cfg, sentences))


def test_every_latent_has_a_uniform_word_marginal():
    """A uniform random permutation of Zipf ranks makes every word equally likely over
    documents: the arms differ in their latent only, not in their marginal."""
    for latent in ("document", "hierarchy", "segment"):
        toks = _ranks_of(_design(latent=latent, exponent_mean=1.0, document_sentences=4,
                                 section_sentences=2, paragraph_sentences=1), 16000)
        freq = np.bincount(toks, minlength=WORDS) / len(toks)
        assert 0.5 * np.abs(freq - 1 / WORDS).sum() < 0.06, latent


def test_a_document_draws_its_words_by_zipf_rank():
    cfg = _design(latent="document", exponent_mean=1.0, document_sentences=400)
    toks = _ranks_of(cfg, 400)  # one document
    freq = np.sort(np.bincount(toks, minlength=WORDS))[::-1] / len(toks)
    want = zipf_probs(WORDS, 1.0)
    # copies repeat words but not their law: the sorted frequencies follow Zipf(1)
    assert abs(freq[0] - want[0]) < 0.03 and abs(freq[:10].sum() - want[:10].sum()) < 0.04


def test_levels_of_the_hierarchy_share_their_latent():
    """Paragraphs of one section share more of their top words than paragraphs of two
    documents; a segment latent shares nothing between sentences."""
    def top(cfg, start, stop):
        toks = np.concatenate(np.split(*(lambda o: (o.tokens, o.doc_starts[1:]))(
            NgramSampler(cfg).generate("train", start, stop))))
        return set(np.argsort(-np.bincount(toks, minlength=WORDS))[:5].tolist())

    h = _design(latent="hierarchy", exponent_mean=2.0, document_sentences=400,
                section_sentences=200, paragraph_sentences=100, repermute_fraction=0.1)
    same_doc = len(top(h, 0, 100) & top(h, 100, 200))
    other_doc = len(top(h, 0, 100) & top(h, 400, 500))
    assert same_doc >= 3 and other_doc <= 2


def test_closed_form_floors_match_the_sampled_stream():
    for latent, s in (("none", 0.0), ("document", 1.0), ("document", 0.5),
                      ("hierarchy", 1.0), ("segment", 1.0)):
        cfg = _design(latent=latent, exponent_mean=s, copy_gap_zero_probability=0.3)
        f = loss_floors(cfg)
        assert f["no_context"] == pytest.approx(np.log(WORDS))
        toks = np.concatenate(_units(cfg, 6000))
        measured = copy_statistics(cfg, toks)
        assert measured["copy_fraction"] == pytest.approx(f["copy_fraction"], abs=0.01)
        p = zipf_probs(WORDS, s)
        h_fresh = float(-(p * np.log(p)).sum())
        assert f["latent_known"] == pytest.approx((1 - f["copy_fraction"]) * h_fresh)
        assert f["latent_known"] < f["no_context"]


def test_copy_statistics_find_the_gaps():
    cfg = _design(copy_gap_min=10, copy_gap_max=10)  # every distance is L + 10
    st = copy_statistics(cfg, np.concatenate(_units(cfg, 3000)))
    dist = st["copy_distance_histogram"]
    share = sum(v for d, v in dist.items() if 16 <= d <= 22) / sum(dist.values())
    assert share > 0.99
    assert st["unigram_tv_from_uniform"] < 0.05 and 0 < st["window_repeat_rate"] < 1


@pytest.mark.parametrize(("over", "field"), [
    ({"latent": "document", "orders": [1, 2]}, "orders"),
    ({"copy_gap_max": 4, "emit_eos": True}, "emit_eos"),
    ({"copy_gap_min": 5, "copy_gap_max": 4}, "copy_gap_max"),
    ({"latent": "hierarchy", "section_sentences": 5}, "section_sentences"),
    ({"latent": "wrong"}, "latent"),
])
def test_bad_design_settings_name_the_field(over, field):
    with pytest.raises(ValidationError, match=field):
        _design(**over)


def test_the_copy_kind_is_the_flat_copy_design():
    """``kind: copy`` defaults to the flat copy design and draws the same stream as the
    n-gram kind with those settings; it dumps every field, so a round trip keeps a
    non-default ``emit_eos``; a context process is refused by name."""
    from hierlab.config import config_from_dict as validate_config
    from hierlab.corpus.config import CopyConfig
    from hierlab.errors import ConfigError

    copy = CopyConfig(train_sentences=4000, test_sentences=200, sentences_per_shard=4000)
    flat = _design(copy_gap_max=0)
    a = NgramSampler(copy).generate("train", 0, 300)
    b = NgramSampler(flat).generate("train", 0, 300)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.doc_starts, b.doc_starts)
    eos = CopyConfig(emit_eos=True, copy_separator=True)
    assert CopyConfig(**eos.model_dump()) == eos and eos.model_dump()["emit_eos"] is True
    cfg = validate_config({"corpora": {"copy": {"kind": "copy", "max_length": 16}}})
    assert isinstance(cfg.corpora["copy"], CopyConfig) and cfg.corpora["copy"].max_length == 16
    with pytest.raises(ConfigError, match="orders"):
        validate_config({"corpora": {"copy": {"kind": "copy", "orders": [1, 2]}}})
    with pytest.raises(ConfigError, match="copy_probability"):
        validate_config({"corpora": {"copy": {"kind": "copy", "copy_probability": 0.0}}})
