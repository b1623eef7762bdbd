"""Corpus generation: determinism, resume, de-duplication, storage, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corpus_helpers import experiment, tiny_ngram, tiny_pcfg
from hierlab.cli import app
from hierlab.corpus import generate as gen
from hierlab.corpus.generate import generate_corpora
from hierlab.corpus.shards import SplitReader
from hierlab.corpus.stats import corpus_stats
from hierlab.errors import ConfigError, DataError


def _shas(run: Path, name: str) -> dict[str, list[str]]:
    out = {}
    for split in ("train", "test"):
        man = json.loads((run / "corpus" / name / split / "manifest.json").read_text())
        out[split] = [r["sha256"] for r in man["shards"]]
    return out


def _bytes(run: Path, name: str, split: str) -> bytes:
    d = run / "corpus" / name / split
    return b"".join(p.read_bytes() for p in sorted(d.glob("shard-*.arrow")))


@pytest.mark.parametrize("workers", [2, 3])
def test_byte_identical_for_any_worker_count(tmp_path, workers):
    cfg = experiment(pcfg=tiny_pcfg(documents_per_shard=400), ngram=tiny_ngram())
    generate_corpora(cfg.corpora, tmp_path / "w1", workers=1)
    generate_corpora(cfg.corpora, tmp_path / "wn", workers=workers)
    for name in ("pcfg", "ngram"):
        assert _shas(tmp_path / "w1", name) == _shas(tmp_path / "wn", name)
        for split in ("train", "test"):
            assert _bytes(tmp_path / "w1", name, split) == _bytes(tmp_path / "wn", name, split)


def test_shard_size_does_not_change_tokens(tmp_path):
    a = experiment(pcfg=tiny_pcfg(documents_per_shard=2000))
    b = experiment(pcfg=tiny_pcfg(documents_per_shard=333))
    generate_corpora(a.corpora, tmp_path / "a")
    generate_corpora(b.corpora, tmp_path / "b")
    for split in ("train", "test"):
        ra = SplitReader(tmp_path / "a/corpus/pcfg" / split)
        rb = SplitReader(tmp_path / "b/corpus/pcfg" / split)
        assert split == "test" or rb.num_shards > ra.num_shards
        assert np.array_equal(ra.read(0, ra.total_tokens), rb.read(0, rb.total_tokens))
        assert np.array_equal(ra.doc_starts(), rb.doc_starts())


def test_dask_engine_byte_identical(tmp_path):
    pytest.importorskip("dask.distributed")
    cfg = experiment(ngram=tiny_ngram(train_sentences=2000))
    generate_corpora(cfg.corpora, tmp_path / "local", workers=1)
    generate_corpora(cfg.corpora, tmp_path / "dask", workers=1, engine="dask")
    assert _shas(tmp_path / "local", "ngram") == _shas(tmp_path / "dask", "ngram")


def test_resume_after_kill_redoes_only_unfinished_shards(tmp_path, monkeypatch):
    cfg = experiment(pcfg=tiny_pcfg(documents_per_shard=300))
    generate_corpora(cfg.corpora, tmp_path / "ref")
    real = gen.build_shard
    calls: list[tuple[str, int]] = []

    def dying(cfg_json, split, index, split_dir):
        calls.append((split, index))
        if split == "train" and index == 2:
            # simulate a kill mid-shard: a temp file is left behind, nothing renamed
            (Path(split_dir) / ".shard-00002.arrow.xyz.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(cfg_json, split, index, split_dir)

    monkeypatch.setattr(gen, "build_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        generate_corpora(cfg.corpora, tmp_path / "run")
    train_dir = tmp_path / "run/corpus/pcfg/train"
    assert not (train_dir / "manifest.json").exists()
    done_before = {p.name: p.stat().st_mtime_ns for p in train_dir.glob("shard-0000[01].arrow")}
    assert len(done_before) == 2

    calls.clear()
    monkeypatch.setattr(gen, "build_shard", lambda *a: (calls.append((a[1], a[2])), real(*a))[1])
    generate_corpora(cfg.corpora, tmp_path / "run")
    assert ("train", 0) not in calls and ("train", 1) not in calls and ("train", 2) in calls
    assert all(s == "train" for s, _ in calls)  # the finished test split was skipped
    for name, mtime in done_before.items():
        assert (train_dir / name).stat().st_mtime_ns == mtime
    assert _shas(tmp_path / "ref", "pcfg") == _shas(tmp_path / "run", "pcfg")


def test_existing_corpus_from_other_config_is_not_overwritten(tmp_path):
    generate_corpora(experiment(pcfg=tiny_pcfg()).corpora, tmp_path)
    before = _shas(tmp_path, "pcfg")
    with pytest.raises(ConfigError, match="different config"):
        generate_corpora(experiment(pcfg=tiny_pcfg(zipf_exponent=1.5)).corpora, tmp_path)
    assert _shas(tmp_path, "pcfg") == before


def test_checksum_detects_corrupt_shard(tmp_path):
    generate_corpora(experiment(pcfg=tiny_pcfg()).corpora, tmp_path)
    split = tmp_path / "corpus/pcfg/train"
    SplitReader(split).verify()
    shard = split / "shard-00000.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="shard-00000.arrow: checksum mismatch"):
        SplitReader(split).verify()


def test_dedup_removes_every_test_sentence_and_the_check_can_fail(tmp_path):
    lex = {"subjects": 12, "verbs": 12, "objects": 12, "connectors": 4}
    on = experiment(pcfg=tiny_pcfg(lexicon=lex, dedup=True))
    off = experiment(pcfg=tiny_pcfg(lexicon=lex, dedup=False))
    generate_corpora(on.corpora, tmp_path / "on")
    generate_corpora(off.corpora, tmp_path / "off")
    s_on = corpus_stats(tmp_path / "on/corpus/pcfg")
    s_off = corpus_stats(tmp_path / "off/corpus/pcfg")
    assert s_on["train_test_overlap_sentences"] == 0
    assert s_on["splits"]["train"]["rejected_sentences"] > 0
    assert s_off["train_test_overlap_sentences"] > 100
    # rejection removes short sentences: the mean length rises (docs/reference-study.md#the-grammar)
    assert (s_on["splits"]["train"]["mean_sentence_length"]
            > s_off["splits"]["train"]["mean_sentence_length"] + 0.1)


def test_manifest_and_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    cfg = experiment(pcfg=tiny_pcfg(boundary_token=True, annotations=True))
    generate_corpora(cfg.corpora, tmp_path)
    d = tmp_path / "corpus/pcfg"
    man = json.loads((d / "train/manifest.json").read_text())
    for key in ("shards", "vocab_size", "eos_id", "pad_id", "boundary_id", "config",
                "config_hash", "seed", "hierlab_version", "loss_floors", "roles"):
        assert key in man
    assert man["config_hash"] == gen.corpus_hash(cfg.corpora["pcfg"])
    assert man["eos_id"] == 130 and man["boundary_id"] == 131 and man["vocab_size"] == 134
    assert man["columns"] == ["input_ids", "doc", "section", "paragraph", "sentence", "role"]
    tok = AutoTokenizer.from_pretrained(d / "tokenizer")
    assert len(tok) == man["vocab_size"]
    r = SplitReader(d / "train")
    ids = r.read(0, 12).tolist()
    assert ids[0] == man["boundary_id"]
    text = tok.decode(ids)
    assert text.split()[0] == "[DOC]" and "[EOS]" in text
    # every document starts with the boundary token
    assert set(r.read(0, r.total_tokens)[r.doc_starts()].tolist()) == {131}


def test_corpus_hash_is_the_manifest_config_hash_of_before():
    """Existing corpora stay recognised: the reference configs hash as they always did."""
    from hierlab.corpus.config import NgramConfig, PcfgConfig

    assert gen.corpus_hash(PcfgConfig()) == "8796ffb9bcc0a094"
    assert gen.corpus_hash(NgramConfig()) == "6ea0024192e04842"


def test_generation_needs_no_experiment_config():
    """corpus/generate.py receives the corpora section; it never imports hierlab.config
    (which pulls in every stage's config)."""
    code = ("import sys, hierlab.corpus.generate, hierlab.corpus.stats\n"
            "print('hierlab.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    assert out.stdout.strip() == "False"


def test_cli_corpus_and_stats(tmp_path):
    from tiny import write_tiny_config

    cfg_path = write_tiny_config(tmp_path / "c.yml", name="t", corpora={"pcfg": tiny_pcfg()})
    runner = CliRunner()
    res = runner.invoke(app, ["corpus", str(cfg_path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["corpus-stats", str(tmp_path / "run/corpus/pcfg")])
    assert res.exit_code == 0, res.output
    assert "SVO fraction" in res.output and (tmp_path / "run/corpus/pcfg/stats.json").exists()
    res = runner.invoke(app, ["corpus", str(cfg_path), "--only", "nope"])
    assert res.exit_code == 1 and "no corpus named 'nope'" in res.output


def test_reader_windows_cross_shards(tmp_path):
    generate_corpora(experiment(ngram=tiny_ngram(sentences_per_shard=700)).corpora, tmp_path)
    r = SplitReader(tmp_path / "corpus/ngram/train")
    full = np.concatenate([r.shard_tokens(i) for i in range(r.num_shards)])
    edge = int(r.offsets[1])
    assert np.array_equal(r.read(edge - 5, 10), full[edge - 5 : edge + 5])
    with pytest.raises(DataError):
        r.read(r.total_tokens - 2, 5)


def test_sentence_set_agrees_with_python_sets():
    """The compiled table (packed 4-token keys, hashed longer ones) is exact set membership."""
    from hierlab.corpus.config import Lexicon, PcfgConfig
    from hierlab.corpus.dedup import SentenceSet
    from hierlab.corpus.pcfg import PcfgSampler

    cfg = PcfgConfig(lexicon=Lexicon(subjects=6, verbs=6, objects=6, connectors=3),
                     train_documents=40, test_documents=20, boundary_token=True)
    s = PcfgSampler(cfg)
    test = s.generate("test", 0, 200).tokens
    train = s.generate("train", 0, 400).tokens

    def sentences(tokens):
        out, cur = [], []
        for t in tokens.tolist():
            if t == cfg.boundary_id:
                continue
            cur.append(t)
            if t == cfg.eos_id:
                out.append(tuple(cur))
                cur = []
        return out

    ref = set(sentences(test))
    table = SentenceSet.from_tokens(test, cfg.eos_id, cfg.boundary_id)
    assert table.n_unique == len(ref)
    probes = sentences(train)
    assert {len(p) for p in probes} >= {4, 8, 12}
    assert any(p in ref for p in probes) and any(p not in ref for p in probes)
    for p in probes:
        assert (p in table) == (p in ref)
    # long sentences that differ from a member in one subject (a hash-path lookup)
    for long in [p for p in ref if len(p) == 12][:50]:
        for d in range(1, 6):
            mutated = ((long[0] + d) % cfg.lexicon.subjects,) + long[1:]
            assert (mutated in table) == (mutated in ref)


def test_stats_rank_fit_when_ranking_fewer_documents_than_read(tmp_path):
    """Regression: the last ranked document's span ran to the end of the read tokens, so
    thousands of other documents were scored against one latent and P(rank 1) sagged."""
    lex = {"subjects": 16, "verbs": 16, "objects": 16, "connectors": 8}
    generate_corpora(
        experiment(pcfg=tiny_pcfg(lexicon=lex, zipf_exponent=1.5, dedup=False)).corpora, tmp_path
    )
    stats = corpus_stats(tmp_path / "corpus/pcfg", max_docs=50)
    fit = stats["splits"]["train"]["rank_frequency"]["subject"]
    assert stats["splits"]["train"]["documents_ranked"] == 50
    assert abs(fit["p_rank1"] - fit["p_rank1_config"]) < 0.06, fit
