"""Scores that tell a content-based induction head from positional or role-keyed copying.

Why: an induction-type score on repeated random ids (or on spans repeated at one offset)
rises for a head that attends a fixed distance back as much as for one that matches token
identity; with fixed-length sentences the two are indistinguishable there. These scores
are taken on the model's own data and break the identity match on purpose.

Everything here works on an *attention function* ``pattern_fn(ids [B, T]) -> [B, L, H, T, T]``
(the model's eager attention probabilities, or a constructed pattern in the tests), so the
scoring and the labels can be checked on patterns whose mechanism is known.

* **Events** (:func:`find_events`): in a window, a content token at query ``t`` whose most
  recent earlier occurrence ``p`` lies at ``p <= t - min_distance``. Content = a word of a
  role (subject, verb, object; all regular tokens of an n-gram corpus), never EOS, a
  connector or a boundary token. First occurrences are kept for the in-context gain.
* **Successor attention** ``S[l, h] = mean_events A[l, h, t, p + 1]``.
* **Content share** (match-breaking) ``1 - mean A_broken[l, h, t, p + 1] / mean A[l, h, t, p + 1]``
  over one event per window, where the broken window has the token at ``p`` replaced by
  another word of its role: grammar intact, identity match gone.
* **Causal share** ``1 - G_ablated / G``, ``G`` = mean loss of the next token after first
  occurrences minus after repeats (the events), with the head's slice of the attention
  output (before ``o_proj``) replaced by its mean over the windows (per role too).
* **Random-id prefix matching** at lengths ``n`` in ``(C/4, C/2 - 3, C/2)``:
  ``mean_{q=n..2n-1} A[l, h, q, q - n + 1]``; a head whose largest value is >= a floor and
  more than ``ratio`` times its smallest is *positional* (no sentence period divides all
  three lengths, so a content head scores alike at each).
* **Fixed-offset attention** ``F[l, h] = max_{d >= 2} mean_t A[l, h, t, t - d]``: the share
  of attention a head puts at one relative offset on the model's own data.
* **Permuted-sentence repeats**: K whole test sentences, then the same K in a random
  order, so every repeat sits at a new offset; successor attention of second-half tokens
  and the loss gain of the second half over the first.
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
    """``[V]`` int: the role code of each id (:data:`hierlab.contracts.ROLE_CODES`), or
    :data:`NOT_CONTENT` for EOS, connectors, boundary and padding. Without roles (an n-gram
    corpus) every regular id is content with the role ``word``."""
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
    """Repeats (``b, t, p, role``: window, query, earlier occurrence, role code) and first
    occurrences (``fb, ft, frole``) of content tokens in a batch of windows."""

    b: np.ndarray
    t: np.ndarray
    p: np.ndarray
    role: np.ndarray
    fb: np.ndarray
    ft: np.ndarray
    frole: np.ndarray

    def __len__(self) -> int:
        return int(self.b.shape[0])

    @property
    def distance(self) -> np.ndarray:
        return self.t - self.p

    def windows_below(self, n: int) -> Events:
        """The repeats and first occurrences of windows ``0..n-1``."""
        r, f = self.b < n, self.fb < n
        return Events(self.b[r], self.t[r], self.p[r], self.role[r], self.fb[f], self.ft[f],
                      self.frole[f])

    def subset(self, idx: np.ndarray) -> Events:
        """The repeats at ``idx`` (first occurrences kept)."""
        return Events(self.b[idx], self.t[idx], self.p[idx], self.role[idx], self.fb,
                      self.ft, self.frole)


def find_events(windows: torch.Tensor | np.ndarray, role_of: np.ndarray,
                min_distance: int = 4, min_query: int = 0) -> Events:
    """Every content query ``t < T - 1`` (it has a next token) whose most recent earlier
    occurrence ``p`` satisfies ``p <= t - min_distance`` (a repeat; ``p >= 0``), and every
    first occurrence; queries before ``min_query`` are left out."""
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


def take(pat: torch.Tensor, b: np.ndarray, q: np.ndarray, k: np.ndarray) -> torch.Tensor:
    """``[E, L, H]``: ``pat[b_e, :, :, q_e, k_e]`` of a ``[B, L, H, T, T]`` pattern batch."""
    idx = [torch.from_numpy(np.asarray(x, dtype=np.int64)).to(pat.device) for x in (b, q, k)]
    return pat[idx[0], :, :, idx[1], idx[2]].float().cpu()


def offset_profile(pat: torch.Tensor, max_offset: int) -> torch.Tensor:
    """``[B, L, H, max_offset + 1]``: entry ``d`` is ``mean_t A[l, h, t, t - d]`` over the
    queries ``t >= d``."""
    return torch.stack([torch.diagonal(pat, offset=-d, dim1=-2, dim2=-1).float().mean(-1)
                        for d in range(max_offset + 1)], -1).cpu()


@torch.no_grad()
def gather_attention(pattern_fn: PatternFn, windows: torch.Tensor, b: np.ndarray,
                     q: np.ndarray, k: np.ndarray, batch_size: int = 8) -> torch.Tensor:
    """``[E, L, H]``: ``A[l, h, q_e, k_e]`` of window ``b_e`` for every event ``e``, the
    windows run ``batch_size`` at a time (so a long batch never holds all patterns)."""
    b, q, k = (np.asarray(x, dtype=np.int64) for x in (b, q, k))
    out: torch.Tensor | None = None
    for lo in range(0, windows.shape[0], batch_size):
        sel = np.nonzero((b >= lo) & (b < lo + batch_size))[0]
        if len(sel) == 0:
            continue
        vals = take(pattern_fn(windows[lo : lo + batch_size]), b[sel] - lo, q[sel], k[sel])
        if out is None:
            out = torch.zeros(len(b), *vals.shape[1:])
        out[torch.from_numpy(sel)] = vals
    if out is None:
        raise ValueError("gather_attention: no event falls in the windows")
    return out


@torch.no_grad()
def fixed_offset_attention(pattern_fn: PatternFn, windows: torch.Tensor, max_offset: int,
                           batch_size: int = 8) -> torch.Tensor:
    """``[L, H, max_offset + 1]``: :func:`offset_profile` averaged over the windows (the
    head's attention by relative offset)."""
    tot = sum(offset_profile(pattern_fn(windows[lo : lo + batch_size]), max_offset).sum(0)
              for lo in range(0, windows.shape[0], batch_size))
    return tot / windows.shape[0]


def break_matches(windows: torch.Tensor, ev: Events, role_of: np.ndarray, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, Events]:
    """One event per window (seeded): ``(clean, broken, events)`` where ``clean`` holds the
    windows that have an event, ``broken`` the same with the token at the event's ``p``
    replaced by another word of its role (grammar intact, identity match gone), and
    ``events`` index them ``0..n-1``."""
    g = np.random.default_rng(seed)
    pick: dict[int, int] = {}
    for i in g.permutation(len(ev)):
        pick.setdefault(int(ev.b[i]), int(i))
    idx = np.array([pick[w] for w in sorted(pick)], dtype=np.int64)
    chosen = ev.subset(idx)
    clean = windows[torch.from_numpy(chosen.b)]
    broken = clean.clone()
    by_role = {int(r): np.nonzero(role_of == r)[0] for r in np.unique(chosen.role)}
    for j in range(len(chosen)):
        p, pool = int(chosen.p[j]), by_role[int(chosen.role[j])]
        if len(pool) < 2:
            continue  # a one-word role cannot be broken: the event keeps its match
        old = new = int(broken[j, p])
        while new == old:
            new = int(pool[g.integers(len(pool))])
        broken[j, p] = new
    renum = Events(np.arange(len(chosen), dtype=np.int64), chosen.t, chosen.p, chosen.role,
                   chosen.fb, chosen.ft, chosen.frole)
    return clean, broken, renum


def in_context_gain(nll: torch.Tensor, ev: Events, role: int | None = None) -> float:
    """Mean next-token loss after first occurrences minus after repeats (``nll[b, t]`` is
    the loss of token ``t + 1``); restricted to one role code when given; nan if empty."""
    rep = ev.role == role if role is not None else np.ones(len(ev), bool)
    fst = ev.frole == role if role is not None else np.ones(len(ev.fb), bool)
    if not rep.any() or not fst.any():
        return float("nan")
    first = nll[torch.from_numpy(ev.fb[fst]), torch.from_numpy(ev.ft[fst])].double().mean()
    again = nll[torch.from_numpy(ev.b[rep]), torch.from_numpy(ev.t[rep])].double().mean()
    return float(first - again)


def random_repeat_lengths(context: int) -> tuple[int, int, int]:
    """``(C/4, C/2 - 3, C/2)``: no sentence period divides all three."""
    return (max(2, context // 4), max(2, context // 2 - 3), max(2, context // 2))


@torch.no_grad()
def random_prefix_matching(pattern_fn: PatternFn, content_ids: np.ndarray, context: int,
                           samples: int, seed: int, batch_size: int = 8
                           ) -> dict[int, torch.Tensor]:
    """``{n: [L, H]}`` prefix matching on ``samples`` sequences of ``n`` content ids drawn
    uniformly (seeded), repeated twice, for each ``n`` of :func:`random_repeat_lengths`."""
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


def positional_flags(pm: dict[int, torch.Tensor], ratio: float = 2.0, floor: float = 0.1
                     ) -> torch.Tensor:
    """``[L, H]`` bool: the largest random-id prefix matching is >= ``floor`` and more than
    ``ratio`` times the smallest over the lengths (a head keyed on a distance, not on ids)."""
    stack = torch.stack(list(pm.values()))  # [3, L, H]
    hi, lo = stack.max(0).values, stack.min(0).values
    return (hi >= floor) & (hi > ratio * lo.clamp_min(1e-9))


@dataclass(frozen=True)
class PermutedPrompts:
    """Prompts of K sentences then the same K in another order, right-padded to one length.

    ``half[i]`` is prompt ``i``'s first-half length (both halves have it); ``b, t, src``
    are the second-half content queries and the position of the same token in the
    sentence's first-half copy, so the induction target of query ``t`` is ``src + 1``.
    """

    ids: torch.Tensor
    half: np.ndarray
    b: np.ndarray
    t: np.ndarray
    src: np.ndarray


def permuted_sentence_prompts(windows: torch.Tensor, eos_id: int, role_of: np.ndarray,
                              max_half: int, samples: int, seed: int, pad_id: int
                              ) -> PermutedPrompts | None:
    """Per test window: K whole distinct sentences (EOS-terminated) filling at most
    ``max_half`` tokens, then the same K in a random order that moves every sentence (a
    derangement), so no repeat keeps its offset. None if no window has 2 such sentences."""
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


def permuted_gain(nll: torch.Tensor, pp: PermutedPrompts) -> tuple[float, float]:
    """(mean loss of the first half's predicted tokens, of the second half's): tokens
    ``1..m-1`` and ``m+1..2m-1`` of each prompt (``nll[b, t]`` = loss of token ``t + 1``)."""
    first, second = [], []
    for i, m in enumerate(pp.half.tolist()):
        first.append(nll[i, : m - 1])
        second.append(nll[i, m : 2 * m - 1])
    return float(torch.cat(first).double().mean()), float(torch.cat(second).double().mean())
