"""Counter-based seeding and fast random draws for the compiled samplers.

Why counter-based: every random draw of a corpus derives from ``(seed, stage, unit)`` —
a document's latent state from its document index, a sentence stream from its
realisation index — so any shard can be generated alone, in any order, on any machine,
with identical bytes. (The reference seeded per chunk and per thread, which made its
n-gram corpus depend on the thread count and collide; docs/reference-study.md#known-defects.)

The generator is SplitMix64 (Steele, Lea & Flood 2014; the seeding generator of the
xoshiro family; passes BigCrush). Bounded integers use Lemire's unbiased multiply-shift
with rejection; uniform floats take the top 53 bits. Alias tables (Vose 1991) give O(1)
draws from any finite distribution.

This module is the package's one home for SplitMix64 and the Feistel permutation: the
compiled scalar forms (``mix64``, ``feistel_index``) drive the samplers, and the numpy
array forms (``mix64_array``, ``feistel_array``, ``feistel_permute_array``) give training
its window order (:class:`hierlab.train.data.WindowOrder`); tests check both agree.
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
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijective avalanche mix of 64 bits."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def unit_seed(seed: int, stage: int, unit: int, sub: int = 0) -> np.uint64:
    """The starting state of the stream for ``(seed, stage, unit, sub)``."""
    z = mix64(np.uint64(seed) + GOLDEN)
    z = mix64(z ^ (np.uint64(stage) * GOLDEN))
    z = mix64(z ^ (np.uint64(unit) + _M1))
    z = mix64(z ^ (np.uint64(sub) * _M2 + GOLDEN))
    return z


@njit(cache=True, inline="always")
def next_u64(state: np.ndarray) -> np.uint64:
    """Advance a 1-element uint64 state array and return 64 random bits."""
    state[0] += GOLDEN
    return mix64(state[0])


@njit(cache=True, inline="always")
def next_float(state: np.ndarray) -> float:
    """A uniform double in [0, 1)."""
    return float(next_u64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def next_below(state: np.ndarray, n: int) -> int:
    """A uniform integer in [0, n), n < 2**32, without bias (Lemire 2019)."""
    nn = np.uint64(n)
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
    """One draw from an alias table (index uniform, then accept or take the alias)."""
    i = next_below(state, prob.shape[0])
    if next_float(state) < prob[i]:
        return i
    return np.int64(alias[i])


@njit(cache=True)
def shuffle_inplace(state: np.ndarray, arr: np.ndarray) -> None:
    """Fisher-Yates shuffle (uniform over permutations)."""
    for i in range(arr.shape[0] - 1, 0, -1):
        j = next_below(state, i + 1)
        tmp = arr[i]
        arr[i] = arr[j]
        arr[j] = tmp


@njit(cache=True)
def next_normal(state: np.ndarray) -> float:
    """A standard normal draw (Box-Muller, one value per call)."""
    u1 = next_float(state)
    while u1 <= 0.0:
        u1 = next_float(state)
    u2 = next_float(state)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True)
def feistel_index(i: int, n: int, key: np.uint64) -> int:
    """Position ``i`` of a keyed pseudo-random permutation of ``range(n)``.

    Why: a split's documents are shuffled globally (the reference's train order) without
    ever materialising the permutation, so shard j (output positions j*D..) can be
    generated alone. A balanced 6-round Feistel network on the smallest even bit width
    >= log2(n), with cycle walking to stay inside [0, n), is a bijection: the scalar
    form of :func:`feistel_permute_array` with round keys ``key ^ r * GOLDEN``.
    """
    bits = 2
    while (np.uint64(1) << np.uint64(bits)) < np.uint64(n):
        bits += 2
    half = np.uint64(bits // 2)
    mask = (np.uint64(1) << half) - np.uint64(1)
    x = np.uint64(i)
    while True:
        left = x >> half
        right = x & mask
        for r in range(6):
            f = mix64(right ^ key ^ (np.uint64(r) * GOLDEN)) & mask
            left, right = right, left ^ f
        x = (left << half) | right
        if x < np.uint64(n):
            return np.int64(x)


def mix64_array(z: np.ndarray) -> np.ndarray:
    """:func:`mix64` on a uint64 array (numpy, wrapping arithmetic): the same bits."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def feistel_half_bits(n: int) -> int:
    """Half the width of the Feistel network over ``range(n)``: the smallest even bit
    count >= 2 whose range covers ``n`` (as :func:`feistel_index` chooses it)."""
    bits = max(2, int(n - 1).bit_length())
    return (bits + bits % 2) // 2


def feistel_array(x: np.ndarray, keys: np.ndarray, half_bits: int) -> np.ndarray:
    """One pass of a balanced Feistel network on uint64 array ``x``: one round per key,
    round function ``mix64(right ^ key)``; a bijection of ``[0, 4**half_bits)``."""
    half = np.uint64(half_bits)
    mask = (np.uint64(1) << half) - np.uint64(1)
    left, right = x >> half, x & mask
    for k in keys:
        left, right = right, left ^ (mix64_array(right ^ k) & mask)
    return (left << half) | right


def feistel_permute_array(idx: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """Positions ``idx`` of the keyed permutation of ``range(n)`` (int64): the Feistel
    network with cycle walking, so every output stays inside ``[0, n)``."""
    half_bits = feistel_half_bits(n)
    out = feistel_array(np.asarray(idx, dtype=np.uint64), keys, half_bits)
    bad = out >= n
    while bad.any():
        out[bad] = feistel_array(out[bad], keys, half_bits)
        bad = out >= n
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


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table for probabilities ``p`` (normalised here)."""
    return _alias_table(np.ascontiguousarray(p, dtype=np.float64))


def zipf_probs(n: int, s: float) -> np.ndarray:
    """P(rank k) ∝ k^-s for k = 1..n (``rand_distr::Zipf`` as the reference used)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()
