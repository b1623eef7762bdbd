"""Exact sentence de-duplication: a set of sentences that compiled kernels can query.

With ``dedup`` the PCFG train split redraws every sentence that also occurs in the test
split. Why an open-addressing table of plain arrays: the sampler tests membership inside
its compiled loop, once per drawn sentence, and the table memory-maps from disk
(:func:`hierlab.corpus.generate.load_test_set`) so parallel workers share one copy.
``corpus-stats`` uses the same table for the unique fraction and the train/test overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierlab.corpus.jit import njit
from hierlab.corpus.rng import mix64

__all__ = ["SentenceSet", "in_table", "sentence_spans"]

_EMPTY16 = np.zeros(0, dtype=np.uint16)


@njit(cache=True, inline="always")
def _sentence_key(buf: np.ndarray, length: int) -> np.uint64:
    """A 4-token sentence packed exactly into 64 bits; a 64-bit hash otherwise."""
    if length == 4:
        return (np.uint64(buf[0]) | (np.uint64(buf[1]) << np.uint64(16))
                | (np.uint64(buf[2]) << np.uint64(32)) | (np.uint64(buf[3]) << np.uint64(48)))
    h = mix64(np.uint64(length) + np.uint64(0x9E3779B97F4A7C15))
    for i in range(length):
        h = mix64(h ^ (np.uint64(buf[i]) + np.uint64(0x632BE59BD9B4E019)))
    return h


@njit(cache=True)
def sentence_spans(tokens: np.ndarray, eos: int, boundary: int) -> tuple:
    """Where every sentence of a token stream lies, to hash or compare sentences in place.

    Args:
        tokens: the stream.
        eos: the end-of-sentence id.
        boundary: the document boundary id, skipped (-1: none).

    Returns:
        ``(starts, lengths)``: each sentence's first offset (int64) and its length with EOS
        (int32). Tokens after the last EOS belong to no sentence.
    """
    n_sent = 0
    for t in tokens:
        if t == eos:
            n_sent += 1
    starts = np.empty(n_sent, dtype=np.int64)
    lens = np.empty(n_sent, dtype=np.int32)
    k = 0
    start = 0
    for i in range(tokens.shape[0]):
        t = tokens[i]
        if t == boundary:
            start = i + 1
        elif t == eos:
            starts[k] = start
            lens[k] = i + 1 - start
            k += 1
            start = i + 1
    return starts, lens


@njit(cache=True, inline="always")
def _probe(buf, length, table, starts, tokens) -> np.int64:
    """Slot of ``buf`` in ``table``: its own if present, else the empty slot ending the run.

    Each slot is two uint64 in one cache line: the key and ``length << 32 | index + 1``
    (0 = empty). 4-token sentences (most test duplicates) are decided by the exact packed
    key alone; longer ones compare their tokens after a 64-bit hash match.
    """
    mask = table.shape[0] // 2 - 1
    key = _sentence_key(buf, length)
    slot = np.int64(mix64(key) & np.uint64(mask))
    while True:
        meta = table[2 * slot + 1]
        if meta == 0:
            return slot
        if table[2 * slot] == key and np.int64(meta >> np.uint64(32)) == length:
            if length == 4:
                return slot
            o = np.int64(meta & np.uint64(0xFFFFFFFF)) - 1
            same = True
            for q in range(length):
                if tokens[starts[o] + q] != buf[q]:
                    same = False
                    break
            if same:
                return slot
        slot = (slot + 1) & mask


@njit(cache=True)
def _build_table(tokens: np.ndarray, eos: int, boundary: int) -> tuple:
    """Index every distinct sentence of ``tokens`` in an open-addressing hash table."""
    starts, lens = sentence_spans(tokens, eos, boundary)
    n_sent = starts.shape[0]
    size = 1
    while size < 2 * n_sent + 2:
        size *= 2
    table = np.zeros(2 * size, dtype=np.uint64)
    n_unique = 0
    for j in range(n_sent):
        s, length = starts[j], lens[j]
        sent = tokens[s : s + length]
        slot = _probe(sent, length, table, starts, tokens)
        if table[2 * slot + 1] == 0:
            table[2 * slot] = _sentence_key(sent, length)
            table[2 * slot + 1] = (np.uint64(length) << np.uint64(32)) | np.uint64(j + 1)
            n_unique += 1
    return table, starts, lens, n_unique


@njit(cache=True, inline="always")
def in_table(sentence: np.ndarray, length: int, table: np.ndarray, starts: np.ndarray,
             tokens: np.ndarray) -> bool:
    """Whether a sentence is in a set, from inside a compiled loop (no Python objects).

    Args:
        sentence: its tokens; the first ``length`` are the sentence, EOS included.
        length: the sentence's length.
        table: the set's open-addressing table (:attr:`SentenceSet.table`).
        starts: the set's sentence offsets (:attr:`SentenceSet.starts`).
        tokens: the set's token stream (:attr:`SentenceSet.tokens`).

    Returns:
        True if the set holds exactly this sentence.
    """
    return table[2 * _probe(sentence, length, table, starts, tokens) + 1] != 0


@dataclass
class SentenceSet:
    """Exact membership of token sequences: the test split's sentences (with EOS).

    The fields are plain arrays so that a compiled sampler can pass them to
    :func:`in_table`, and so that the set memory-maps from disk.

    Attributes:
        tokens: the sentences' token stream (uint16).
        table: the open-addressing hash table, two uint64 per slot.
        starts: each sentence's offset in ``tokens``.
        lens: each sentence's length with EOS.
        n_unique: distinct sentences (0: the empty set).
    """

    tokens: np.ndarray
    table: np.ndarray
    starts: np.ndarray
    lens: np.ndarray
    n_unique: int

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, eos: int, boundary: int | None) -> SentenceSet:
        """Index every distinct sentence of a token stream.

        Args:
            tokens: the stream (cast to contiguous uint16).
            eos: the end-of-sentence id.
            boundary: the document boundary id, skipped (None: none).

        Returns:
            The set.
        """
        tokens = np.ascontiguousarray(tokens, dtype=np.uint16)
        table, starts, lens, n_unique = _build_table(
            tokens, eos, -1 if boundary is None else boundary
        )
        return cls(tokens, table, starts, lens, int(n_unique))

    @classmethod
    def empty(cls) -> SentenceSet:
        """A set with no sentence, for a split that is not de-duplicated.

        Returns:
            The empty set, with arrays of the right types for the compiled sampler.
        """
        return cls(_EMPTY16, np.zeros(2, np.uint64), np.zeros(0, np.int64),
                   np.zeros(0, np.int32), 0)

    def __contains__(self, sentence: object) -> bool:
        buf = np.asarray(sentence, dtype=np.uint16)
        if self.n_unique == 0:
            return False
        return bool(in_table(buf, len(buf), self.table, self.starts, self.tokens))
