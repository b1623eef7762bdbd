"""Loss floors: the entropy rates every training curve should be read against.

For the grammar, ``no_context`` (the grammar known, the document latent not) and
``latent_known`` are analytic where they can be and exact Monte-Carlo averages where a
repeat's source is latent; for the n-gram process the rate is a Monte-Carlo average of
exact conditionals, since the order mixture has no closed form. The derivations:
``docs/design-pipeline.md``; the values: docs/corpora.md#loss-floors.
"""

from __future__ import annotations

import numpy as np

from hierlab.corpus.config import NgramConfig, PcfgConfig
from hierlab.corpus.jit import njit
from hierlab.corpus.ngram import NgramSampler, context_id
from hierlab.corpus.rng import zipf_probs


def _h(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _bound_entropy(probs: np.ndarray, beta: float) -> float:
    """E over the bound word's rank r (uniform) of H(beta * delta_r + (1 - beta) * Zipf)."""
    if beta <= 0.0:
        return _h(probs)
    q = (1.0 - beta) * probs
    pos = q > 0
    own = np.zeros_like(q)
    own[pos] = -q[pos] * np.log(q[pos])
    # the bound word at rank r swaps its law term for that of (q_r + beta)
    base = own.sum()
    mixed = -(q + beta) * np.log(q + beta)
    return float(np.mean(base - own + mixed))


def pcfg_floors(cfg: PcfgConfig, mc_documents: int = 400) -> dict[str, float]:
    """Entropy rates (nats/token) without and with knowledge of the document latent.

    ``no_context`` is analytic for every knob: a binding map or a repeated sentence is drawn
    from a uniformly random latent, so each sentence's words stay marginally uniform over
    their roles. With ``active_subjects`` (MQAR) the active set is a uniform subset, so a
    subject drawn uniformly from it is marginally uniform over all subjects; a verb or
    object is a rank-law draw under a uniform permutation or the image of a uniform binding
    map, both uniform whatever the subject. A copy (repeat, permuted recall) is a verbatim
    fresh sentence, so its marginal law is a fresh sentence's.

    ``latent_known`` is analytic with bindings (the bound word's rank is uniform over the
    lexicon) and with MQAR (the active set and its bindings are part of the latent: each
    subject costs ln A, a bound verb or object E_r H(beta delta_r + (1 - beta) Zipf) as
    before, the VSO verb the Zipf entropy). With repetition or permuted recall it is the
    Monte-Carlo average of exact conditionals over ``mc_documents`` documents
    (:meth:`PcfgSampler.latent_known_nll`). With ``repeat_source: fresh`` the eligible
    sources depend on which earlier sentences were copies, itself latent when a fresh
    sentence equals an earlier one by chance: ``latent_known`` then conditions on those
    flags too (a lower bound on the rate given the latent alone) and
    ``latent_known_upper`` adds the flags' posterior entropy (an upper bound; see
    :meth:`PcfgSampler.latent_known_terms`). The gap is the uncertainty whether a sentence
    equal to an eligible source was copied or drawn fresh: small unless fresh sentences are
    predictable (a tiny lexicon, a steep rank law, strong bindings).

    Args:
        cfg: the grammar's config.
        mc_documents: documents of the Monte-Carlo average, where one is needed
            (repetition, permuted recall).

    Returns:
        ``no_context`` and ``latent_known`` in nats per token, and ``latent_known_upper``
        for distant copies (``repeat_source: fresh``).
    """
    lx = cfg.lexicon
    p = cfg.svo_probability
    die = np.asarray(cfg.extra_clause_probs)
    e_m = float((np.arange(len(die)) * die).sum())
    h_branch = _h(np.array([p, 1 - p]))
    n_sent = cfg.sentences_per_document
    b = 1.0 if cfg.boundary_token else 0.0
    mean_len = 4.0 + 4.0 * p * e_m

    def rate(h_svo: float, h_vso: float) -> float:
        h_sent = (h_branch + p * (h_svo + _h(die) + e_m * (np.log(lx.connectors) + h_svo))
                  + (1 - p) * h_vso)
        return n_sent * h_sent / (n_sent * mean_len + b)

    h_uniform = float(np.log(lx.subjects) + np.log(lx.verbs) + np.log(lx.objects))
    zs, zv, zo = (zipf_probs(n, cfg.zipf_exponent) for n in (lx.subjects, lx.verbs, lx.objects))
    beta = cfg.binding_probability
    if cfg.active_subjects is not None:  # MQAR: subjects uniform over the active set
        h_subject = float(np.log(cfg.active_subjects))
        h_svo = h_subject + _bound_entropy(zv, beta) + _bound_entropy(zo, beta)
        h_vso = _h(zv) + h_subject + _bound_entropy(zo, beta)
    else:
        h_svo = _h(zs) + _bound_entropy(zv, beta) + _bound_entropy(zo, beta)
        h_vso = _h(zv) + _bound_entropy(zs, beta) + _bound_entropy(zo, beta)
    floors = {"no_context": float(rate(h_uniform, h_uniform)),
              "latent_known": float(rate(h_svo, h_vso))}
    if cfg.repeat_probability > 0 or cfg.permuted_recall:
        from hierlab.corpus.pcfg import PcfgSampler

        nll, flag_h, n = PcfgSampler(cfg).latent_known_terms(mc_documents)
        floors["latent_known"] = nll / n
        if cfg.repeat_source == "fresh" and cfg.repeat_probability > 0:
            floors["latent_known_upper"] = (nll + flag_h) / n
    return floors


@njit(cache=True)
def _word_nll_prefix(tokens, s, length, n_ctx, key, ctx_probs, orders, ord_w):
    """Cumulative -log P of tokens[s : s+length] under the n-gram law (contexts from s on,
    no length-law terms): out[i] = the first i words."""
    out = np.zeros(length + 1)
    for pos in range(length):
        p = 0.0
        for j in range(orders.shape[0]):
            c = context_id(tokens[s:], pos, orders[j], key, n_ctx)
            p += ord_w[j] * ctx_probs[c, tokens[s + pos]]
        out[pos + 1] = out[pos] - np.log(p)
    return out


@njit(cache=True)
def _ngram_nll(tokens, starts, n_sent, eos, n_ctx, key, ctx_probs, orders, ord_w, len_p,
               min_len):
    """Exact -log P of each of the first n_sent sentences (from ``starts``), and its tokens:
    its words, and at every position the length law's hazard (end here or go on)."""
    surv = np.empty(len_p.shape[0] + 1)
    surv[len_p.shape[0]] = 0.0
    for i in range(len_p.shape[0] - 1, -1, -1):
        surv[i] = surv[i + 1] + len_p[i]
    nll = np.zeros(n_sent)
    count = np.zeros(n_sent, dtype=np.int64)
    for k in range(n_sent):
        s = starts[k]
        length = 0
        while tokens[s + length] != eos:
            length += 1
        nll[k] = _word_nll_prefix(tokens, s, length, n_ctx, key, ctx_probs, orders, ord_w)[length]
        # the sentence did not end before: P(L > pos | L >= pos); then it ends at length
        for pos in range(min_len, length):
            li = pos - min_len
            nll[k] -= np.log(surv[li + 1] / surv[li])
        li = length - min_len
        nll[k] -= np.log(len_p[li] / surv[li])
        count[k] = length + 1
    return nll, count


def _unseparated_copy_floors(cfg: NgramConfig, sampler: NgramSampler, ctx_probs: np.ndarray,
                             tokens: np.ndarray) -> dict[str, float]:
    """Floors when a copy runs on from its source (``copy_separator: false``).

    A unit is ``w_1..w_L EOS``: a fresh sentence of length L (probability 1 − rho) or a
    sentence of length n = L/2 followed by its copy (rho). Exact, by the chain rule over
    the unit: ``P = (1 − rho) P_len(L) P(w_1..w_L) + rho P_len(L/2) P(w_1..w_{L/2})
    [w_{n+1..2n} = w_{1..n}]`` (``latent_known``). ``no_context`` scores every word by the
    n-gram law within its unit and the unit's end by the unit-length law (the copies
    ignored): exact for context-free words (``orders: [1]``), an upper bound otherwise.
    """
    rho, eos, lo = cfg.copy_probability, cfg.eos_id, cfg.min_length
    len_p = sampler.length_probs
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    key, orders = np.uint64(sampler.hash_key), np.asarray(cfg.orders, dtype=np.int64)

    def p_len(n: int) -> float:
        return float(len_p[n - lo]) if lo <= n < lo + len(len_p) else 0.0

    known = blind = 0.0
    with np.errstate(divide="ignore"):  # log(0) = -inf: an impossible branch
        for s, e in zip(starts, ends, strict=True):
            L, n = int(e - s), int(e - s) // 2
            cum = _word_nll_prefix(tokens, s, L, cfg.n_contexts, key, ctx_probs, orders,
                                   sampler.order_weights)
            is_copy = L % 2 == 0 and np.array_equal(tokens[s + n:e], tokens[s:s + n])
            fresh = np.log((1 - rho) * p_len(L)) - cum[L]
            copy = np.log(rho * p_len(n)) - cum[n] if is_copy else -np.inf
            known -= np.logaddexp(fresh, copy)
            blind += cum[L] - np.log((1 - rho) * p_len(L) + (rho * p_len(n) if L % 2 == 0 else 0))
    count = len(tokens)
    return {"no_context": float(blind / count), "latent_known": float(known / count),
            "entropy_rate": float(blind / count)}


def _boundaryless_copy_floors(cfg: NgramConfig, sampler: NgramSampler,
                              ctx_probs: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    """Floors with no EOS at all (``emit_eos: false``): where units end is latent too.

    A unit is a fresh sentence of n words (probability 1 − rho) or n words and their copy
    (rho), n from the length law, units back to back. A forward pass over unit ends sums
    out every segmentation: ``a[t] = logsumexp_n(a[t−n] + log((1−rho) P_len(n)) − W(t−n, n),
    a[t−2n] + log(rho P_len(n)) − W(t−2n, n) [copy halves agree])``, W(s, n) the n-gram
    −log P of n words from s (contexts reset at s); ``latent_known = −a[T] / T``. For
    ``no_context`` the copy branch scores all 2n words by the n-gram law (the copies
    ignored). Both condition on the sample ending at a unit end (whole units are drawn),
    which moves them by at most ln(mean unit length) / T.
    """
    rho, lo, hi = cfg.copy_probability, cfg.min_length, cfg.max_length
    key, orders = np.uint64(sampler.hash_key), np.asarray(cfg.orders, dtype=np.int64)
    T = len(tokens)
    with np.errstate(divide="ignore"):  # log(0) = -inf: an impossible branch
        log_fresh = np.log((1 - rho) * sampler.length_probs)
        log_copy = np.log(rho * sampler.length_probs)
    cum = [_word_nll_prefix(tokens, s, min(2 * hi, T - s), cfg.n_contexts, key, ctx_probs,
                            orders, sampler.order_weights) for s in range(T)]
    known = np.full(T + 1, -np.inf)
    blind = np.full(T + 1, -np.inf)
    known[0] = blind[0] = 0.0
    for t in range(1, T + 1):
        k_terms, b_terms = [], []
        for i, n in enumerate(range(lo, hi + 1)):
            if t - n >= 0:
                w = cum[t - n][n]
                k_terms.append(known[t - n] + log_fresh[i] - w)
                b_terms.append(blind[t - n] + log_fresh[i] - w)
            if t - 2 * n >= 0:
                s = t - 2 * n
                if np.array_equal(tokens[s:s + n], tokens[s + n:t]):
                    k_terms.append(known[s] + log_copy[i] - cum[s][n])
                b_terms.append(blind[s] + log_copy[i] - cum[s][2 * n])
        known[t] = np.logaddexp.reduce(k_terms) if k_terms else -np.inf
        blind[t] = np.logaddexp.reduce(b_terms) if b_terms else -np.inf
    return {"no_context": float(-blind[T] / T), "latent_known": float(-known[T] / T),
            "entropy_rate": float(-blind[T] / T)}


def copy_known_nll(sentence_nll: np.ndarray, same_as_previous: np.ndarray,
                   copy_probability: float) -> float:
    """Exact -log P of a stream of sentences under the copy process (forward algorithm).

    Each sentence is fresh (n-gram law, ``exp(-sentence_nll)``) or, only right after a fresh
    one and with probability rho, a verbatim copy of it; after a copy comes a fresh
    sentence. Which sentences are copies is latent, so the two states are summed out; the
    stream starts with a fresh sentence. This is the floor of a model that knows the
    process, copies included.

    Args:
        sentence_nll: each sentence's -log P as a fresh n-gram sentence (its length law
            included).
        same_as_previous: whether each sentence equals the one before it (only those can
            be copies; the first entry is ignored).
        copy_probability: rho, the probability that a fresh sentence is followed by its
            copy.

    Returns:
        The stream's exact -log P in nats (not per token).
    """
    rho = copy_probability
    log_rho = np.log(rho) if rho > 0 else -np.inf
    log_stay = np.log1p(-rho) if rho < 1 else -np.inf
    fresh, copy = -float(sentence_nll[0]), -np.inf
    for a, same in zip(sentence_nll[1:], same_as_previous[1:], strict=True):
        fresh, copy = (np.logaddexp(fresh + log_stay, copy) - float(a),
                       fresh + log_rho if same else -np.inf)
    return -float(np.logaddexp(fresh, copy))


def copy_design_floors(cfg: NgramConfig) -> dict[str, float]:
    """Floors of a context-free copy design with gaps or a latent (exact, closed form).

    A unit is a sentence of L fresh words and, with probability rho, a gap of G fresh words
    and the sentence's copy; units run together with no boundary token. By the
    renewal-reward theorem the long-run per-token rate is a ratio of expectations:

    * ``no_context``: every word at the entropy of the word marginal (uniform over the
      V - 1 words under any latent, since a uniform random permutation of ranks makes every
      word equally likely over documents); what a model pays that uses no context at all.
    * ``latent_known``: the copy structure and the latent known, so a copied word costs 0
      and a fresh one ``H(Zipf(V - 1, s))`` (latent) or the entropy of the fixed law:
      ``(E[L] + rho E[G]) H_fresh / (E[L] + rho (E[G] + E[L]))``, a lower bound on what any
      model can reach (a model must still infer both from the context).

    Args:
        cfg: an n-gram config with ``latent`` set or ``copy_gap_max`` > 0.

    Returns:
        ``no_context``, ``latent_known`` and ``copy_fraction`` (the share of copied
        tokens), all per token.
    """
    sampler = NgramSampler(cfg)
    lengths = np.arange(cfg.min_length, cfg.max_length + 1)
    mean_len = float((sampler.length_probs * lengths).sum())
    mean_gap = 0.0
    if cfg.copy_gap_max > 0:
        mean_gap = (1.0 - cfg.copy_gap_zero_probability) * (cfg.copy_gap_min
                                                            + cfg.copy_gap_max) / 2.0
    rho = cfg.copy_probability
    fresh, total = mean_len + rho * mean_gap, mean_len + rho * (mean_gap + mean_len)
    if cfg.latent == "none":
        h_fresh = h_marginal = _h(sampler.context_distribution(0))
    else:
        h_fresh, h_marginal = _h(sampler.latent_probs), float(np.log(cfg.vocab_size - 1))
    return {"no_context": h_marginal, "latent_known": fresh * h_fresh / total,
            "copy_fraction": rho * mean_len / total}


def ngram_floors(cfg: NgramConfig, n_sentences: int = 2000) -> dict[str, float]:
    """Entropy rate of the n-gram process (MC over histories, exact conditionals).

    With ``copy_probability`` > 0 also ``no_context`` (every sentence scored by the n-gram
    law alone: the copies ignored; equal to ``entropy_rate``, since a copy is marginally an
    n-gram sentence) and ``latent_known`` (the copies known: :func:`copy_known_nll`).
    Designs with a latent or copy gaps take the closed form of :func:`copy_design_floors`.

    Args:
        cfg: the n-gram process's config.
        n_sentences: sentences of the Monte-Carlo average, drawn from a dedicated stream.

    Returns:
        ``entropy_rate`` and ``context_entropy`` (the mean entropy of one context table, a
        lower bound) in nats per token, plus ``no_context`` and ``latent_known`` with flat
        copies.
    """
    if cfg.latent != "none" or cfg.copy_gap_max > 0:
        return copy_design_floors(cfg)
    sampler = NgramSampler(cfg)
    ctx_probs = np.stack([sampler.context_distribution(c) for c in range(cfg.n_contexts)])
    # sentences from a dedicated stream (the test stage, far beyond any test split index)
    offset = 1 << 40
    out = sampler.generate("test", offset, offset + n_sentences)
    eos = cfg.eos_id
    h_ctx = float(np.mean([_h(ctx_probs[c]) for c in range(cfg.n_contexts)]))
    if not cfg.emit_eos or (cfg.copy_probability > 0 and not cfg.copy_separator):
        fn = _unseparated_copy_floors if cfg.emit_eos else _boundaryless_copy_floors
        return {**fn(cfg, sampler, ctx_probs, out.tokens), "context_entropy": h_ctx}
    # every sentence of the stream, copies included (a unit is a sentence and its copy)
    starts = np.concatenate([[0], np.flatnonzero(out.tokens == eos)[:-1] + 1])
    nll, count = _ngram_nll(
        out.tokens, starts, len(starts), eos, cfg.n_contexts,
        np.uint64(sampler.hash_key), ctx_probs, np.asarray(cfg.orders, dtype=np.int64),
        sampler.order_weights, sampler.length_probs, cfg.min_length,
    )
    rate = float(nll.sum() / count.sum())
    floors = {"entropy_rate": rate, "context_entropy": h_ctx}
    if cfg.copy_probability > 0:
        same = np.zeros(len(starts), dtype=bool)
        for i in range(1, len(starts)):
            same[i] = count[i] == count[i - 1] and np.array_equal(
                out.tokens[starts[i]:starts[i] + count[i]],
                out.tokens[starts[i - 1]:starts[i - 1] + count[i - 1]])
        floors["no_context"] = rate
        floors["latent_known"] = float(
            copy_known_nll(nll, same, cfg.copy_probability) / count.sum())
    return floors


def loss_floors(cfg: PcfgConfig | NgramConfig) -> dict[str, float]:
    """The loss floors of either process, as a corpus manifest records them.

    Args:
        cfg: a grammar or n-gram corpus config.

    Returns:
        :func:`pcfg_floors` or :func:`ngram_floors`, with their default sample sizes.
    """
    return pcfg_floors(cfg) if isinstance(cfg, PcfgConfig) else ngram_floors(cfg)
