"""One sentence of a PCFG document (docs/reference-study.md#the-grammar): whether it
copies an earlier sentence (repetition, permuted recall) and, if not, its fresh draw.

The document kernel in :mod:`~hierlab.corpus.pcfg` walks sections and paragraphs and
calls these once per sentence; they make the same draws, in the same order, from the
same stream, so the corpus bytes do not depend on where the code lives.
"""

from __future__ import annotations

from hierlab.corpus.jit import njit
from hierlab.corpus.pcfg_latent import bound_or_law
from hierlab.corpus.rng import alias_draw, next_below, next_float
from hierlab.corpus.sampler import (
    ROLE_CONNECTOR,
    ROLE_OBJECT,
    ROLE_SPECIAL,
    ROLE_SUBJECT,
    ROLE_VERB,
)

__all__ = ["choose_source", "draw_sentence"]


@njit(cache=True)
def choose_source(state, t, sents_pp, sent_in_doc, scope_first, recall, rho, rep_min_d,
                  rep_fresh, sent_copy, recalled, alive, score):
    """(index of the earlier sentence that sentence ``t`` of its paragraph copies, or -1
    for a fresh one; prior weight of "fresh"). With ``score`` the prior weight of a copy
    of each earlier sentence of the scope goes into ``alive`` (the exact conditionals)."""
    n_prev = sent_in_doc - scope_first
    half = sents_pp // 2
    copied = -1
    w_fresh = 1.0
    if score:
        alive[:n_prev] = 0.0
    if recall:  # second half: the first half's sentences, in random order
        if t >= half:
            n_left = sents_pp - t  # first-half sentences not yet recalled
            k = next_below(state, n_left)
            for i in range(scope_first, scope_first + half):
                if not recalled[i]:
                    if score:
                        alive[i - scope_first] = 1.0 / n_left
                    if k == 0:
                        copied = i
                    k -= 1
            recalled[copied] = True
            w_fresh = 0.0
        else:
            recalled[sent_in_doc] = False
    elif rho > 0.0:
        # eligible sources: at least rep_min_d back, only fresh ones if asked
        last = sent_in_doc - rep_min_d
        n_elig = 0
        for i in range(scope_first, last + 1):
            if not (rep_fresh and sent_copy[i]):
                n_elig += 1
        if n_elig > 0:  # else the sentence is fresh (no draw)
            w_fresh = 1.0 - rho
            if next_float(state) < rho:
                k = next_below(state, n_elig)
            else:
                k = -1
            for i in range(scope_first, last + 1):
                if not (rep_fresh and sent_copy[i]):
                    if score:
                        alive[i - scope_first] = rho / n_elig
                    if k == 0:
                        copied = i
                    k -= 1
    return copied, w_fresh


@njit(cache=True)
def draw_sentence(state, buf, roles, cs, cv, co, zs_p, zs_a, zv_p, zv_a, zo_p, zo_a,
                  svo_p, die_p, die_a, n_c, off_v, off_c, eos, beta, bind,
                  b_sv, b_vo, b_vs, b_so, act, n_active):
    """A fresh sentence (tokens into ``buf``, roles into ``roles``) under the current
    permutations ``cs, cv, co``, bindings and active set; returns its length."""
    mqar = n_active > 0
    if mqar:  # subjects uniform over the active set, keyed S->V, S->O
        svo = next_float(state) < svo_p
        if svo:
            s = act[next_below(state, n_active)]
            v = bound_or_law(state, beta, b_sv[s], cv, zv_p, zv_a)
        else:
            v = cv[alias_draw(state, zv_p, zv_a)]
            s = act[next_below(state, n_active)]
        o = bound_or_law(state, beta, b_so[s], co, zo_p, zo_a)
    elif not bind:  # the reference draw order (bytes kept for beta = 0)
        s = cs[alias_draw(state, zs_p, zs_a)]
        v = cv[alias_draw(state, zv_p, zv_a)]
        o = co[alias_draw(state, zo_p, zo_a)]
        svo = next_float(state) < svo_p
    else:
        svo = next_float(state) < svo_p
        if svo:
            s = cs[alias_draw(state, zs_p, zs_a)]
            v = bound_or_law(state, beta, b_sv[s], cv, zv_p, zv_a)
            o = bound_or_law(state, beta, b_vo[v - off_v], co, zo_p, zo_a)
        else:
            v = cv[alias_draw(state, zv_p, zv_a)]
            s = bound_or_law(state, beta, b_vs[v - off_v], cs, zs_p, zs_a)
            o = bound_or_law(state, beta, b_so[s], co, zo_p, zo_a)
    if svo:
        buf[0], buf[1], buf[2] = s, v, o
        roles[0], roles[1], roles[2] = ROLE_SUBJECT, ROLE_VERB, ROLE_OBJECT
        length = 3
        m = alias_draw(state, die_p, die_a)
        for _c in range(m):
            buf[length] = off_c + next_below(state, n_c)
            if mqar:
                s2 = act[next_below(state, n_active)]
                v2 = bound_or_law(state, beta, b_sv[s2], cv, zv_p, zv_a)
                o2 = bound_or_law(state, beta, b_so[s2], co, zo_p, zo_a)
            elif bind:
                s2 = cs[alias_draw(state, zs_p, zs_a)]
                v2 = bound_or_law(state, beta, b_sv[s2], cv, zv_p, zv_a)
                o2 = bound_or_law(state, beta, b_vo[v2 - off_v], co, zo_p, zo_a)
            else:
                s2 = cs[alias_draw(state, zs_p, zs_a)]
                v2 = cv[alias_draw(state, zv_p, zv_a)]
                o2 = co[alias_draw(state, zo_p, zo_a)]
            buf[length + 1] = s2
            buf[length + 2] = v2
            buf[length + 3] = o2
            roles[length] = ROLE_CONNECTOR
            roles[length + 1] = ROLE_SUBJECT
            roles[length + 2] = ROLE_VERB
            roles[length + 3] = ROLE_OBJECT
            length += 4
    else:
        buf[0], buf[1], buf[2] = v, s, o
        roles[0], roles[1], roles[2] = ROLE_VERB, ROLE_SUBJECT, ROLE_OBJECT
        length = 3
    buf[length] = eos
    roles[length] = ROLE_SPECIAL
    length += 1
    return length
