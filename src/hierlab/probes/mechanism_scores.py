"""Scores that tell a content-based induction head from positional or role-keyed copying.

An induction-type score on repeated random ids rises for a head that attends a fixed
distance back as much as for one that matches token identity; these scores are taken on
the model's own data and break the identity match on purpose. They work on an attention
function, so they can be checked on constructed patterns. Definitions: docs/mechanism.md;
design: docs/design-probes.md#mechanism-scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hierlab.contracts import ROLE_CODES

PatternFn = Callable[[torch.Tensor], torch.Tensor]
#: ``nll_fn(ids [B, T]) -> [B, T - 1]``: the loss of token ``t + 1`` given ``ids[:, :t + 1]``
NllFn = Callable[[torch.Tensor], torch.Tensor]

CONTENT_ROLES: tuple[str, ...] = ("subject", "verb", "object")
NOT_CONTENT = -1

__all__ = [
    "CONTENT_ROLES",
    "Events",
    "break_matches",
    "find_events",
    "fixed_offset_attention",
    "gather_attention",
    "in_context_gain",
    "offset_profile",
    "PermutedPrompts",
    "permuted_gain",
    "permuted_sentence_prompts",
    "positional_flags",
    "random_prefix_matching",
    "random_repeat_lengths",
    "take",
    "token_roles",
]


def token_roles(vocab_size: int, roles: dict[str, list[int]] | None,
                special_ids: list[int | None]) -> np.ndarray:
    """The role of every id: which tokens count as content for the events.

    Args:
        vocab_size: the vocabulary size ``V``.
        roles: the corpus's ``{role: [lo, hi)}`` id ranges; ``None`` for an n-gram corpus.
        special_ids: EOS, boundary, padding, unknown (``None`` entries are ignored); used
            only without roles.

    Returns:
        ``[V]`` int: the role code of each id (:data:`hierlab.contracts.ROLE_CODES`), or
        :data:`NOT_CONTENT` for EOS, connectors, boundary and padding. Without roles every
        regular id is content with the role ``word``.
    """
    out = np.full(vocab_size, NOT_CONTENT, dtype=np.int64)
    if roles:
        for name in CONTENT_ROLES:
            lo, hi = roles[name]
            out[lo:hi] = ROLE_CODES[name]
    else:
        out[:] = ROLE_CODES["word"]
        for sid in special_ids:
            if sid is not None and 0 <= sid < vocab_size:
                out[sid] = NOT_CONTENT
    return out


@dataclass(frozen=True)
class Events:
    """Repeats and first occurrences of content tokens in a batch of windows.

    One array per field, one entry per repeat (or per first occurrence), so the events
    index attention patterns and losses directly.

    Attributes:
        window: each repeat's window.
        query: its position ``t`` (the repeated token).
        earlier: the position ``p`` of the token's most recent earlier occurrence.
        role: its role code.
        first_window: each first occurrence's window.
        first_query: its position.
        first_role: its role code.
    """

    window: np.ndarray
    query: np.ndarray
    earlier: np.ndarray
    role: np.ndarray
    first_window: np.ndarray
    first_query: np.ndarray
    first_role: np.ndarray

    def __len__(self) -> int:
        return int(self.window.shape[0])

    @property
    def distance(self) -> np.ndarray:
        """Each repeat's distance back to the earlier occurrence, ``t - p``."""
        return self.query - self.earlier

    def windows_below(self, count: int) -> Events:
        """The events of the first windows (those the causal share runs on).

        Args:
            count: keep windows ``0..count-1``.

        Returns:
            Their repeats and first occurrences.
        """
        r, f = self.window < count, self.first_window < count
        return Events(self.window[r], self.query[r], self.earlier[r], self.role[r],
                      self.first_window[f], self.first_query[f], self.first_role[f])

    def subset(self, indices: np.ndarray) -> Events:
        """Some of the repeats, with every first occurrence kept.

        Args:
            indices: the repeats to keep.

        Returns:
            The selected repeats and all first occurrences.
        """
        return Events(self.window[indices], self.query[indices], self.earlier[indices],
                      self.role[indices], self.first_window, self.first_query, self.first_role)


def find_events(windows: torch.Tensor | np.ndarray, role_of: np.ndarray,
                min_distance: int = 4, min_query: int = 0) -> Events:
    """Find the repeats an induction head could copy from, and the first occurrences.

    Args:
        windows: ``[W, T]`` token ids.
        role_of: :func:`token_roles`, the role of every id.
        min_distance: a repeat's earlier occurrence lies at least this far back.
        min_query: queries before this position are left out.

    Returns:
        Every content query ``t < T - 1`` (it has a next token) whose most recent earlier
        occurrence ``p`` satisfies ``p <= t - min_distance``, and every first occurrence.
    """
    w = np.asarray(windows, dtype=np.int64)
    rep: list[tuple[int, int, int, int]] = []
    first: list[tuple[int, int, int]] = []
    for b in range(w.shape[0]):
        last: dict[int, int] = {}
        for t in range(w.shape[1] - 1):
            tok = int(w[b, t])
            r = int(role_of[tok]) if 0 <= tok < len(role_of) else NOT_CONTENT
            if r == NOT_CONTENT:
                continue
            if t >= min_query:
                if tok in last:
                    if last[tok] <= t - min_distance:
                        rep.append((b, t, last[tok], r))
                else:
                    first.append((b, t, r))
            last[tok] = t
    ra = np.array(rep, dtype=np.int64).reshape(-1, 4)
    fa = np.array(first, dtype=np.int64).reshape(-1, 3)
    return Events(ra[:, 0], ra[:, 1], ra[:, 2], ra[:, 3], fa[:, 0], fa[:, 1], fa[:, 2])


def take(patterns: torch.Tensor, batch_index: np.ndarray, query_index: np.ndarray,
         key_index: np.ndarray) -> torch.Tensor:
    """Pick one attention entry per event from a batch of patterns, for every head.

    Args:
        patterns: ``[B, L, H, T, T]`` attention probabilities.
        batch_index: each event's row in the batch.
        query_index: each event's query position.
        key_index: each event's key position.

    Returns:
        ``[E, L, H]``: ``patterns[b_e, :, :, q_e, k_e]``, on the CPU in float32.
    """
    idx = [torch.from_numpy(np.asarray(x, dtype=np.int64)).to(patterns.device)
           for x in (batch_index, query_index, key_index)]
    return patterns[idx[0], :, :, idx[1], idx[2]].float().cpu()


def offset_profile(patterns: torch.Tensor, max_offset: int) -> torch.Tensor:
    """Attention by relative offset: how much a head looks a fixed distance back.

    Args:
        patterns: ``[B, L, H, T, T]`` attention probabilities.
        max_offset: the largest offset ``d``.

    Returns:
        ``[B, L, H, max_offset + 1]``: entry ``d`` is ``mean_t A[l, h, t, t - d]`` over
        the queries ``t >= d``.
    """
    return torch.stack([torch.diagonal(patterns, offset=-d, dim1=-2, dim2=-1).float().mean(-1)
                        for d in range(max_offset + 1)], -1).cpu()


@torch.no_grad()
def gather_attention(pattern_fn: PatternFn, windows: torch.Tensor, window_index: np.ndarray,
                     query_index: np.ndarray, key_index: np.ndarray,
                     batch_size: int = 8) -> torch.Tensor:
    """One attention entry per event, for every head, over many windows.

    The windows run ``batch_size`` at a time, so a long batch never holds all patterns.

    Args:
        pattern_fn: the attention function (``ids -> [B, L, H, T, T]``).
        windows: ``[W, T]`` token ids.
        window_index: each event's window.
        query_index: each event's query position.
        key_index: each event's key position.
        batch_size: windows per call of ``pattern_fn``.

    Returns:
        ``[E, L, H]``: ``A[l, h, q_e, k_e]`` of window ``w_e`` for every event ``e``.

    Raises:
        ValueError: no event falls in the windows.
    """
    window_index, query_index, key_index = (np.asarray(x, dtype=np.int64)
                                            for x in (window_index, query_index, key_index))
    out: torch.Tensor | None = None
    for lo in range(0, windows.shape[0], batch_size):
        sel = np.nonzero((window_index >= lo) & (window_index < lo + batch_size))[0]
        if len(sel) == 0:
            continue
        vals = take(pattern_fn(windows[lo : lo + batch_size]), window_index[sel] - lo,
                    query_index[sel], key_index[sel])
        if out is None:
            out = torch.zeros(len(window_index), *vals.shape[1:])
        out[torch.from_numpy(sel)] = vals
    if out is None:
        raise ValueError("gather_attention: no event falls in the windows")
    return out


@torch.no_grad()
def fixed_offset_attention(pattern_fn: PatternFn, windows: torch.Tensor, max_offset: int,
                           batch_size: int = 8) -> torch.Tensor:
    """Each head's attention by relative offset, averaged over the windows.

    Args:
        pattern_fn: the attention function.
        windows: ``[W, T]`` token ids.
        max_offset: the largest offset.
        batch_size: windows per call of ``pattern_fn``.

    Returns:
        ``[L, H, max_offset + 1]``: :func:`offset_profile` averaged over the windows.
    """
    tot = sum(offset_profile(pattern_fn(windows[lo : lo + batch_size]), max_offset).sum(0)
              for lo in range(0, windows.shape[0], batch_size))
    return tot / windows.shape[0]


def break_matches(windows: torch.Tensor, events: Events, role_of: np.ndarray, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, Events]:
    """Windows whose identity match is broken while the grammar stays intact.

    A content head loses its successor attention in the broken window; a head keyed on
    position or role does not.

    Args:
        windows: ``[W, T]`` token ids.
        events: their repeats (:func:`find_events`).
        role_of: the role of every id.
        seed: seed of the choice of event and replacement word.

    Returns:
        ``(clean, broken, chosen)``: ``clean`` holds the windows that have an event,
        ``broken`` the same with the token at one event's earlier occurrence replaced by
        another word of its role, and ``chosen`` that one event per window, indexed
        ``0..n-1``.
    """
    g = np.random.default_rng(seed)
    pick: dict[int, int] = {}
    for i in g.permutation(len(events)):
        pick.setdefault(int(events.window[i]), int(i))
    idx = np.array([pick[w] for w in sorted(pick)], dtype=np.int64)
    chosen = events.subset(idx)
    clean = windows[torch.from_numpy(chosen.window)]
    broken = clean.clone()
    by_role = {int(r): np.nonzero(role_of == r)[0] for r in np.unique(chosen.role)}
    for j in range(len(chosen)):
        p, pool = int(chosen.earlier[j]), by_role[int(chosen.role[j])]
        if len(pool) < 2:
            continue  # a one-word role cannot be broken: the event keeps its match
        old = new = int(broken[j, p])
        while new == old:
            new = int(pool[g.integers(len(pool))])
        broken[j, p] = new
    renum = Events(np.arange(len(chosen), dtype=np.int64), chosen.query, chosen.earlier,
                   chosen.role, chosen.first_window, chosen.first_query, chosen.first_role)
    return clean, broken, renum


def in_context_gain(losses: torch.Tensor, events: Events, role: int | None = None) -> float:
    """How much easier a token is after a repeat than after its first occurrence.

    Args:
        losses: ``[W, T - 1]`` next-token losses; ``losses[w, t]`` is the loss of token
            ``t + 1``.
        events: the windows' repeats and first occurrences.
        role: restrict to one role code (``None``: all).

    Returns:
        Mean loss after first occurrences minus mean loss after repeats; nan if either
        set is empty.
    """
    rep = events.role == role if role is not None else np.ones(len(events), bool)
    fst = (events.first_role == role if role is not None
           else np.ones(len(events.first_window), bool))
    if not rep.any() or not fst.any():
        return float("nan")
    first = losses[torch.from_numpy(events.first_window[fst]),
                   torch.from_numpy(events.first_query[fst])].double().mean()
    again = losses[torch.from_numpy(events.window[rep]),
                   torch.from_numpy(events.query[rep])].double().mean()
    return float(first - again)


def random_repeat_lengths(context: int) -> tuple[int, int, int]:
    """The three lengths of the random-repeat test.

    Args:
        context: the model's context length ``C``.

    Returns:
        ``(C/4, C/2 - 3, C/2)`` (at least 2 each): no sentence period divides all three.
    """
    return (max(2, context // 4), max(2, context // 2 - 3), max(2, context // 2))


@torch.no_grad()
def random_prefix_matching(pattern_fn: PatternFn, content_ids: np.ndarray, context: int,
                           samples: int, seed: int, batch_size: int = 8
                           ) -> dict[int, torch.Tensor]:
    """Prefix matching on random content ids repeated twice, at three lengths.

    Args:
        pattern_fn: the attention function.
        content_ids: the ids to draw from (the content words).
        context: the model's context length.
        samples: sequences per length.
        seed: seed of the draw.
        batch_size: sequences per call of ``pattern_fn``.

    Returns:
        ``{n: [L, H]}`` mean ``A[l, h, q, q - n + 1]`` over the second-half queries, for
        each ``n`` of :func:`random_repeat_lengths`.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.as_tensor(np.asarray(content_ids, dtype=np.int64))
    out = {}
    for n in random_repeat_lengths(context):
        half = ids[torch.randint(len(ids), (samples, n), generator=g)]
        toks = torch.cat([half, half], 1)
        q = np.arange(n, 2 * n)
        b = np.repeat(np.arange(samples), len(q))
        qq = np.tile(q, samples)
        vals = gather_attention(pattern_fn, toks, b, qq, qq - n + 1, batch_size)
        out[n] = vals.mean(0)
    return out


def positional_flags(prefix_matching: dict[int, torch.Tensor], ratio: float = 2.0,
                     floor: float = 0.1) -> torch.Tensor:
    """Flag heads keyed on a distance, not on ids: their score varies with the length.

    Args:
        prefix_matching: :func:`random_prefix_matching` at the three lengths.
        ratio: the largest value must exceed the smallest this many times.
        floor: ... and be at least this.

    Returns:
        ``[L, H]`` bool.
    """
    stack = torch.stack(list(prefix_matching.values()))  # [3, L, H]
    hi, lo = stack.max(0).values, stack.min(0).values
    return (hi >= floor) & (hi > ratio * lo.clamp_min(1e-9))


@dataclass(frozen=True)
class PermutedPrompts:
    """Prompts of K sentences then the same K in another order, right-padded to one length.

    Attributes:
        ids: ``[N, T]`` the prompts.
        half_length: each prompt's first-half length (both halves have it).
        window: each second-half content query's prompt.
        query: its position.
        source: the position of the same token in the sentence's first-half copy, so
            the induction target of the query is ``source + 1``.
    """

    ids: torch.Tensor
    half_length: np.ndarray
    window: np.ndarray
    query: np.ndarray
    source: np.ndarray


def permuted_sentence_prompts(windows: torch.Tensor, eos_id: int, role_of: np.ndarray,
                              max_half: int, samples: int, seed: int, pad_id: int
                              ) -> PermutedPrompts | None:
    """Repeats at new offsets: whole sentences, then the same sentences reordered.

    Args:
        windows: ``[W, T]`` test windows.
        eos_id: the end-of-sentence id.
        role_of: the role of every id (which tokens are queries).
        max_half: the most tokens of one half.
        samples: at most this many prompts.
        seed: seed of the reorderings.
        pad_id: the id prompts are right-padded with.

    Returns:
        Per window, K whole distinct sentences (EOS-terminated) filling at most
        ``max_half`` tokens, then the same K in a random order that moves every sentence
        (a derangement), so no repeat keeps its offset; ``None`` if no window has two
        such sentences.
    """
    g = np.random.default_rng(seed)
    rows: list[list[int]] = []
    half, qb, qt, qs = [], [], [], []
    for w in windows.tolist():
        sents, cur = [], []
        for tok in w:
            cur.append(tok)
            if tok == eos_id:
                sents.append(tuple(cur))
                cur = []
        first, total = [], 0
        for s in dict.fromkeys(sents):
            if total + len(s) > max_half:
                break
            first.append(s)
            total += len(s)
        if len(first) < 2:
            continue
        perm = np.arange(len(first))
        while (perm == np.arange(len(first))).any():
            perm = g.permutation(len(first))
        starts = np.cumsum([0] + [len(s) for s in first])
        ids = [t for s in first for t in s]
        pos = total
        for i in perm:
            for j, tok in enumerate(first[int(i)]):
                if role_of[tok] != NOT_CONTENT:
                    qb.append(len(rows))
                    qt.append(pos + j)
                    qs.append(int(starts[int(i)]) + j)
                ids.append(tok)
            pos += len(first[int(i)])
        rows.append(ids)
        half.append(total)
        if len(rows) == samples:
            break
    if not rows:
        return None
    length = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids_t[i, : len(r)] = torch.tensor(r)
    return PermutedPrompts(ids_t, np.array(half), *(np.array(x, dtype=np.int64)
                                                    for x in (qb, qt, qs)))


def permuted_gain(losses: torch.Tensor, prompts: PermutedPrompts) -> tuple[float, float]:
    """The loss on the first and the second half of permuted-sentence prompts.

    Args:
        losses: ``[N, T - 1]`` next-token losses; ``losses[i, t]`` is the loss of token
            ``t + 1``.
        prompts: the prompts they were taken on.

    Returns:
        ``(first, second)``: the mean loss of the first half's predicted tokens
        (``1..m-1``) and of the second half's (``m+1..2m-1``), ``m`` the half length.
    """
    first, second = [], []
    for i, m in enumerate(prompts.half_length.tolist()):
        first.append(losses[i, : m - 1])
        second.append(losses[i, m : 2 * m - 1])
    return float(torch.cat(first).double().mean()), float(torch.cat(second).double().mean())
