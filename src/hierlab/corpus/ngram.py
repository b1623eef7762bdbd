"""The n-gram baseline: a mixed-order, hashed-context process with no hierarchy
(docs/reference-study.md#the-n-gram-process).

Before each token an order n is drawn; the last n tokens of the sentence are hashed to one
of ``num_contexts`` Zipf tables. Every sentence's stream derives from (seed, split,
sentence index), so any range of sentences is generated alone. The process in detail, its
flat copies and where it differs from the reference: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.config import NgramConfig
from hierlab.corpus.jit import njit
from hierlab.corpus.rng import (
    STAGE_COPY_DOCUMENT,
    STAGE_COPY_PARAGRAPH,
    STAGE_COPY_SECTION,
    STAGE_COPY_SEGMENT,
    STAGE_NGRAM_HASH,
    STAGE_NGRAM_TABLES,
    STAGE_NGRAM_TEST,
    STAGE_NGRAM_TRAIN,
    alias_draw,
    alias_table,
    mix64,
    next_below,
    next_float,
    next_normal,
    shuffle_inplace,
    unit_seed,
    zipf_probs,
)
from hierlab.corpus.sampler import ROLE_SPECIAL, ROLE_WORD, ShardOutput

_POLY = np.uint64(0x100000001B3)  # odd multiplier of the suffix polynomial hash


@njit(cache=True, inline="always")
def _finish(suffix, n, key, n_ctx) -> int:
    return np.int64(mix64(suffix ^ mix64(key ^ np.uint64(n))) % np.uint64(n_ctx))


@njit(cache=True, inline="always")
def context_id(sentence: np.ndarray, position: int, order: int, key: np.uint64,
               n_contexts: int) -> int:
    """The context table that the token at ``position`` is drawn from (direct form).

    The suffix is hashed as the polynomial sum (t+1) * B^j mod 2^64, then mixed with its
    length and the corpus key; the sampler computes the same value in O(1) per order from
    prefix sums (``_sample_sentences``), which the tests check against this form; the
    n-gram loss floor (:mod:`hierlab.corpus.entropy`) uses this form.

    Args:
        sentence: the sentence's tokens so far.
        position: the token's position in the sentence.
        order: the drawn order; the context is the last ``min(order, position)`` tokens.
        key: the corpus's context-hash key (``NgramSampler.hash_key``).
        n_contexts: the number of context tables.

    Returns:
        The context table's index, in ``[0, n_contexts)``.
    """
    n = min(order, position)
    h = np.uint64(0)
    for i in range(position - n, position):
        h = h * _POLY + np.uint64(sentence[i]) + np.uint64(1)
    return _finish(h, n, key, n_contexts)


LATENTS = ("none", "document", "hierarchy", "segment")


@njit(cache=True)
def _repermute(state, perm, fraction, idx) -> None:
    """Shuffle the words of a random ``fraction`` of the ranks among themselves."""
    k = int(round(fraction * perm.shape[0]))
    for i in range(idx.shape[0]):
        idx[i] = i
    shuffle_inplace(state, idx)
    for i in range(k - 1, 0, -1):  # Fisher-Yates over the chosen ranks
        j = next_below(state, i + 1)
        a, b = idx[i], idx[j]
        tmp = perm[a]
        perm[a] = perm[b]
        perm[b] = tmp


@njit(cache=True)
def _latent_permutation(seed, sub, idx, latent, doc_n, sec_n, par_n, fraction, perm, work):
    """The rank -> word permutation that sentence ``idx`` draws from (``LATENTS`` code)."""
    st = np.empty(1, dtype=np.uint64)
    for i in range(perm.shape[0]):
        perm[i] = i
    if latent == 3:
        st[0] = unit_seed(seed, STAGE_COPY_SEGMENT, idx, sub)
        shuffle_inplace(st, perm)
        return
    st[0] = unit_seed(seed, STAGE_COPY_DOCUMENT, idx // doc_n, sub)
    shuffle_inplace(st, perm)
    if latent == 2:
        st[0] = unit_seed(seed, STAGE_COPY_SECTION, idx // sec_n, sub)
        _repermute(st, perm, fraction, work)
        st[0] = unit_seed(seed, STAGE_COPY_PARAGRAPH, idx // par_n, sub)
        _repermute(st, perm, fraction, work)


@njit(cache=True, inline="always")
def _free_word(state, latent, perm, lat_p, lat_a, probs, aliases, rankings, permuted, eos):
    """A context-free word: ``perm[rank]`` under a latent, else context 0's law."""
    if latent > 0:
        return perm[alias_draw(state, lat_p, lat_a)]
    while True:
        r = alias_draw(state, probs[0], aliases[0])
        t = rankings[0, r] if permuted else r
        if t != eos:
            return t


@njit(cache=True)
def _sample_sentences(
    seed, stage, start, stop, eos, n_ctx, hash_key, probs, aliases, rankings, permuted,
    orders, ord_p, ord_a, len_p, len_a, min_len, annotate, copy_p, separator, emit_eos,
    gap_min, gap_max, gap_zero, latent, sub, doc_n, sec_n, par_n, fraction, lat_p, lat_a,
):
    max_len = min_len + len_p.shape[0] - 1
    cap = (stop - start) * (max_len + 1 + gap_max) * (2 if copy_p > 0.0 else 1)
    perm = np.empty(lat_p.shape[0], dtype=np.int64)
    work = np.empty(lat_p.shape[0], dtype=np.int64)
    gap = np.empty(gap_max, dtype=np.uint16)
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
        if latent > 0:
            _latent_permutation(seed, sub, idx, latent, doc_n, sec_n, par_n, fraction, perm,
                                work)
        for pos in range(length):
            if latent > 0:  # the same context-free draw as a gap word
                t = _free_word(state, latent, perm, lat_p, lat_a, probs, aliases, rankings,
                               permuted, eos)
                sent[pos] = t
                out[n_out + pos] = t
                continue
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
        # without EOS at all, "sentence sentence"; a gap of fresh words sits before the copy
        # (drawn after the copy decision, and only with copy_gap_max > 0)
        g = 0
        if copies == 2 and gap_max > 0:
            g = gap_min + next_below(state, gap_max - gap_min + 1)
            if next_float(state) < gap_zero:
                g = 0
            for q in range(g):
                gap[q] = _free_word(state, latent, perm, lat_p, lat_a, probs, aliases,
                                    rankings, permuted, eos)
        span = (length + 1 if separator and emit_eos else length) + g
        if copies == 2:
            for q in range(g):
                out[n_out + span - g + q] = gap[q]
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
    """Generates any contiguous range of a split's sentences, independently of the rest.

    The context tables (exponents, rankings, alias tables) are drawn once from the seed on
    construction; :meth:`generate` then costs only the sentences asked for.
    """

    def __init__(self, cfg: NgramConfig) -> None:
        """Draw the process's tables from the config.

        Args:
            cfg: the n-gram corpus config.
        """
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
        # a latent draws ranks over the V - 1 words (EOS excluded) from Zipf(exponent_mean)
        self.latent_probs = (zipf_probs(V - 1, cfg.exponent_mean) if cfg.latent != "none"
                             else np.ones(1))
        self._lat = alias_table(self.latent_probs)

    def _length_probs(self) -> np.ndarray:
        cfg = self.cfg
        n = cfg.max_length - cfg.min_length + 1
        if cfg.length_distribution == "uniform":
            w = np.ones(n)
        else:
            w = np.arange(1, n + 1, dtype=np.float64) ** -cfg.length_zipf_exponent
        return w / w.sum()

    def context_distribution(self, context: int) -> np.ndarray:
        """The law one context table draws from, for exact likelihoods (the loss floor).

        Args:
            context: the context table's index.

        Returns:
            P(word | context) over the vocabulary, EOS removed and renormalised: what the
            sampler draws.
        """
        V = self.cfg.vocab_size
        p = np.arange(1, V + 1, dtype=np.float64) ** -self.exponents[context]
        words = self.rankings[context] if self.cfg.permute_rankings else np.arange(V)
        out = np.zeros(V)
        out[words] = p
        out[self.cfg.eos_id] = 0.0
        return out / out.sum()

    def generate(self, split: str, start: int, stop: int, test_set: object = None) -> ShardOutput:
        """Generate sentences ``[start, stop)`` of ``split``: one shard's worth.

        Args:
            split: ``train`` or ``test`` (independent streams).
            start: the first sentence index.
            stop: one past the last.
            test_set: unused; the n-gram process is not de-duplicated (the PCFG sampler's
                signature, so generation treats both alike).

        Returns:
            The shard's tokens, sentence starts and annotations.
        """
        cfg = self.cfg
        stage = STAGE_NGRAM_TRAIN if split == "train" else STAGE_NGRAM_TEST
        tokens, starts, a_sen, a_role = _sample_sentences(
            cfg.seed, stage, start, stop, cfg.eos_id, cfg.n_contexts, np.uint64(self.hash_key),
            self.probs, self.aliases, self.rankings, cfg.permute_rankings,
            np.asarray(cfg.orders, dtype=np.int64), *self._ord, *self._len, cfg.min_length,
            cfg.annotations, float(cfg.copy_probability), cfg.copy_separator, cfg.emit_eos,
            cfg.copy_gap_min, cfg.copy_gap_max, float(cfg.copy_gap_zero_probability),
            LATENTS.index(cfg.latent), 0 if split == "train" else 1, cfg.document_sentences,
            cfg.section_sentences, cfg.paragraph_sentences, float(cfg.repermute_fraction),
            *self._lat,
        )
        ann = {"sentence": a_sen, "role": a_role} if cfg.annotations else None
        return ShardOutput(tokens, starts, ann, stop - start, 0, stop - start)
