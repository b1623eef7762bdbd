"""The n-gram baseline: a mixed-order, hashed-context process with no hierarchy
(docs/reference-study.md#the-n-gram-process).

Before each token an order n is drawn from ``orders`` (weights ∝ i^-1.5 by default); the
context is the last n tokens of the current sentence (fewer at its start), hashed to one
of ``num_contexts`` tables. Context c samples a rank r with P(r) ∝ (r+1)^-e_c, where
e_c = max(Normal(mean, std), floor), and emits word ``ranking_c[r]`` (the identity ranking
in the reference; per-context rankings with ``permute_rankings``), redrawing EOS. A
sentence has a length drawn from its law, then EOS. With ``copy_probability`` = rho > 0
(our extension) a sentence is followed at once, with probability rho, by its verbatim copy
and EOS; the copy belongs to the same sentence index (same stream), and is never copied
again. Sentence lengths vary, so the copy lies at a new offset every time. With
``copy_separator: false`` the copy runs on from its source with no EOS between them, so
no boundary token marks where it starts: "the same slot after the last EOS" no longer
finds the copied token, and only a head that matches token identity can.
With ``emit_eos: false`` no EOS is written at all: sentences and copies run together.

Differences from the reference, by design: every setting is honoured (the reference
ignored ``order`` and the length law), a test split exists, and every sentence's stream
derives from (seed, split, sentence index), so there are no seed collisions and the
corpus does not depend on the thread count (docs/reference-study.md#known-defects). The
context hash is a keyed SplitMix64 chain instead of SipHash; any fixed hash gives the same
distribution.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.config import NgramConfig
from hierlab.corpus.jit import njit
from hierlab.corpus.rng import (
    STAGE_NGRAM_HASH,
    STAGE_NGRAM_TABLES,
    STAGE_NGRAM_TEST,
    STAGE_NGRAM_TRAIN,
    alias_draw,
    alias_table,
    mix64,
    next_float,
    next_normal,
    shuffle_inplace,
    unit_seed,
)
from hierlab.corpus.sampler import ROLE_SPECIAL, ROLE_WORD, ShardOutput

_POLY = np.uint64(0x100000001B3)  # odd multiplier of the suffix polynomial hash


@njit(cache=True, inline="always")
def _finish(suffix, n, key, n_ctx) -> int:
    return np.int64(mix64(suffix ^ mix64(key ^ np.uint64(n))) % np.uint64(n_ctx))


@njit(cache=True, inline="always")
def context_id(sent, pos, order, key, n_ctx) -> int:
    """Context table of the last ``min(order, pos)`` tokens before ``pos`` (direct form).

    The suffix is hashed as the polynomial sum (t+1) * B^j mod 2^64, then mixed with its
    length and the corpus key; the sampler computes the same value in O(1) per order from
    prefix sums (``_sample_sentences``), which the tests check against this form; the
    n-gram loss floor (:mod:`hierlab.corpus.entropy`) uses this form.
    """
    n = min(order, pos)
    h = np.uint64(0)
    for i in range(pos - n, pos):
        h = h * _POLY + np.uint64(sent[i]) + np.uint64(1)
    return _finish(h, n, key, n_ctx)


@njit(cache=True)
def _sample_sentences(
    seed, stage, start, stop, eos, n_ctx, hash_key, probs, aliases, rankings, permuted,
    orders, ord_p, ord_a, len_p, len_a, min_len, annotate, copy_p, separator, emit_eos,
):
    max_len = min_len + len_p.shape[0] - 1
    cap = (stop - start) * (max_len + 1) * (2 if copy_p > 0.0 else 1)
    out = np.empty(cap, dtype=np.uint16)
    a_sen = np.empty(cap if annotate else 0, dtype=np.uint32)
    a_role = np.empty(cap if annotate else 0, dtype=np.uint8)
    starts = np.empty(stop - start, dtype=np.int64)
    sent = np.empty(max_len, dtype=np.uint16)
    prefix = np.zeros(max_len + 1, dtype=np.uint64)  # prefix[i] = hash of sent[:i]
    max_order = 1
    for o in orders:
        max_order = max(max_order, o)
    powers = np.empty(min(max_order, max_len) + 1, dtype=np.uint64)
    powers[0] = 1
    for i in range(1, powers.shape[0]):
        powers[i] = powers[i - 1] * _POLY
    state = np.empty(1, dtype=np.uint64)
    n_out = 0
    for k in range(stop - start):
        idx = start + k
        state[0] = unit_seed(seed, stage, idx, 0)
        length = min_len + alias_draw(state, len_p, len_a)
        starts[k] = n_out
        for pos in range(length):
            n = min(orders[alias_draw(state, ord_p, ord_a)], pos)
            c = _finish(prefix[pos] - prefix[pos - n] * powers[n], n, hash_key, n_ctx)
            while True:
                r = alias_draw(state, probs[c], aliases[c])
                t = rankings[c, r] if permuted else r
                if t != eos:
                    break
            sent[pos] = t
            prefix[pos + 1] = prefix[pos] * _POLY + np.uint64(t) + np.uint64(1)
            out[n_out + pos] = t
        out[n_out + length] = eos
        # the copy draw comes after every draw of the sentence, and only when rho > 0, so
        # rho = 0 leaves the reference streams (and their hashes) untouched
        copies = 2 if copy_p > 0.0 and next_float(state) < copy_p else 1
        # with a separator each copy is "sentence EOS"; without, "sentence sentence EOS";
        # without EOS at all, "sentence sentence"
        span = length + 1 if separator and emit_eos else length
        if copies == 2:
            for q in range(length):
                out[n_out + span + q] = sent[q]
            out[n_out + span + length] = eos
        total = (copies - 1) * span + length + (1 if emit_eos else 0)
        if annotate:
            for q in range(total):
                a_sen[n_out + q] = idx
                a_role[n_out + q] = ROLE_SPECIAL if out[n_out + q] == eos else ROLE_WORD
        n_out += total
    if annotate:
        return out[:n_out].copy(), starts, a_sen[:n_out].copy(), a_role[:n_out].copy()
    return out[:n_out].copy(), starts, a_sen, a_role


@njit(cache=True)
def _context_params(seed, n_ctx, vocab, mean, std, floor, permuted):
    exps = np.empty(n_ctx)
    rankings = np.empty((n_ctx if permuted else 1, vocab), dtype=np.int32)
    state = np.empty(1, dtype=np.uint64)
    for c in range(n_ctx):
        state[0] = unit_seed(seed, STAGE_NGRAM_TABLES, c, 0)
        exps[c] = max(mean + std * next_normal(state), floor)
        if permuted:
            for i in range(vocab):
                rankings[c, i] = i
            shuffle_inplace(state, rankings[c])
    return exps, rankings


class NgramSampler:
    """Generates any contiguous range of a split's sentences, independently of the rest."""

    def __init__(self, cfg: NgramConfig) -> None:
        self.cfg = cfg
        V = cfg.vocab_size
        self.exponents, self.rankings = _context_params(
            cfg.seed, cfg.n_contexts, V, cfg.exponent_mean, cfg.exponent_std,
            cfg.exponent_floor, cfg.permute_rankings,
        )
        ranks = np.arange(1, V + 1, dtype=np.float64)
        self.probs = np.empty((cfg.n_contexts, V))
        self.aliases = np.empty((cfg.n_contexts, V), dtype=np.int32)
        for c, e in enumerate(self.exponents):
            # EOS is never emitted mid-sentence: drawing from the law with EOS's rank
            # removed equals the reference's redraw-on-EOS, and cannot loop forever when a
            # steep context puts nearly all its mass on EOS
            w = ranks**-e
            eos_rank = (int(np.flatnonzero(self.rankings[c] == cfg.eos_id)[0])
                        if cfg.permute_rankings else cfg.eos_id)
            w[eos_rank] = 0.0
            self.probs[c], self.aliases[c] = alias_table(w)
        self.order_weights = np.asarray(cfg.weights())
        self._ord = alias_table(self.order_weights)
        self.length_probs = self._length_probs()
        self._len = alias_table(self.length_probs)
        self.hash_key = int(unit_seed(cfg.seed, STAGE_NGRAM_HASH, 0, 0))

    def _length_probs(self) -> np.ndarray:
        cfg = self.cfg
        n = cfg.max_length - cfg.min_length + 1
        if cfg.length_distribution == "uniform":
            w = np.ones(n)
        else:
            w = np.arange(1, n + 1, dtype=np.float64) ** -cfg.length_zipf_exponent
        return w / w.sum()

    def context_distribution(self, c: int) -> np.ndarray:
        """P(word | context c), EOS removed and renormalised (what the sampler draws)."""
        V = self.cfg.vocab_size
        p = np.arange(1, V + 1, dtype=np.float64) ** -self.exponents[c]
        words = self.rankings[c] if self.cfg.permute_rankings else np.arange(V)
        out = np.zeros(V)
        out[words] = p
        out[self.cfg.eos_id] = 0.0
        return out / out.sum()

    def generate(self, split: str, start: int, stop: int, test_set: object = None) -> ShardOutput:
        """Sentences ``[start, stop)`` of ``split``."""
        cfg = self.cfg
        stage = STAGE_NGRAM_TRAIN if split == "train" else STAGE_NGRAM_TEST
        tokens, starts, a_sen, a_role = _sample_sentences(
            cfg.seed, stage, start, stop, cfg.eos_id, cfg.n_contexts, np.uint64(self.hash_key),
            self.probs, self.aliases, self.rankings, cfg.permute_rankings,
            np.asarray(cfg.orders, dtype=np.int64), *self._ord, *self._len, cfg.min_length,
            cfg.annotations, float(cfg.copy_probability), cfg.copy_separator, cfg.emit_eos,
        )
        ann = {"sentence": a_sen, "role": a_role} if cfg.annotations else None
        return ShardOutput(tokens, starts, ann, stop - start, 0, stop - start)
