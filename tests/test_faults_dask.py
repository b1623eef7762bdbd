"""A lost Dask worker (issue 20 item 3): killing one worker of a two-worker local cluster
mid-shard still ends with a complete corpus, byte-identical to a one-worker run; a shard
whose workers keep dying ends in one line, and a re-run completes it. No manifest ever
lists a partial shard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus_helpers import experiment, tiny_ngram
from hierlab.corpus.generate import generate_corpora
from hierlab.corpus.shards import SplitReader
from hierlab.errors import DataError
from hierlab.faults import ENV, ENV_DIR

pytest.importorskip("dask.distributed")
pytestmark = pytest.mark.slow  # a local cluster starts worker processes (~10 s each run)

KILL = "kill@*/train/shard-00001.arrow"  # SIGKILL the worker writing shard 1, mid-write


def _shas(run: Path) -> dict[str, list[str]]:
    return {s: [r["sha256"] for r in json.loads(
        (run / "corpus" / "ngram" / s / "manifest.json").read_text())["shards"]]
        for s in ("train", "test")}


def test_a_worker_killed_mid_shard_is_survived_and_a_dying_shard_is_one_line(
        tmp_path: Path, monkeypatch) -> None:
    cfg = experiment(ngram=tiny_ngram())
    generate_corpora(cfg.corpora, tmp_path / "ref")  # one local worker
    (tmp_path / "faults").mkdir()
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "faults"))  # once across worker processes

    monkeypatch.setenv(ENV, KILL)
    generate_corpora(cfg.corpora, tmp_path / "lost", workers=2, engine="dask")
    assert list((tmp_path / "faults").iterdir())  # the kill did happen
    assert _shas(tmp_path / "lost") == _shas(tmp_path / "ref")
    SplitReader(tmp_path / "lost" / "corpus" / "ngram" / "train").verify()

    monkeypatch.setenv(ENV, KILL + "#0")  # every worker that tries shard 1 dies
    out = tmp_path / "dying"
    with pytest.raises(DataError) as err:
        generate_corpora(cfg.corpora, out, workers=2, engine="dask")
    msg = str(err.value)
    assert "shard 1 lost its Dask worker" in msg and "re-run" in msg and "\n" not in msg
    split = out / "corpus" / "ngram" / "train"
    assert not (split / "manifest.json").exists() and not (split / "shard-00001.arrow").exists()
    monkeypatch.delenv(ENV)
    generate_corpora(cfg.corpora, out, workers=2, engine="dask")
    assert _shas(out) == _shas(tmp_path / "ref")
    assert not list(split.glob(".*.tmp"))  # the killed writers' temp files are swept
