"""Training every corpus of an experiment (``train_corpora``), at once or one after the
other, and the ``hierlab train`` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierlab.errors import ConfigError, DataError
from tiny import tiny_experiment, write_tiny_config
from train_helpers import (  # noqa: F401 - _one_thread is an autouse fixture
    TINY,
    _one_thread,
    make_corpus,
    read_csv,
    snapshot,
    tcfg,
)


def _sections(**training: object) -> dict:
    """The tiny config's sections for the toy corpora: TINY's model and tcfg()'s training."""
    return {"model": TINY.model_dump(mode="json", exclude_none=True),
            "training": tcfg(**training).model_dump(mode="json", exclude_none=True)}


def test_train_corpora_and_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hierlab.cli import app
    from hierlab.config import load_config
    from hierlab.train.loop import train_corpora

    run_dir = tmp_path / "run"
    make_corpus(run_dir)
    cfg_path = write_tiny_config(
        tmp_path / "tiny.yml", corpora={"toy": {"kind": "pcfg"}},
        **_sections(max_tokens=8 * 32 * 4, checkpoints={"schedule": "linear", "count": 2}))
    cfg = load_config(cfg_path)
    with pytest.raises(ConfigError, match="--corpus: 'other'"):
        train_corpora(cfg.model, cfg.training, cfg.corpora, run_dir, only="other")
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(cfg_path), "--out", str(run_dir), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    model_dir = run_dir / "models" / "toy"
    assert (model_dir / "checkpoints" / "step-00000004" / "state.json").exists()
    assert [int(r["step"]) for r in read_csv(model_dir / "eval.csv")] == [2, 4]
    # a runtime error is one line and exit status 1
    res = runner.invoke(app, ["train", str(cfg_path), "--out", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no train split" in res.output
    again = train_corpora(cfg.model, cfg.training, cfg.corpora, run_dir, only="toy")
    assert again == {"toy": model_dir}  # finished: skipped


def test_corpora_trained_at_once_equal_one_after_the_other(tmp_path: Path) -> None:
    """Two corpora in two processes (one thread each) give the very bytes of training them
    one after the other; a worker's error reaches the caller as itself."""
    from hierlab.train.loop import concurrent_corpora, train_corpora

    for run in ("serial", "parallel"):
        for name in ("a", "b"):
            corpus = make_corpus(tmp_path / run)
            corpus.rename(corpus.parent / name)
    two = {"a": {"kind": "pcfg"}, "b": {"kind": "pcfg"}}
    serial = tiny_experiment(name="two", corpora=two, **_sections(parallel_corpora=1))
    both = tiny_experiment(name="two", corpora=two, **_sections(parallel_corpora=2, threads=1))
    assert concurrent_corpora(serial.training, 2, "cpu") == 1
    assert concurrent_corpora(both.training, 2, "cpu") == 2
    assert concurrent_corpora(both.training, 1, "cpu") == 1
    a = train_corpora(serial.model, serial.training, serial.corpora, tmp_path / "serial",
                      device="cpu")
    b = train_corpora(both.model, both.training, both.corpora, tmp_path / "parallel",
                      device="cpu")
    assert list(a) == list(b) == ["a", "b"]
    for name in ("a", "b"):
        for f in ("loss.csv", "eval.csv"):
            rows = [{k: v for k, v in r.items() if k != "tokens_per_s"}
                    for r in read_csv(a[name] / f)]
            assert rows == [{k: v for k, v in r.items() if k != "tokens_per_s"}
                            for r in read_csv(b[name] / f)]
        weights = "checkpoints/step-00000020/model.safetensors"
        assert snapshot(a[name])[weights] == snapshot(b[name])[weights]
    (tmp_path / "broken" / "corpus").mkdir(parents=True)
    with pytest.raises(DataError, match="no train split"):
        train_corpora(both.model, both.training, both.corpora, tmp_path / "broken",
                      device="cpu")
