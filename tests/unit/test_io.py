"""Atomic writes keep the umask's file modes; shards are read zero-copy, also by HF datasets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hierlab.corpus.shards import SplitReader, map_batch, sha256_file, write_split
from hierlab.io import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_parquet
from tiny import tiny_experiment

#: the tests' tiny config, smaller: one de-duplicated PCFG corpus in two train shards
MICRO = {
    "name": "modes",
    "corpora": {"pcfg": {
        "kind": "pcfg", "lexicon": {"subjects": 8, "verbs": 8, "objects": 8, "connectors": 4},
        "sentences_per_paragraph": 2, "repetitions": 2, "train_documents": 40,
        "test_documents": 6, "documents_per_shard": 20, "dedup": True,
    }},
    "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "context_length": 32},
    "training": {"batch_size": 4, "micro_batch_size": 4, "max_tokens": 512, "eval_tokens": 256,
                 "checkpoints": {"schedule": "list", "steps": [0, 4]}},
}


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_writers_respect_the_umask(tmp_path, umask022):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    atomic_write_parquet(pa.table({"a": [1]}), tmp_path / "c.parquet")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == {
        "a.bin": 0o644, "b.json": 0o644, "c.parquet": 0o644, "d": 0o755}
    os.umask(0o027)
    atomic_write_bytes(tmp_path / "e.bin", b"x")
    assert _mode(tmp_path / "e.bin") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temporary left behind
        "a.bin", "b.json", "c.parquet", "d", "e.bin"]


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "keep").mkdir()
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "keep", overwrite=True) as tmp:
        (tmp / "half").write_text("torn")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
    assert list((tmp_path / "keep").iterdir()) == []


def test_a_run_is_readable_by_others_under_umask_022(tmp_path, umask022):
    """Shards, manifests, config.yml, timings.json and checkpoints: 0644; folders 0755."""
    from hierlab.pipeline import run

    run_dir = tmp_path / "run"
    run(tiny_experiment(**MICRO), run_dir, stages=("corpus", "train"))
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    dirs = [p for p in run_dir.rglob("*") if p.is_dir()]
    names = {p.name for p in files}
    assert {"config.yml", "timings.json", "manifest.json", "shard-00000.arrow",
            "model.safetensors", "state.json", "tokenizer.json"} <= names
    assert {str(p.relative_to(run_dir)): oct(_mode(p)) for p in files
            if _mode(p) != 0o644} == {}
    assert {str(p.relative_to(run_dir)): oct(_mode(p)) for p in dirs
            if _mode(p) != 0o755} == {}


def _split(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 1000, n).astype(np.uint16) for n in (5000, 3000)]
    split = tmp_path / "train"
    write_split(split, shards, manifest={"vocab_size": 1000},
                doc_starts=[np.array([0, 100]), np.array([0])])
    return split


def test_shards_are_read_zero_copy_from_the_memory_map(tmp_path, monkeypatch):
    import hierlab.corpus.shards as shards

    maps = []
    real = pa.memory_map
    monkeypatch.setattr(shards.pa, "memory_map", lambda *a: maps.append(real(*a)) or maps[-1])
    split = _split(tmp_path)
    reader = SplitReader(split)
    reader.verify()  # the manifest's sha256 is that of the bytes on disk
    path = split / reader.manifest["shards"][0]["file"]
    assert reader.manifest["shards"][0]["sha256"] == sha256_file(path)
    tokens = reader.shard_tokens(0)
    assert not tokens.flags.writeable and not tokens.flags.owndata

    def mapped(address: int, size: int) -> bool:  # inside one of the memory maps opened
        for mm in maps:
            mm.seek(0)
            whole = mm.read_buffer(mm.size())  # zero-copy: the mapping's own address range
            if whole.address <= address and address + size <= whole.address + whole.size:
                return True
        return False

    assert mapped(tokens.ctypes.data, tokens.nbytes)
    buf = map_batch(path).column("input_ids").buffers()[1]
    assert mapped(buf.address, buf.size)
    assert not mapped(np.array(tokens).ctypes.data, tokens.nbytes)  # the check can fail
    assert np.array_equal(reader.doc_starts(), [0, 100, 5000])


def test_files_of_the_old_ipc_file_format_are_still_read(tmp_path):
    split = _split(tmp_path)
    reader = SplitReader(split)
    want = reader.shard_tokens(0).copy()
    path = split / reader.manifest["shards"][0]["file"]
    batch = map_batch(path)
    old = path.with_name("old.arrow")
    with pa.OSFile(str(old), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as w:
        w.write_batch(batch)
    os.replace(old, path)
    assert path.read_bytes()[:6] == b"ARROW1"
    assert np.array_equal(SplitReader(split).shard_tokens(0), want)


def test_hf_datasets_reads_a_shard_zero_copy(tmp_path):
    import datasets  # the interop extra, installed by the README test command
    split = _split(tmp_path)
    reader = SplitReader(split)
    for i, rec in enumerate(reader.manifest["shards"]):
        ds = datasets.Dataset.from_file(str(split / rec["file"]))
        assert np.array_equal(np.asarray(ds["input_ids"]), reader.shard_tokens(i))
        docs = datasets.Dataset.from_file(str(split / rec["docs_file"]))
        assert len(docs) == (2 if i == 0 else 1)
