"""Every sampled distribution matches its config within statistical tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hierlab.corpus.config import Lexicon, NgramConfig, PcfgConfig
from hierlab.corpus.entropy import ngram_floors, pcfg_floors
from hierlab.corpus.ngram import NgramSampler, context_id
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.rng import zipf_probs


def _within(measured: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(measured - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-12


def _sentences(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s : e + 1] for s, e in zip(starts, ends, strict=True)]


@pytest.fixture(scope="module")
def pcfg_sample():
    cfg = PcfgConfig(
        lexicon=Lexicon(subjects=50, verbs=60, objects=70, connectors=9),
        svo_probability=0.3,
        extra_clause_probs=[0.5, 0.2, 0.2, 0.1],
        train_documents=3000,
        test_documents=0,
        annotations=True,
    )
    out = PcfgSampler(cfg).generate("train", 0, 3000 * cfg.repetitions // 10)
    return cfg, out


def test_branch_clause_and_length_distributions(pcfg_sample):
    cfg, out = pcfg_sample
    sents = _sentences(out.tokens, cfg.eos_id)
    n = len(sents)
    s_lo, v_lo, o_lo, c_lo = cfg.role_offsets
    svo = np.array([s[0] < v_lo for s in sents])
    assert _within(svo.mean(), cfg.svo_probability, n)
    lens = np.array([len(s) for s in sents])
    assert set(lens[~svo]) == {4}
    m = (lens[svo] - 4) // 4
    assert np.all((lens[svo] - 4) % 4 == 0)
    for k, p in enumerate(cfg.extra_clause_probs):
        assert _within((m == k).mean(), p, len(m)), (k, (m == k).mean(), p)
    expected_len = 4 + 4 * cfg.svo_probability * sum(
        i * p for i, p in enumerate(cfg.extra_clause_probs)
    )
    assert abs(lens.mean() - expected_len) < 0.05


def test_ids_in_role_ranges_at_every_position(pcfg_sample):
    cfg, out = pcfg_sample
    s_lo, v_lo, o_lo, c_lo = cfg.role_offsets
    ranges = {0: (s_lo, v_lo), 1: (v_lo, o_lo), 2: (o_lo, c_lo), 3: (c_lo, cfg.eos_id)}
    role = out.annotations["role"]
    for code, (lo, hi) in ranges.items():
        toks = out.tokens[role == code]
        assert toks.min() >= lo and toks.max() < hi
    assert np.all(out.tokens[role == 4] == cfg.eos_id)
    for s in _sentences(out.tokens, cfg.eos_id):
        body = s[:-1]
        if s_lo <= body[0] < v_lo:  # SVO (c s v o)*
            pattern = [(s_lo, v_lo), (v_lo, o_lo), (o_lo, c_lo)]
            pattern += [(c_lo, cfg.eos_id), (s_lo, v_lo), (v_lo, o_lo), (o_lo, c_lo)] * (
                (len(body) - 3) // 4
            )
        else:  # VSO
            pattern = [(v_lo, o_lo), (s_lo, v_lo), (o_lo, c_lo)]
        assert len(pattern) == len(body)
        assert all(lo <= t < hi for t, (lo, hi) in zip(body, pattern, strict=True))


def test_zipf_rank_frequencies_follow_each_document_latent(pcfg_sample):
    cfg, out = pcfg_sample
    sampler = PcfgSampler(cfg)
    doc = out.annotations["doc"]
    role = out.annotations["role"]
    counts = np.zeros(cfg.lexicon.subjects, np.int64)
    for base in np.unique(doc)[:400]:
        perm = sampler.document_latent(int(base))["subject"]
        inv = np.full(cfg.vocab_size, -1)
        inv[perm] = np.arange(len(perm))
        toks = out.tokens[(doc == base) & (role == 0)]
        counts += np.bincount(inv[toks], minlength=len(perm))
    emp = counts / counts.sum()
    ref = zipf_probs(cfg.lexicon.subjects, cfg.zipf_exponent)
    n = counts.sum()
    for k in (0, 1, 4, 20):
        assert _within(emp[k], ref[k], n), (k, emp[k], ref[k])
    # a wrong exponent would be caught
    assert not _within(emp[0], zipf_probs(cfg.lexicon.subjects, 1.3)[0], n)


def test_documents_differ_in_latent_and_repetitions_share_it():
    cfg = PcfgConfig(train_documents=10, test_documents=0, annotations=True)
    s = PcfgSampler(cfg)
    a, b = s.document_latent(3), s.document_latent(4)
    assert not np.array_equal(a["subject"], b["subject"])
    assert sorted(a["verb"].tolist()) == list(range(300, 600))
    out = s.generate("train", 0, 20)
    # contiguous realisations r = 0..9 of base 0 all carry doc id 0
    cfg2 = cfg.model_copy(update={"train_order": "contiguous"})
    out2 = PcfgSampler(cfg2).generate("train", 0, 20)
    docs = out2.annotations["doc"][out2.doc_starts]
    assert docs.tolist() == [0] * 10 + [1] * 10
    # shuffled order: same multiset of realisations over the full split
    full = PcfgSampler(cfg).generate("train", 0, 100)
    assert sorted(full.annotations["doc"][full.doc_starts].tolist()) == sorted(
        [d for d in range(10) for _ in range(10)]
    )
    assert full.annotations["doc"][full.doc_starts].tolist() != sorted(
        full.annotations["doc"][full.doc_starts].tolist()
    )
    assert len(out.doc_starts) == 20


def test_paragraph_latent_reshuffles_within_document():
    base = dict(train_documents=200, test_documents=0, annotations=True,
                lexicon=Lexicon(subjects=30, verbs=30, objects=30, connectors=5))
    fits = {}
    for frac in (0.0, 1.0):
        cfg = PcfgConfig(paragraph_latent_fraction=frac, **base)
        sampler = PcfgSampler(cfg)
        out = sampler.generate("train", 0, 2000)
        doc, role = out.annotations["doc"], out.annotations["role"]
        hits = total = 0
        for d in np.unique(doc)[:100]:
            top = sampler.document_latent(int(d))["subject"][0]
            toks = out.tokens[(doc == d) & (role == 0)]
            hits += (toks == top).sum()
            total += len(toks)
        fits[frac] = hits / total
    p1 = zipf_probs(30, 1.0)[0]
    assert abs(fits[0.0] - p1) < 0.03
    assert fits[1.0] < p1 / 2  # the document-level rank-1 word is no longer special


def test_reference_loss_floors():
    floors = pcfg_floors(PcfgConfig())
    assert floors["no_context"] == pytest.approx(4.87, abs=0.005)
    assert floors["latent_known"] == pytest.approx(3.90, abs=0.005)


def test_pcfg_floors_match_monte_carlo(pcfg_sample):
    cfg, out = pcfg_sample
    sampler = PcfgSampler(cfg)
    lx = cfg.lexicon
    n_role = [lx.subjects, lx.verbs, lx.objects]
    role, doc = out.annotations["role"], out.annotations["doc"]
    nll_uniform = nll_latent = 0.0
    # branch, clause count, connectors: identical in both floors
    sents = _sentences(out.tokens, cfg.eos_id)
    s_lo, v_lo, _, _ = cfg.role_offsets
    for s in sents:
        svo = s[0] < v_lo
        nll_uniform -= math.log(cfg.svo_probability if svo else 1 - cfg.svo_probability)
        if svo:
            m = (len(s) - 4) // 4
            nll_uniform -= math.log(cfg.extra_clause_probs[m]) - m * math.log(lx.connectors)
    nll_latent = nll_uniform
    zipf = [np.log(zipf_probs(n, cfg.zipf_exponent)) for n in n_role]
    for r in range(3):
        nll_uniform += (role == r).sum() * math.log(n_role[r])
    for d in np.unique(doc):
        lat = sampler.document_latent(int(d))
        sel = doc == d
        for r, key in enumerate(("subject", "verb", "object")):
            inv = np.full(cfg.vocab_size, -1)
            inv[lat[key]] = np.arange(len(lat[key]))
            nll_latent -= zipf[r][inv[out.tokens[sel & (role == r)]]].sum()
    floors = pcfg_floors(cfg)
    n_tok = len(out.tokens)
    assert nll_uniform / n_tok == pytest.approx(floors["no_context"], rel=0.01)
    assert nll_latent / n_tok == pytest.approx(floors["latent_known"], rel=0.01)


# ---------------------------------------------------------------------------- n-gram


def test_ngram_exponent_floor_share_and_lengths():
    cfg = NgramConfig(vocab_size=200, num_contexts=4000, min_length=3, max_length=12)
    s = NgramSampler(cfg)
    share = float(np.mean(s.exponents == cfg.exponent_floor))
    p = 0.5 * (1 + math.erf((cfg.exponent_floor - cfg.exponent_mean) / cfg.exponent_std
                            / math.sqrt(2)))
    assert _within(share, p, cfg.n_contexts)
    out = s.generate("train", 0, 20000)
    lens = np.diff(np.append(out.doc_starts, len(out.tokens))) - 1
    assert lens.min() == 3 and lens.max() == 12
    freq = np.bincount(lens, minlength=13)[3:] / len(lens)
    assert all(_within(f, 0.1, len(lens)) for f in freq)
    assert out.tokens.max() <= cfg.eos_id
    assert np.all(out.tokens[np.append(out.doc_starts[1:], len(out.tokens)) - 1] == cfg.eos_id)


def test_ngram_zipf_length_law():
    cfg = NgramConfig(vocab_size=50, num_contexts=20, min_length=2, max_length=30,
                      length_distribution="zipf", length_zipf_exponent=2.0)
    out = NgramSampler(cfg).generate("train", 0, 20000)
    lens = np.diff(np.append(out.doc_starts, len(out.tokens))) - 1
    ref = zipf_probs(29, 2.0)
    assert _within((lens == 2).mean(), ref[0], len(lens))
    assert _within((lens == 3).mean(), ref[1], len(lens))


def test_ngram_order_mix_is_recovered_by_maximum_likelihood():
    """Fit the order weights from the tokens: the MLE must land on the config's weights."""
    cfg = NgramConfig(vocab_size=40, num_contexts=500, orders=[1, 3], order_weights=[0.3, 0.7],
                      exponent_mean=2.5, exponent_std=0.5, min_length=8, max_length=8)
    s = NgramSampler(cfg)
    out = s.generate("train", 0, 6000)
    probs = np.stack([s.context_distribution(c) for c in range(cfg.n_contexts)])
    pa, pb = [], []
    for st in out.doc_starts:
        sent = out.tokens[st : st + 8]
        for pos in range(3, 8):
            t = sent[pos]
            pa.append(probs[context_id(sent, pos, 1, np.uint64(s.hash_key), 500), t])
            pb.append(probs[context_id(sent, pos, 3, np.uint64(s.hash_key), 500), t])
    pa, pb = np.array(pa), np.array(pb)
    grid = np.linspace(0.01, 0.99, 99)
    ll = [np.log(w * pa + (1 - w) * pb).sum() for w in grid]
    w_hat = grid[int(np.argmax(ll))]
    assert abs(w_hat - 0.3) < 0.05, w_hat


def test_ngram_reference_order_weights():
    w = NgramConfig().weights()
    assert w[:3] == pytest.approx([0.519, 0.1835, 0.0999], abs=5e-4)


def test_ngram_entropy_rate_matches_brute_force():
    """The compiled estimator agrees with a direct Python computation on a tiny process."""
    cfg = NgramConfig(vocab_size=12, num_contexts=7, orders=[1, 2], min_length=2, max_length=4)
    s = NgramSampler(cfg)
    est = ngram_floors(cfg, n_sentences=3000)
    probs = np.stack([s.context_distribution(c) for c in range(7)])
    w = s.order_weights
    lp = s.length_probs
    out = s.generate("test", 1 << 40, (1 << 40) + 3000)
    nll, count = 0.0, 0
    for st in out.doc_starts:
        L = 0
        while out.tokens[st + L] != cfg.eos_id:
            L += 1
        sent = out.tokens[st : st + L]
        nll -= math.log(lp[L - cfg.min_length])
        for pos in range(L):
            p = sum(w[j] * probs[context_id(sent, pos, o, np.uint64(s.hash_key), 7), sent[pos]]
                    for j, o in enumerate(cfg.orders))
            nll -= math.log(p)
        count += L + 1
    assert est["entropy_rate"] == pytest.approx(nll / count, rel=1e-9)
    assert est["entropy_rate"] >= est["context_entropy"] * 0.5


def test_ngram_sampler_contexts_equal_the_direct_hash():
    """With near-deterministic contexts each token reveals its context id: the sampler's
    O(1) prefix-hash path must pick exactly the context of the direct definition."""
    cfg = NgramConfig(vocab_size=300, num_contexts=97, orders=[1, 2, 5, 40], min_length=3,
                      max_length=60, exponent_mean=60.0, exponent_std=0.0,
                      exponent_floor=60.0, permute_rankings=True)
    s = NgramSampler(cfg)
    out = s.generate("train", 0, 300)
    first_word = np.where(s.rankings[:, 0] == cfg.eos_id, s.rankings[:, 1], s.rankings[:, 0])
    checked = 0
    for st in out.doc_starts:
        end = st
        while out.tokens[end] != cfg.eos_id:
            end += 1
        sent = out.tokens[st:end]
        for pos in range(len(sent)):
            allowed = {int(first_word[context_id(sent, pos, o, np.uint64(s.hash_key), 97)])
                       for o in cfg.orders}
            assert int(sent[pos]) in allowed
            checked += 1
    assert checked > 5000
