"""The PCFG's latent state: per-document permutations, their re-permutation per section
and paragraph, the binding maps and the paragraphs' active subject sets (MQAR).

Each piece is drawn from its own counter-based stream (:mod:`hierlab.corpus.rng`), keyed
by the base document and the sub-unit alone, so the sampler, ``corpus-stats`` and the
probes can regenerate any document's latent without generating the document.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.jit import njit
from hierlab.corpus.rng import (
    STAGE_BINDING,
    STAGE_LATENT,
    alias_draw,
    next_below,
    next_float,
    shuffle_inplace,
    unit_seed,
)

__all__ = [
    "binding_sub",
    "active_sub",
    "bound_or_law",
    "doc_latent",
    "draw_active",
    "draw_bindings",
    "inverse_permutation",
    "level_latent",
]


@njit(cache=True)
def doc_latent(seed, base, n_s, n_v, n_o, off_v, off_o, ps, pv, po) -> None:
    """Base document ``base``'s rank->word permutations (global ids) into ``ps, pv, po``."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, STAGE_LATENT, base, 0)
    for i in range(n_s):
        ps[i] = i
    for i in range(n_v):
        pv[i] = off_v + i
    for i in range(n_o):
        po[i] = off_o + i
    shuffle_inplace(state, ps)
    shuffle_inplace(state, pv)
    shuffle_inplace(state, po)


@njit(cache=True)
def _repermute(state, perm, k, scratch) -> None:
    """Re-permute the words at k uniformly chosen ranks of ``perm`` (in place)."""
    n = perm.shape[0]
    if k <= 0:
        return
    for i in range(n):
        scratch[i] = i
    for i in range(k):  # partial Fisher-Yates: scratch[:k] is a uniform k-subset
        j = i + next_below(state, n - i)
        tmp = scratch[i]
        scratch[i] = scratch[j]
        scratch[j] = tmp
    vals = np.empty(k, dtype=perm.dtype)
    for i in range(k):
        vals[i] = perm[scratch[i]]
    shuffle_inplace(state, vals)
    for i in range(k):
        perm[scratch[i]] = vals[i]


@njit(cache=True)
def level_latent(seed, stage, base, sub, src_s, src_v, src_o, dst_s, dst_v, dst_o, ks, kv, ko,
                 scratch) -> None:
    """A section's or paragraph's latent: its parent's, with ``ks, kv, ko`` ranks per
    role re-permuted from the stream of ``(stage, base, sub)``."""
    dst_s[:] = src_s
    dst_v[:] = src_v
    dst_o[:] = src_o
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, stage, base, sub)
    _repermute(state, dst_s, ks, scratch)
    _repermute(state, dst_v, kv, scratch)
    _repermute(state, dst_o, ko, scratch)


@njit(cache=True)
def draw_bindings(seed, base, sub, n_s, n_v, n_o, off_v, off_o, b_sv, b_vo, b_vs, b_so):
    """Uniform random maps S->V, V->O, V->S, S->O (global ids) of one binding unit."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, STAGE_BINDING, base, sub)
    for i in range(n_s):
        b_sv[i] = off_v + next_below(state, n_v)
    for i in range(n_v):
        b_vo[i] = off_o + next_below(state, n_o)
    for i in range(n_v):
        b_vs[i] = next_below(state, n_s)
    for i in range(n_s):
        b_so[i] = off_o + next_below(state, n_o)


@njit(cache=True, inline="always")
def binding_sub(level, sc, pg, paras):
    """Sub-unit index of the binding map in force: 0 (document), per section, per paragraph."""
    if level == 0:
        return 0
    if level == 1:
        return 1 + sc
    return (1 << 20) + sc * paras + pg


@njit(cache=True, inline="always")
def bound_or_law(state, beta, bound, perm, zp, za):
    """The bound word with probability beta, else a draw from the rank law."""
    if next_float(state) < beta:
        return bound
    return perm[alias_draw(state, zp, za)]


@njit(cache=True)
def inverse_permutation(perm, offset, inv):
    """``inv[word - offset] = rank index``: the inverse of a rank->word permutation."""
    for k in range(perm.shape[0]):
        inv[perm[k] - offset] = k


@njit(cache=True, inline="always")
def active_sub(sc, pg, paras):
    """Sub-unit index of a paragraph's active subject set: drawn from the binding stage's
    stream, in a sub range (from 2**21) that no binding map uses."""
    return (1 << 21) + sc * paras + pg


@njit(cache=True)
def draw_active(seed, base, sub, n_s, n_active, act, mask, scratch) -> None:
    """A uniform ``n_active``-subset of the subjects (ids, in draw order) into
    ``act[:n_active]``, and ``mask[i] = 1`` for the subjects in it (0 elsewhere)."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = unit_seed(seed, STAGE_BINDING, base, sub)
    for i in range(n_s):
        scratch[i] = i
        mask[i] = 0
    for i in range(n_active):  # partial Fisher-Yates
        j = i + next_below(state, n_s - i)
        tmp = scratch[i]
        scratch[i] = scratch[j]
        scratch[j] = tmp
        act[i] = scratch[i]
        mask[scratch[i]] = 1
