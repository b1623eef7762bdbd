"""Corpus statistics, measured from the shards, to check them against the config.

Tokens, sentences, lengths, uniqueness and the train/test overlap for both processes; the
grammar's branch ratio, clause counts and rank frequencies, and the n-gram process's
unigram head and copy statistics. What each one measures: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hierlab.corpus.config import CORPUS_ADAPTER, NgramConfig, PcfgConfig
from hierlab.corpus.dedup import SentenceSet, in_table, sentence_spans
from hierlab.corpus.jit import njit
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.rng import zipf_probs
from hierlab.corpus.shards import SplitReader
from hierlab.errors import DataError
from hierlab.io import atomic_write_json


@njit(cache=True)
def _count_members(tokens, starts, lens, table, t_starts, t_tokens):
    hits = 0
    for j in range(starts.shape[0]):
        s = starts[j]
        if in_table(tokens[s:s + lens[j]], lens[j], table, t_starts, t_tokens):
            hits += 1
    return hits


@njit(cache=True)
def _find_copies(tokens, min_len, max_dist):
    """Greedy scan for verbatim copies: a run of >= ``min_len`` tokens equal to the run
    ``d`` back (``min_len <= d <= max_dist``, smallest ``d`` first). Returns the distance
    of every copied token (0 where none): chance runs of ``min_len`` equal tokens are
    negligible for the copy designs (~2e-6 per position over 40 distances for 96 words
    under Zipf(1), where two words match with probability 0.06)."""
    n = tokens.shape[0]
    dist = np.zeros(n, dtype=np.int64)
    t = 0
    while t < n:
        found = 0
        for d in range(min_len, min(max_dist, t) + 1):
            r = 0
            while t + r < n and r < d and tokens[t + r] == tokens[t + r - d]:
                r += 1
            if r >= min_len:
                for j in range(r):
                    dist[t + j] = d
                found = r
                break
        t += found if found else 1
    return dist


@njit(cache=True)
def _window_repeat_rate(tokens, context):
    """Share of tokens whose id already occurred earlier in the same ``context`` window."""
    hits = 0
    total = 0
    seen = np.full(65536, -1, dtype=np.int64)
    for w0 in range(0, tokens.shape[0] - context + 1, context):
        for j in range(context):
            tok = tokens[w0 + j]
            if seen[tok] >= w0:
                hits += 1
            seen[tok] = w0 + j
            total += 1
    return hits / max(total, 1)


def copy_statistics(cfg: NgramConfig, tokens: np.ndarray, context: int = 64
                    ) -> dict[str, Any]:
    """What a reader needs to check that copy designs are matched.

    Args:
        cfg: the n-gram config (its lengths and gaps bound the copy search).
        tokens: a split's tokens.
        context: window length of the collision rate (the model's context).

    Returns:
        ``unigram_tv_from_uniform`` (total variation between the word marginal and
        uniform), ``copy_fraction`` (share of tokens that repeat a run ``d`` back),
        ``copy_distance_histogram`` (copied tokens per distance), and
        ``window_repeat_rate`` (share of tokens already seen in their window).
    """
    words = cfg.vocab_size - 1
    freq = np.bincount(tokens, minlength=cfg.vocab_size)[:words] / max(len(tokens), 1)
    dist = _find_copies(np.asarray(tokens, dtype=np.int64), cfg.min_length,
                        cfg.max_length + cfg.copy_gap_max)
    hist = np.bincount(dist[dist > 0])
    return {"unigram_tv_from_uniform": float(0.5 * np.abs(freq - 1.0 / words).sum()),
            "copy_fraction": float((dist > 0).mean()) if len(dist) else 0.0,
            "copy_distance_histogram": {int(k): int(v) for k, v in enumerate(hist) if v},
            "window_repeat_rate": float(_window_repeat_rate(
                np.asarray(tokens, dtype=np.int64), context)),
            "window": context}


def _read(reader: SplitReader, max_tokens: int | None) -> np.ndarray:
    n = reader.total_tokens if max_tokens is None else min(reader.total_tokens, max_tokens)
    return reader.read(0, n)


def _pcfg_split_stats(cfg: PcfgConfig, split: str, reader: SplitReader, tokens: np.ndarray,
                      starts: np.ndarray, lens: np.ndarray, max_docs: int = 20000
                      ) -> dict[str, Any]:
    first = tokens[starts]
    off = cfg.role_offsets
    lx = cfg.lexicon
    svo = (first >= off[0]) & (first < off[0] + lx.subjects)
    out: dict[str, Any] = {
        "svo_fraction": float(svo.mean()) if len(svo) else None,
        "svo_probability_config": cfg.svo_probability,
    }
    m = (lens[svo] - 4) // 4
    counts = np.bincount(m, minlength=len(cfg.extra_clause_probs)) if len(m) else np.zeros(1)
    out["extra_clauses"] = {
        "measured": (counts / max(counts.sum(), 1)).round(5).tolist(),
        "config": cfg.extra_clause_probs,
    }
    # exact rank frequencies via each document's regenerated latent
    sampler = PcfgSampler(cfg)
    doc_starts = reader.doc_starts()
    doc_starts = doc_starts[doc_starts < len(tokens)]
    # each document ends where the next one starts, also past the max_docs we rank
    bounds = np.append(doc_starts, len(tokens))[: max_docs + 1]
    doc_starts = doc_starts[:max_docs]
    bases = sampler.document_bases(split, np.arange(len(doc_starts)))
    sizes = {"subject": lx.subjects, "verb": lx.verbs, "object": lx.objects}
    rank_counts = {r: np.zeros(n, np.int64) for r, n in sizes.items()}
    level = cfg.section_latent_fraction > 0 or cfg.paragraph_latent_fraction > 0
    for d in range(len(doc_starts)):
        latent = sampler.document_latent(int(bases[d]))
        doc = tokens[bounds[d]:bounds[d + 1]].astype(np.int64)
        for role, perm in latent.items():
            inv = np.full(cfg.vocab_size, -1, np.int64)
            inv[perm] = np.arange(len(perm))
            ranks = inv[doc]
            rank_counts[role] += np.bincount(ranks[ranks >= 0], minlength=len(perm))
    fits = {}
    for role, c in rank_counts.items():
        total = int(c.sum())
        if total == 0:
            continue
        emp = c / total
        ref = zipf_probs(len(c), cfg.zipf_exponent)
        k = np.arange(1, len(c) + 1)
        mask = c > 0
        slope = float(np.polyfit(np.log(k[mask]), np.log(emp[mask]), 1)[0]) if mask.sum() > 2 \
            else float("nan")
        fits[role] = {
            "words_counted": total,
            "p_rank1": float(emp[0]),
            "p_rank1_config": float(ref[0]),
            "top10_mass": float(emp[:10].sum()),
            "top10_mass_config": float(ref[:10].sum()),
            "fitted_exponent": -slope,
            "max_abs_deviation": float(np.abs(emp - ref).max()),
        }
    out["rank_frequency"] = fits
    if (cfg.binding_probability > 0 or cfg.repeat_probability > 0 or cfg.permuted_recall
            or cfg.active_subjects is not None):
        out.update(_latent_rates(cfg, sampler, tokens, bounds, bases, min(len(doc_starts), 2000)))
    out["documents_ranked"] = int(len(doc_starts))
    out["rank_frequency_note"] = (
        "ranks read from each document's regenerated latent"
        + ("; section/paragraph re-permutation makes deviations expected" if level else "")
        + ("; subjects are uniform over each paragraph's active set, not Zipf"
           if cfg.active_subjects is not None else "")
    )
    return out


def _latent_rates(cfg: PcfgConfig, sampler: PcfgSampler, tokens: np.ndarray, bounds: np.ndarray,
                  bases: np.ndarray, n_docs: int) -> dict[str, Any]:
    """Realised binding, repetition, recall and active-subject rates of the first
    ``n_docs`` documents.

    binding: the share of bound slots (S->V, V->O in SVO and clauses; V->S, S->O in VSO;
    with MQAR S->V and S->O in SVO and clauses, S->O in VSO) whose word is the bound one;
    expected ``beta + (1 - beta) / n`` on average (a rank-law draw hits the bound word by
    chance). repetition: the share of sentences equal to an eligible source of their scope
    (at least ``repeat_min_distance`` back and, with ``repeat_source: fresh``, not itself
    equal to an eligible source of its own); expected ``rho`` times the share of sentences
    that have one, plus chance coincidences. ``adjacent_repeat_rate``: the share of
    sentences equal to the sentence just before them in their paragraph (the positional
    shortcut "copy the previous sentence"). recall: the share of second-half sentences
    equal to a first-half sentence not yet recalled (expected 1), and the share of
    paragraphs recalled in the original order (expected 1/K!). active subjects: the share
    of subject words in their paragraph's active set (expected 1).
    """
    off_s, off_v, off_o, off_c = cfg.role_offsets
    lx = cfg.lexicon
    spp, paras = cfg.sentences_per_paragraph, cfg.paragraphs_per_section
    hits = slots = 0
    repeats = eligible = n_sent = adjacent = adjacent_pairs = 0
    recalled = recall_slots = in_order = recall_paras = 0
    active_hits = subject_slots = 0
    mqar = cfg.active_subjects is not None
    d_min, fresh_only = cfg.repeat_min_distance, cfg.repeat_source == "fresh"
    expected_bind = 0.0
    sizes = {"subject_verb": lx.verbs, "verb_object": lx.objects, "verb_subject": lx.subjects,
             "subject_object": lx.objects}
    for d in range(n_docs):
        doc = tokens[bounds[d]:bounds[d + 1]].astype(np.int64)
        doc = doc[doc != (cfg.boundary_id if cfg.boundary_id is not None else -1)]
        ends = np.flatnonzero(doc == cfg.eos_id)
        sents = np.split(doc, ends + 1)[: len(ends)]
        maps: dict[int, dict[str, np.ndarray]] = {}
        copy_flag = [False] * len(sents)  # inferred: equal to an eligible source

        def same(a: np.ndarray, b: np.ndarray) -> bool:
            return len(a) == len(b) and bool((a == b).all())

        for j, sent in enumerate(sents):
            pg = j // spp
            sc, pg_in = pg // paras, pg % paras
            first = pg * spp if cfg.repeat_scope == "paragraph" else 0
            n_sent += 1
            if j > pg * spp:
                adjacent_pairs += 1
                adjacent += same(sents[j - 1], sent)
            scope = [i for i in range(first, j - d_min + 1)
                     if not (fresh_only and copy_flag[i])]
            if scope:
                eligible += 1
                copy_flag[j] = any(same(sents[i], sent) for i in scope)
                repeats += copy_flag[j]
            if cfg.permuted_recall and j % spp == spp - 1:
                para = sents[pg * spp:j + 1]
                half = spp // 2
                left = list(para[:half])
                for x in para[half:]:
                    recall_slots += 1
                    hit = next((k for k, y in enumerate(left) if same(x, y)), None)
                    if hit is not None:
                        recalled += 1
                        left.pop(hit)
                recall_paras += 1
                in_order += all(same(a, b) for a, b in zip(para[:half], para[half:],
                                                           strict=True))
            if mqar:
                act = set(sampler.active_subjects(int(bases[d]), sc, pg_in).tolist())
                subj = sent[(sent >= off_s) & (sent < off_v)]
                subject_slots += len(subj)
                active_hits += sum(int(w) in act for w in subj)
            if cfg.binding_probability <= 0:
                continue
            key = sampler.binding_unit(sc, pg_in)  # one map per binding unit, not per paragraph
            if key not in maps:
                maps[key] = sampler.document_bindings(int(bases[d]), sc, pg_in)
            b = maps[key]
            pairs = []
            if sent[0] < off_v:  # SVO and clauses: s -> v -> o (MQAR: s -> v, s -> o)
                for k in range(0, len(sent) - 1, 4):
                    pairs += [("subject_verb", sent[k] - off_s, sent[k + 1]),
                              ("subject_object", sent[k] - off_s, sent[k + 2]) if mqar else
                              ("verb_object", sent[k + 1] - off_v, sent[k + 2])]
            else:  # VSO: v -> s -> o (MQAR: the subject is not keyed on the verb)
                if not mqar:
                    pairs.append(("verb_subject", sent[0] - off_v, sent[1]))
                pairs.append(("subject_object", sent[1] - off_s, sent[2]))
            for name, src, dst in pairs:
                slots += 1
                hits += int(b[name][src] == dst)
                expected_bind += 1.0 / sizes[name]
    beta = cfg.binding_probability
    out: dict[str, Any] = {"latent_rates_documents": int(n_docs)}
    if beta > 0:
        out["binding_rate"] = {
            "measured": hits / max(slots, 1),
            "expected": beta + (1 - beta) * expected_bind / max(slots, 1),
            "binding_probability_config": beta, "slots": int(slots)}
    if cfg.repeat_probability > 0 or not (cfg.permuted_recall or mqar):
        out["repetition_rate"] = {
            "measured": repeats / max(n_sent, 1),
            "expected_without_chance": cfg.repeat_probability * eligible / max(n_sent, 1),
            "repeat_probability_config": cfg.repeat_probability, "sentences": int(n_sent),
            "repeat_source": cfg.repeat_source, "repeat_min_distance": d_min}
    if cfg.repeat_probability > 0 or cfg.permuted_recall:
        out["adjacent_repeat_rate"] = adjacent / max(adjacent_pairs, 1)
    if cfg.permuted_recall:
        k = spp // 2
        out["recall_rate"] = {
            "measured": recalled / max(recall_slots, 1), "expected": 1.0,
            "in_order_paragraphs": in_order / max(recall_paras, 1),
            "in_order_expected": 1.0 / math.factorial(k), "paragraphs": int(recall_paras)}
    if mqar:
        out["active_subject_rate"] = {
            "measured": active_hits / max(subject_slots, 1), "expected": 1.0,
            "active_subjects_config": cfg.active_subjects, "subjects": int(subject_slots)}
    return out


def corpus_stats(corpus_dir: str | Path, max_tokens: int | None = 20_000_000,
                 save: bool = True, max_docs: int = 20_000, context: int = 64
                 ) -> dict[str, Any]:
    """Measure a generated corpus, to check it against its config (``hierlab corpus-stats``).

    Args:
        corpus_dir: the corpus folder, ``RUN/corpus/<name>``.
        max_tokens: read at most this many tokens per split (None: all).
        save: also write ``corpus_dir/stats.json``.
        max_docs: documents whose latent is regenerated for the grammar's rank frequencies.
        context: window length of :func:`copy_statistics`, computed for boundary-free copy
            designs.

    Returns:
        The statistics: the loss floors from the manifest, per split the measured values,
        and the train/test sentence overlap.
    """
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "corpus.json").exists():
        raise DataError(f"{corpus_dir}: not a corpus folder (no corpus.json); "
                        "pass RUN/corpus/<name>")
    meta = json.loads((corpus_dir / "corpus.json").read_text())
    kind = meta["kind"]
    cfg: PcfgConfig | NgramConfig = CORPUS_ADAPTER.validate_python(
        {**meta["config"], "kind": kind})
    stats: dict[str, Any] = {"corpus": meta["corpus"], "kind": kind,
                             "loss_floors": meta["loss_floors"], "splits": {}}
    sets: dict[str, tuple] = {}
    boundary = -1 if cfg.boundary_id is None else cfg.boundary_id
    for split in ("train", "test"):
        if not (corpus_dir / split / "manifest.json").exists():
            continue
        reader = SplitReader(corpus_dir / split)
        tokens = _read(reader, max_tokens)
        starts, lens = sentence_spans(tokens, cfg.eos_id, boundary)
        st = SentenceSet.from_tokens(tokens, cfg.eos_id, cfg.boundary_id)
        sets[split] = (tokens, starts, lens, st)
        hist = np.bincount(lens) if len(lens) else np.zeros(0, np.int64)
        s: dict[str, Any] = {
            "tokens_total": reader.total_tokens,
            "tokens_read": int(len(tokens)),
            "units": reader.manifest["units"],
            "sentences_read": int(len(lens)),
            "mean_sentence_length": float(lens.mean()) if len(lens) else None,
            "sentence_length_histogram": {int(k): int(v) for k, v in enumerate(hist) if v},
            "unique_sentence_fraction": st.n_unique / max(len(lens), 1),
            "rejected_sentences": reader.manifest.get("rejected_sentences", 0),
            "max_id": int(tokens.max()) if len(tokens) else None,
            "vocab_size": reader.vocab_size,
        }
        if kind == "pcfg":
            s.update(_pcfg_split_stats(cfg, split, reader, tokens, starts, lens, max_docs))
        else:
            freq = np.bincount(tokens, minlength=cfg.vocab_size) / max(len(tokens), 1)
            s["unigram_top5"] = {int(i): float(freq[i]) for i in np.argsort(-freq)[:5]}
            if cfg.copy_probability > 0 and not cfg.emit_eos:
                s["copies"] = copy_statistics(cfg, tokens[:2_000_000], context)
        stats["splits"][split] = s
    if isinstance(cfg, NgramConfig):
        from hierlab.corpus.ngram import NgramSampler

        sam = NgramSampler(cfg)
        stats["context_exponent_floor_share"] = float(np.mean(sam.exponents <= cfg.exponent_floor))
    if "train" in sets and "test" in sets:
        tr_tokens, tr_starts, tr_lens, _ = sets["train"]
        ts = sets["test"][3]
        stats["train_test_overlap_sentences"] = int(_count_members(
            tr_tokens, tr_starts, tr_lens, ts.table, ts.starts, ts.tokens))
    if save:
        atomic_write_json(corpus_dir / "stats.json", stats)
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    """A short human-readable summary, as ``hierlab corpus-stats`` prints it.

    Args:
        stats: what :func:`corpus_stats` returned.

    Returns:
        The summary, one line per fact, measured values beside the configured ones.
    """
    lines = [f"corpus {stats['corpus']} ({stats['kind']})"]
    floors = ", ".join(f"{k} {v:.4f}" for k, v in stats["loss_floors"].items()
                       if k in ("no_context", "latent_known", "entropy_rate", "context_entropy"))
    lines.append(f"  loss floors (nats/token): {floors}")
    for split, s in stats["splits"].items():
        mean_len = s["mean_sentence_length"]  # None without EOS: no sentence boundaries
        lines.append(f"  {split}: {s['tokens_total']:,} tokens, {s['units']:,} units; read "
                     f"{s['tokens_read']:,} tokens, {s['sentences_read']:,} sentences, mean "
                     f"length {'n/a' if mean_len is None else f'{mean_len:.3f}'}, unique "
                     f"{s['unique_sentence_fraction']:.4f}, max id {s['max_id']}")
        if "svo_fraction" in s:
            lines.append(f"    SVO fraction {s['svo_fraction']:.4f} (config "
                         f"{s['svo_probability_config']}); extra clauses "
                         f"{s['extra_clauses']['measured']}")
            for role, f in s["rank_frequency"].items():
                lines.append(f"    {role}: P(rank 1) {f['p_rank1']:.4f} (config "
                             f"{f['p_rank1_config']:.4f}), top-10 {f['top10_mass']:.4f} "
                             f"(config {f['top10_mass_config']:.4f}), fitted exponent "
                             f"{f['fitted_exponent']:.3f}")
        if "binding_rate" in s:
            b = s["binding_rate"]
            lines.append(f"    binding rate {b['measured']:.4f} (expected {b['expected']:.4f}, "
                         f"beta {b['binding_probability_config']})")
        if "repetition_rate" in s:
            r = s["repetition_rate"]
            lines.append(f"    repeated sentences {r['measured']:.4f} (expected "
                         f"{r['expected_without_chance']:.4f} + chance, rho "
                         f"{r['repeat_probability_config']}, source {r['repeat_source']}, "
                         f"min distance {r['repeat_min_distance']})")
        if "adjacent_repeat_rate" in s:
            lines.append(f"    sentences equal to the one before: {s['adjacent_repeat_rate']:.4f}")
        if "recall_rate" in s:
            r = s["recall_rate"]
            lines.append(f"    recalled sentences {r['measured']:.4f} (expected 1); paragraphs "
                         f"recalled in order {r['in_order_paragraphs']:.4f} (expected "
                         f"{r['in_order_expected']:.4f})")
        if "active_subject_rate" in s:
            r = s["active_subject_rate"]
            lines.append(f"    subjects in the paragraph's active set {r['measured']:.4f} "
                         f"(expected 1, A = {r['active_subjects_config']})")
        if s.get("rejected_sentences"):
            lines.append(f"    rejected (test duplicates redrawn): {s['rejected_sentences']:,}")
        if "unigram_top5" in s:
            lines.append(f"    unigram top-5 {s['unigram_top5']}")
        if "copies" in s:
            c = s["copies"]
            hist = c["copy_distance_histogram"]
            total = max(sum(hist.values()), 1)
            bands = ((1, 8), (9, 16), (17, 24), (25, 32), (33, 1 << 30))
            shares = ", ".join(
                f"{lo}-{hi if hi < 1 << 30 else ''}: "
                f"{sum(v for d, v in hist.items() if lo <= d <= hi) / total:.3f}"
                for lo, hi in bands)
            lines.append(f"    word marginal vs uniform (total variation) "
                         f"{c['unigram_tv_from_uniform']:.4f}; copied tokens "
                         f"{c['copy_fraction']:.4f}; repeats within a {c['window']}-token "
                         f"window {c['window_repeat_rate']:.4f}")
            lines.append(f"    copy distances (share of copied tokens): {shares}")
    if "context_exponent_floor_share" in stats:
        share = stats["context_exponent_floor_share"]
        lines.append(f"  context exponents at the floor: {share:.3f}")
    if "train_test_overlap_sentences" in stats:
        lines.append(f"  train sentences also in test: {stats['train_test_overlap_sentences']:,}")
    return "\n".join(lines)
