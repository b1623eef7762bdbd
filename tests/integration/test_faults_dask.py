"""A lost Dask worker: killing one worker of a two-worker local cluster
mid-shard still ends with a complete corpus, byte-identical to a one-worker run; a shard
whose workers keep dying ends in one line, and a re-run completes it. No manifest ever
lists a partial shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpus_helpers import experiment, tiny_ngram
from hierlab.corpus.generate import generate_corpora
from hierlab.corpus.shards import SplitReader
from hierlab.faults import ENV, ENV_DIR

pytest.importorskip("dask.distributed")
pytestmark = pytest.mark.slow  # a local cluster starts worker processes (~10 s each run)


def _dask_corpus(cfg_path: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`hierlab corpus --engine dask --workers 2` in its own process: a cluster whose worker
    was killed leaves finalizers that may later SIGTERM a recycled pid, so it must not live
    in the test process."""
    keep = {k: v for k, v in os.environ.items() if k not in (ENV, ENV_DIR)}
    return subprocess.run([sys.executable, "-m", "hierlab", "corpus", str(cfg_path), "--out",
                           str(out), "--engine", "dask", "--workers", "2"],
                          capture_output=True, text=True, env={**keep, **env}, timeout=600)

KILL = "kill@*/train/shard-00001.arrow"  # SIGKILL the worker writing shard 1, mid-write


def _shas(run: Path) -> dict[str, list[str]]:
    return {s: [r["sha256"] for r in json.loads(
        (run / "corpus" / "ngram" / s / "manifest.json").read_text())["shards"]]
        for s in ("train", "test")}


def test_a_worker_killed_mid_shard_is_survived_and_a_dying_shard_is_one_line(
        tmp_path: Path) -> None:
    cfg = experiment(ngram=tiny_ngram())
    generate_corpora(cfg.corpora, tmp_path / "ref")  # one local worker
    cfg_path = tmp_path / "c.yml"
    cfg_path.write_text(json.dumps({"name": "t", "corpora": {"ngram": tiny_ngram()}}))
    faults = tmp_path / "faults"
    faults.mkdir()
    shared = {ENV_DIR: str(faults)}  # a fault fires once across the worker processes

    r = _dask_corpus(cfg_path, tmp_path / "lost", {**shared, ENV: KILL})
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(faults.iterdir())  # the kill did happen
    assert _shas(tmp_path / "lost") == _shas(tmp_path / "ref")
    SplitReader(tmp_path / "lost" / "corpus" / "ngram" / "train").verify()

    out = tmp_path / "dying"  # every worker that tries shard 1 dies
    r = _dask_corpus(cfg_path, out, {**shared, ENV: KILL + "#0"})
    errors = [ln[ln.index("error:"):] for ln in r.stderr.replace("\r", "\n").splitlines()
              if "error:" in ln]
    assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
    assert "shard 1 lost its Dask worker" in errors[0] and "re-run" in errors[0]
    split = out / "corpus" / "ngram" / "train"
    assert not (split / "manifest.json").exists() and not (split / "shard-00001.arrow").exists()
    assert _dask_corpus(cfg_path, out, {}).returncode == 0
    assert _shas(out) == _shas(tmp_path / "ref")
    assert not list(split.glob(".*.tmp"))  # the killed writers' temp files are swept
