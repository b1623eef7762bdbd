"""Corpus statistics, measured from the shards, to check them against the config.

``corpus_stats`` reads each split (up to ``max_tokens``), and reports tokens, sentences,
the sentence-length histogram, the unique-sentence fraction and the train/test overlap;
for PCFG also the SVO/VSO ratio, the clause counts and, per role, the frequency of each
Zipf rank (the rank of a word is read off its document's latent permutation, regenerated
from the seed, so the fit is exact rather than an order-statistics estimate); for
n-gram the unigram head and the context-exponent floor share. The loss floors come from
the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from hierlab.corpus.config import NgramConfig, PcfgConfig
from hierlab.corpus.pcfg import PcfgSampler, SentenceSet, _in_table, sentence_spans
from hierlab.corpus.rng import zipf_probs
from hierlab.corpus.shards import SplitReader, atomic_write_json
from hierlab.errors import DataError


@njit(cache=True)
def _count_members(tokens, starts, lens, table, t_starts, t_tokens):
    hits = 0
    for j in range(starts.shape[0]):
        s = starts[j]
        if _in_table(tokens[s:s + lens[j]], lens[j], table, t_starts, t_tokens):
            hits += 1
    return hits


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
    out["documents_ranked"] = int(len(doc_starts))
    out["rank_frequency_note"] = (
        "ranks read from each document's regenerated latent"
        + ("; section/paragraph re-permutation makes deviations expected" if level else "")
    )
    return out


def corpus_stats(corpus_dir: str | Path, max_tokens: int | None = 20_000_000,
                 save: bool = True, max_docs: int = 20_000) -> dict[str, Any]:
    """Statistics of ``RUN/corpus/<name>`` (both splits), saved to ``stats.json``."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "corpus.json").exists():
        raise DataError(f"{corpus_dir}: not a corpus folder (no corpus.json); "
                        "pass RUN/corpus/<name>")
    meta = json.loads((corpus_dir / "corpus.json").read_text())
    kind = meta["kind"]
    cfg: PcfgConfig | NgramConfig = (PcfgConfig if kind == "pcfg" else NgramConfig)(
        **meta["config"])
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
        stats["splits"][split] = s
    if kind == "ngram":
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
    """A short human-readable summary."""
    lines = [f"corpus {stats['corpus']} ({stats['kind']})"]
    floors = ", ".join(f"{k} {v:.4f}" for k, v in stats["loss_floors"].items()
                       if k in ("no_context", "latent_known", "entropy_rate", "context_entropy"))
    lines.append(f"  loss floors (nats/token): {floors}")
    for split, s in stats["splits"].items():
        lines.append(f"  {split}: {s['tokens_total']:,} tokens, {s['units']:,} units; read "
                     f"{s['tokens_read']:,} tokens, {s['sentences_read']:,} sentences, mean "
                     f"length {s['mean_sentence_length']:.3f}, unique "
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
        if s.get("rejected_sentences"):
            lines.append(f"    rejected (test duplicates redrawn): {s['rejected_sentences']:,}")
        if "unigram_top5" in s:
            lines.append(f"    unigram top-5 {s['unigram_top5']}")
    if "context_exponent_floor_share" in stats:
        share = stats["context_exponent_floor_share"]
        lines.append(f"  context exponents at the floor: {share:.3f}")
    if "train_test_overlap_sentences" in stats:
        lines.append(f"  train sentences also in test: {stats['train_test_overlap_sentences']:,}")
    return "\n".join(lines)
