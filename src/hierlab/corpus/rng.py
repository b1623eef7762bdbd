"""Counter-based seeding and fast random draws for the compiled samplers.

Every random draw of a corpus derives from ``(seed, stage, unit)``, so any shard can be
generated alone, in any order, on any machine, with identical bytes. This module is the
package's one home for SplitMix64 and the keyed Feistel permutation: compiled scalar forms
drive the samplers, numpy array forms give training its window order, and tests check that
both agree. The algorithms and their sources: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.jit import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# Stage tags: one per independent family of draws.
STAGE_LATENT = 1  # per base document: rank -> word permutations
STAGE_SECTION = 2  # per (document, section): partial re-permutation
STAGE_PARAGRAPH = 3  # per (document, section, paragraph)
STAGE_SENT_TRAIN = 4  # per train realisation: its sentences
STAGE_SENT_TEST = 5  # per test realisation
STAGE_ORDER = 6  # the global document order permutation of a split
STAGE_NGRAM_TABLES = 7  # per n-gram context: exponent and ranking
STAGE_NGRAM_TRAIN = 8  # per train sentence
STAGE_NGRAM_TEST = 9  # per test sentence
STAGE_NGRAM_HASH = 10  # the context-hash key
STAGE_BINDING = 11  # per (document | section | paragraph): the binding maps
STAGE_FLOOR = 12  # Monte-Carlo loss-floor documents
STAGE_COPY_DOCUMENT = 13  # n-gram latent: per document, the rank -> word permutation
STAGE_COPY_SECTION = 14  # ... per section: a partial re-permutation
STAGE_COPY_PARAGRAPH = 15  # ... per paragraph: a partial re-permutation
STAGE_COPY_SEGMENT = 16  # ... per sentence: a fresh permutation (burstiness, no shared latent)


@njit(cache=True, inline="always")
def mix64(bits: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijective avalanche mix of 64 bits.

    Args:
        bits: the input word.

    Returns:
        The mixed word; every input bit affects every output bit.
    """
    bits = (bits ^ (bits >> np.uint64(30))) * _M1
    bits = (bits ^ (bits >> np.uint64(27))) * _M2
    return bits ^ (bits >> np.uint64(31))


@njit(cache=True)
def unit_seed(seed: int, stage: int, unit: int, subunit: int = 0) -> np.uint64:
    """The starting state of one independent random stream, a pure function of its name.

    Args:
        seed: the corpus seed.
        stage: the family of draws (a ``STAGE_*`` tag).
        unit: the unit within the family (a document, a sentence, a context).
        subunit: a part of the unit with its own stream (a section, a paragraph).

    Returns:
        The state to store in a 1-element uint64 array for :func:`next_u64`.
    """
    z = mix64(np.uint64(seed) + GOLDEN)
    z = mix64(z ^ (np.uint64(stage) * GOLDEN))
    z = mix64(z ^ (np.uint64(unit) + _M1))
    z = mix64(z ^ (np.uint64(subunit) * _M2 + GOLDEN))
    return z


@njit(cache=True, inline="always")
def next_u64(state: np.ndarray) -> np.uint64:
    """Advance a stream and draw 64 random bits (SplitMix64).

    Args:
        state: the stream's 1-element uint64 array, advanced in place.

    Returns:
        The bits.
    """
    state[0] += GOLDEN
    return mix64(state[0])


@njit(cache=True, inline="always")
def next_float(state: np.ndarray) -> float:
    """A uniform double in [0, 1), from the top 53 bits of one draw.

    Args:
        state: the stream, advanced in place.

    Returns:
        The double.
    """
    return float(next_u64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def next_below(state: np.ndarray, bound: int) -> int:
    """A uniform integer in [0, bound) without bias (Lemire 2019's multiply-shift).

    Args:
        state: the stream, advanced in place (more than once on a rejection).
        bound: the exclusive upper bound, below 2**32.

    Returns:
        The integer.
    """
    nn = np.uint64(bound)
    x = next_u64(state) >> np.uint64(32)
    m = x * nn
    low = m & np.uint64(0xFFFFFFFF)
    if low < nn:
        t = (np.uint64(0x100000000) - nn) % nn
        while low < t:
            x = next_u64(state) >> np.uint64(32)
            m = x * nn
            low = m & np.uint64(0xFFFFFFFF)
    return np.int64(m >> np.uint64(32))


@njit(cache=True, inline="always")
def alias_draw(state: np.ndarray, prob: np.ndarray, alias: np.ndarray) -> int:
    """One draw from a finite distribution in O(1), by its alias table.

    Args:
        state: the stream, advanced in place.
        prob: the table's acceptance probabilities (:func:`alias_table`).
        alias: the table's aliases.

    Returns:
        The drawn index: uniform, then kept or replaced by its alias.
    """
    i = next_below(state, prob.shape[0])
    if next_float(state) < prob[i]:
        return i
    return np.int64(alias[i])


@njit(cache=True)
def shuffle_inplace(state: np.ndarray, array: np.ndarray) -> None:
    """Shuffle an array in place, uniformly over its permutations (Fisher-Yates).

    Args:
        state: the stream, advanced in place.
        array: the array to shuffle.
    """
    for i in range(array.shape[0] - 1, 0, -1):
        j = next_below(state, i + 1)
        tmp = array[i]
        array[i] = array[j]
        array[j] = tmp


@njit(cache=True)
def next_normal(state: np.ndarray) -> float:
    """A standard normal draw (Box-Muller, one value per call).

    Args:
        state: the stream, advanced in place.

    Returns:
        The draw.
    """
    u1 = next_float(state)
    while u1 <= 0.0:
        u1 = next_float(state)
    u2 = next_float(state)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True)
def feistel_index(position: int, size: int, key: np.uint64) -> int:
    """Position ``position`` of a keyed pseudo-random permutation of ``range(size)``.

    Why: a split's documents are shuffled globally (the reference's train order) without
    ever materialising the permutation, so shard j (output positions j*D..) can be
    generated alone. A balanced 6-round Feistel network on the smallest even bit width
    >= log2(size), with cycle walking to stay inside [0, size), is a bijection: the scalar
    form of :func:`feistel_permute_array` with round keys ``key ^ r * GOLDEN``.

    Args:
        position: the index into the permuted sequence, in ``[0, size)``.
        size: the length of the permuted range.
        key: the permutation's key.

    Returns:
        The element of ``range(size)`` at that position.
    """
    bits = 2
    while (np.uint64(1) << np.uint64(bits)) < np.uint64(size):
        bits += 2
    half = np.uint64(bits // 2)
    mask = (np.uint64(1) << half) - np.uint64(1)
    x = np.uint64(position)
    while True:
        left = x >> half
        right = x & mask
        for r in range(6):
            f = mix64(right ^ key ^ (np.uint64(r) * GOLDEN)) & mask
            left, right = right, left ^ f
        x = (left << half) | right
        if x < np.uint64(size):
            return np.int64(x)


def mix64_array(bits: np.ndarray) -> np.ndarray:
    """:func:`mix64` on a whole array at numpy speed, with the same bits.

    Args:
        bits: the input words (cast to uint64; arithmetic wraps as in the compiled form).

    Returns:
        The mixed words, a new uint64 array.
    """
    z = np.asarray(bits, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def feistel_half_bits(size: int) -> int:
    """Half the width of the Feistel network over ``range(size)``.

    Args:
        size: the length of the permuted range.

    Returns:
        Half of the smallest even bit count >= 2 whose range covers ``size``, as
        :func:`feistel_index` chooses it.
    """
    bits = max(2, int(size - 1).bit_length())
    return (bits + bits % 2) // 2


def feistel_array(values: np.ndarray, keys: np.ndarray, half_bits: int) -> np.ndarray:
    """One pass of a balanced Feistel network, a bijection of ``[0, 4**half_bits)``.

    Args:
        values: uint64 inputs in ``[0, 4**half_bits)``.
        keys: the round keys, one round each; round function ``mix64(right ^ key)``.
        half_bits: half the network's width (:func:`feistel_half_bits`).

    Returns:
        The permuted values, a new uint64 array (may lie outside the target range: the
        caller walks the cycle).
    """
    half = np.uint64(half_bits)
    mask = (np.uint64(1) << half) - np.uint64(1)
    left, right = values >> half, values & mask
    for k in keys:
        left, right = right, left ^ (mix64_array(right ^ k) & mask)
    return (left << half) | right


def feistel_permute_array(positions: np.ndarray, size: int, keys: np.ndarray) -> np.ndarray:
    """Many positions of a keyed permutation of ``range(size)``, never materialising it.

    Args:
        positions: indices into the permuted sequence, in ``[0, size)``.
        size: the length of the permuted range.
        keys: the round keys of the Feistel network.

    Returns:
        The elements at those positions (int64): the Feistel network with cycle walking,
        so every output stays inside ``[0, size)``.
    """
    half_bits = feistel_half_bits(size)
    out = feistel_array(np.asarray(positions, dtype=np.uint64), keys, half_bits)
    bad = out >= size
    while bad.any():
        out[bad] = feistel_array(out[bad], keys, half_bits)
        bad = out >= size
    return out.astype(np.int64)


@njit(cache=True)
def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = p.shape[0]
    scaled = p / p.sum() * n
    prob = np.zeros(n)
    alias = np.zeros(n, dtype=np.int32)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        nl -= 1
        s, g = small[ns], large[nl]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        if scaled[g] < 1.0:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1
    for i in range(nl):
        prob[large[i]] = 1.0
        alias[large[i]] = large[i]
    for i in range(ns):
        prob[small[i]] = 1.0
        alias[small[i]] = small[i]
    return prob, alias


def alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table of a finite distribution, for O(1) draws with :func:`alias_draw`.

    Args:
        probabilities: the weights of each outcome (normalised here).

    Returns:
        ``(prob, alias)``: the acceptance probability (float64) and alias (int32) of each
        outcome.
    """
    return _alias_table(np.ascontiguousarray(probabilities, dtype=np.float64))


def zipf_probs(n_ranks: int, exponent: float) -> np.ndarray:
    """The Zipf law over ranks, as the reference drew it with ``rand_distr::Zipf``.

    Args:
        n_ranks: the number of ranks.
        exponent: the law's exponent s.

    Returns:
        ``P(rank k) ∝ k**-s`` for k = 1..n_ranks, summing to 1.
    """
    w = np.arange(1, n_ranks + 1, dtype=np.float64) ** -exponent
    return w / w.sum()
