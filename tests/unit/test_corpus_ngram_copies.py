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


def _uniform(**over) -> NgramConfig:
    """96 uniform words, sentences of 6..12 (the flat search's base)."""
    base = dict(vocab_size=97, num_contexts=1, orders=[1], exponent_mean=0.0, exponent_std=0.0,
                exponent_floor=0.0, min_length=6, max_length=12, train_sentences=10,
                test_sentences=1)
    return NgramConfig(**{**base, **over})


def test_copy_without_separator_runs_on_from_its_source():
    cfg = _uniform(copy_probability=0.5, copy_separator=False)
    out = NgramSampler(cfg).generate("train", 0, 1500)
    fresh = _sentences(NgramSampler(_uniform()).generate("train", 0, 1500).tokens, cfg.eos_id)
    n_copies = 0
    for unit, sentence in zip(np.split(out.tokens, out.doc_starts[1:]), fresh, strict=True):
        assert unit[-1] == cfg.eos_id and (unit[:-1] != cfg.eos_id).all()  # one EOS, at the end
        n = len(sentence) - 1
        if len(unit) == n + 1:
            assert tuple(unit.tolist()) == sentence
        else:  # the sentence, at once its copy, then EOS
            assert len(unit) == 2 * n + 1
            assert (unit[:n] == unit[n:2 * n]).all() and tuple(unit[:n]) == sentence[:-1]
            n_copies += 1
    assert abs(n_copies / 1500 - 0.5) < 0.05
    s = NgramSampler(cfg)
    assert np.array_equal(s.generate("train", 0, 400).tokens, np.concatenate(
        [s.generate("train", 0, 123).tokens, s.generate("train", 123, 400).tokens]))


@pytest.mark.parametrize("rho", [0.5, 1.0])
def test_floors_without_separator_equal_the_uniform_closed_form(rho):
    """Uniform words: a unit of L words costs L ln 96 plus its length's -log P, fresh
    (1 - rho)/7 for L in 6..12, or a copy rho/7 for L = 2n whose halves agree; recomputed
    here from the same stream ngram_floors scores."""
    cfg = _uniform(copy_probability=rho, copy_separator=False)
    got = ngram_floors(cfg, n_sentences=600)
    out = NgramSampler(cfg).generate("test", 1 << 40, (1 << 40) + 600)
    lv, known, blind = np.log(96.0), 0.0, 0.0
    for unit in np.split(out.tokens, out.doc_starts[1:]):
        L, n = len(unit) - 1, (len(unit) - 1) // 2
        p_fresh = (1 - rho) / 7 * np.exp(-L * lv) if 6 <= L <= 12 else 0.0
        is_copy = L % 2 == 0 and 6 <= n <= 12 and (unit[:n] == unit[n:L]).all()
        p_copy = rho / 7 * np.exp(-n * lv) if is_copy else 0.0
        known -= np.log(p_fresh + p_copy)
        p_len = (1 - rho) / 7 * (6 <= L <= 12) + rho / 7 * (L % 2 == 0 and 6 <= n <= 12)
        blind += L * lv - np.log(p_len)
    assert got["latent_known"] == pytest.approx(known / len(out.tokens), rel=1e-9)
    assert got["no_context"] == pytest.approx(blind / len(out.tokens), rel=1e-9)
    if rho == 1.0:  # E[n] = 9: (9 ln 96 + ln 7) / 19 = 2.2645 nats/token, to MC noise
        assert got["latent_known"] == pytest.approx((9 * lv + np.log(7)) / 19, rel=0.02)


def test_no_eos_stream_is_the_eos_stream_without_its_eos():
    with_eos = NgramSampler(_uniform(copy_probability=0.5, copy_separator=False))
    without = NgramSampler(_uniform(copy_probability=0.5, copy_separator=False, emit_eos=False))
    a, b = with_eos.generate("train", 0, 500), without.generate("train", 0, 500)
    assert (b.tokens != 96).all()
    assert np.array_equal(a.tokens[a.tokens != 96], b.tokens)


def test_no_eos_floors_equal_the_sum_over_every_segmentation():
    """5 words, lengths 2..3, rho 0.5: -log P(stream) summed over every way to cut it into
    fresh units and (unit, copy) pairs, against the forward pass of ngram_floors."""
    cfg = _uniform(vocab_size=6, min_length=2, max_length=3, copy_probability=0.5,
                   copy_separator=False, emit_eos=False)
    got = ngram_floors(cfg, n_sentences=5)
    x = NgramSampler(cfg).generate("test", 1 << 40, (1 << 40) + 5).tokens.tolist()

    def prob(t: int, known: bool) -> float:
        """P(x[t:]) as whole units: (1 - rho) P_len(n) = rho P_len(n) = 1/4."""
        if t == len(x):
            return 1.0
        total = 0.0
        for n in (2, 3):
            if t + n <= len(x):  # a fresh unit of n words
                total += 0.25 * 5.0**-n * prob(t + n, known)
            if t + 2 * n <= len(x):  # n words and their copy
                if not known:  # copy-blind: all 2n words scored as fresh ones
                    total += 0.25 * 5.0**(-2 * n) * prob(t + 2 * n, known)
                elif x[t:t + n] == x[t + n:t + 2 * n]:
                    total += 0.25 * 5.0**-n * prob(t + 2 * n, known)
        return total

    assert got["latent_known"] == pytest.approx(-np.log(prob(0, True)) / len(x), rel=1e-9)
    assert got["no_context"] == pytest.approx(-np.log(prob(0, False)) / len(x), rel=1e-9)
