"""Flat copies in the n-gram process (``copy_probability``): streams, invariances, floors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from corpus_helpers import tiny_ngram
from hierlab.corpus.config import NgramConfig
from hierlab.corpus.entropy import copy_known_nll, ngram_floors
from hierlab.corpus.ngram import NgramSampler


def _cfg(**over) -> NgramConfig:
    return NgramConfig(**{k: v for k, v in tiny_ngram(**over).items() if k != "kind"})


def _sentences(tokens: np.ndarray, eos: int) -> list[tuple[int, ...]]:
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(tokens[s:e + 1].tolist()) for s, e in zip(starts, ends, strict=True)]


def test_copy_probability_zero_keeps_the_reference_dump_and_stream():
    ref, off = _cfg(), _cfg(copy_probability=0.0)
    assert "copy_probability" not in ref.model_dump()  # corpus hashes of old configs hold
    a = NgramSampler(ref).generate("train", 0, 300)
    b = NgramSampler(off).generate("train", 0, 300)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.doc_starts, b.doc_starts)


def test_copies_follow_their_sentence_and_leave_the_fresh_stream_unchanged():
    cfg, ref = _cfg(copy_probability=0.5), _cfg()
    out = NgramSampler(cfg).generate("train", 0, 2000)
    fresh = _sentences(NgramSampler(ref).generate("train", 0, 2000).tokens, cfg.eos_id)
    units = np.split(out.tokens, out.doc_starts[1:])
    n_copies = 0
    for unit, sentence in zip(units, fresh, strict=True):
        sents = _sentences(unit, cfg.eos_id)
        assert sents[0] == sentence  # the copy draw comes after the sentence's draws
        assert len(sents) in (1, 2)
        if len(sents) == 2:
            assert sents[1] == sents[0]
            n_copies += 1
    assert abs(n_copies / 2000 - 0.5) < 0.04  # binomial sd 0.011
    # a copy is never copied: no sentence occurs three times in a row
    all_sents = _sentences(out.tokens, cfg.eos_id)
    assert not any(x == y == z for x, y, z in zip(all_sents, all_sents[1:], all_sents[2:],
                                                   strict=False))


def test_copy_stream_does_not_depend_on_the_shard_split():
    s = NgramSampler(_cfg(copy_probability=0.7))
    whole = s.generate("train", 0, 900).tokens
    parts = [s.generate("train", a, b).tokens for a, b in ((0, 250), (250, 251), (251, 900))]
    assert np.array_equal(whole, np.concatenate(parts))


def test_copy_probability_out_of_range_names_the_field():
    with pytest.raises(ValidationError, match="copy_probability"):
        _cfg(copy_probability=1.5)


def _brute_force(nll: np.ndarray, same: np.ndarray, rho: float) -> float:
    """-log P summed over every flag sequence (True = copy of the sentence before)."""
    total = 0.0
    for flags in itertools.product([False, True], repeat=len(nll)):
        if flags[0]:
            continue
        p = np.exp(-nll[0])
        for i in range(1, len(nll)):
            if flags[i]:
                p *= rho * same[i] if not flags[i - 1] else 0.0
            else:
                p *= (1.0 if flags[i - 1] else 1 - rho) * np.exp(-nll[i])
        total += p
    return -float(np.log(total))


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.9])
def test_copy_known_nll_equals_the_sum_over_every_copy_pattern(rho):
    g = np.random.default_rng(3)
    nll = g.uniform(0.5, 4.0, 7)
    same = np.array([False, True, False, True, True, False, True])  # a 3rd copy is impossible
    assert copy_known_nll(nll, same, rho) == pytest.approx(_brute_force(nll, same, rho), rel=1e-12)


def test_floors_with_copies():
    ref = ngram_floors(_cfg(), n_sentences=800)
    half = ngram_floors(_cfg(copy_probability=0.5), n_sentences=800)
    every = ngram_floors(_cfg(copy_probability=1.0), n_sentences=800)
    assert "latent_known" not in ref
    # ignoring the copies costs the n-gram rate (a copy is marginally an n-gram sentence)
    assert half["no_context"] == half["entropy_rate"]
    assert half["no_context"] == pytest.approx(ref["entropy_rate"], rel=0.05)
    # rho = 1: every fresh sentence is paid once and its copy is free, so the floor is half
    # the rate (to the MC noise of the sentence lengths; units are a sentence and its copy)
    assert every["latent_known"] == pytest.approx(every["entropy_rate"] / 2, rel=1e-9)
    assert every["latent_known"] < half["latent_known"] < half["no_context"]
