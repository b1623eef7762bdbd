"""Preemption: SIGTERM/SIGINT during train saves a resume point at the next
step boundary, says where and how to resume, exits non-zero; the rerun is bitwise the
uninterrupted run (weights, loss.csv, eval.csv). probe, corpus and sweep stop between units.
torchrun ranks agree on the stop step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from hierlab.errors import Preempted
from hierlab.train.loop import train_model
from train_helpers import (  # noqa: F401 - _one_thread is an autouse fixture
    TINY,
    _one_thread,
    make_corpus,
    read_csv,
    snapshot,
    tcfg,
)

LOGGED = (("loss.csv", ("step", "tokens_seen", "train_loss", "lr", "grad_norm")),
          ("eval.csv", ("step", "tokens_seen", "test_loss")))


def signal_at(n: int, sig: int = signal.SIGTERM):  # noqa: ANN201
    """A real signal to this process after step ``n`` (as a scheduler would send it)."""
    def hook(step: int) -> None:
        if step == n:
            os.kill(os.getpid(), sig)
    return hook


def assert_same_run(ref: Path, run: Path) -> None:
    for name, cols in LOGGED:
        a = [tuple(r[c] for c in cols) for r in read_csv(ref / name)]
        b = [tuple(r[c] for c in cols) for r in read_csv(run / name)]
        assert a == b, name
    a, b = snapshot(ref / "checkpoints"), snapshot(run / "checkpoints")
    assert sorted(a) == sorted(b)
    for k in a:
        if k.endswith(".safetensors"):
            assert a[k] == b[k], k


@pytest.mark.parametrize(("stop", "sig"), [(7, signal.SIGTERM), (12, signal.SIGINT)])
def test_signal_during_train_saves_a_resume_point_and_resumes_bitwise(tmp_path, stop, sig):
    corpus = make_corpus(tmp_path)
    cfg = tcfg(precision="bf16")
    ref = train_model(TINY, cfg, corpus, tmp_path / "ref")
    out = tmp_path / "run"
    with pytest.raises(Preempted) as err:
        train_model(TINY, cfg, corpus, out, on_step=signal_at(stop, sig))
    assert err.value.exit_code == 128 + sig
    msg = str(err.value)
    assert f"at step {stop} of 20" in msg and "to resume" in msg and "\n" not in msg
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    if stop == 7:  # between checkpoints: a resume point aside, not a schedule checkpoint
        assert ckpts == ["step-00000005"]
        point = out / "resume" / "step-00000007"
        assert str(point) in msg
        assert json.loads((point / "state.json").read_text())["resume_point"] is True
        assert [r["step"] for r in read_csv(out / "eval.csv")] == ["5"]
    else:  # at a schedule checkpoint: that checkpoint is the resume point
        assert ckpts == ["step-00000005", "step-00000012"] and not (out / "resume").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    train_model(TINY, cfg, corpus, out)
    assert_same_run(ref, out)
    assert not (out / "resume").exists()  # dropped once a later checkpoint is saved


def test_a_second_signal_stops_at_once(tmp_path, monkeypatch):
    from hierlab import preempt

    corpus = make_corpus(tmp_path)
    monkeypatch.setattr(preempt, "_SAME_SIGNAL_S", 0.0)  # else a repeat within 2 s is the same

    def twice(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        train_model(TINY, tcfg(), corpus, tmp_path / "run", on_step=twice)
    assert not (tmp_path / "run" / "resume").exists()


def _ddp_worker(rank: int, world: int, port: int, corpus: str, out: str, fault: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    if fault:
        os.environ["HIERLAB_FAULTS"] = fault
    try:
        train_model(TINY, tcfg(), Path(corpus), Path(out), device="cpu")
    except Preempted as err:
        (Path(out) / f"stopped-rank{rank}.txt").write_text(str(err))


def _ddp(tmp_path: Path, corpus: Path, out: Path, fault: str = "") -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(corpus), str(out), fault), nprocs=2, join=True)


@pytest.mark.slow
def test_torchrun_ranks_agree_on_the_stop_step_and_resume_bitwise(tmp_path):
    """SIGTERM reaches rank 1 only, after step 7: both ranks stop after step 7 (the flag is
    all-reduced), rank 0 saves the resume point, and the resumed 2-rank run equals the
    uninterrupted one bit for bit (each rank's loss accumulator is kept)."""
    corpus = make_corpus(tmp_path)
    _ddp(tmp_path, corpus, tmp_path / "ref")
    out = tmp_path / "run"
    _ddp(tmp_path, corpus, out, fault="sigterm@train:7:1")
    for r in (0, 1):
        assert "at step 7 of 20" in (out / f"stopped-rank{r}.txt").read_text()
    assert (out / "resume" / "step-00000007" / "trainer_state.pt").exists()
    _ddp(tmp_path, corpus, out)
    assert_same_run(tmp_path / "ref", out)


def test_signal_during_probe_finishes_the_unit_and_stops(tmp_path, monkeypatch):
    import pandas as pd

    from hierlab.probes import runner as rmod
    from probes_helpers import make_run, tiny_probes_config

    run = make_run(tmp_path, corrupt=None)
    cfg, kw = tiny_probes_config(), dict(probes="hydra,structure", variant="both")
    real, calls = rmod.probe_checkpoint, []

    def signalled(ctx, probe, variant):  # noqa: ANN001, ANN202
        calls.append(probe)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-unit
        return real(ctx, probe, variant)

    monkeypatch.setattr(rmod, "probe_checkpoint", signalled)
    with pytest.raises(Preempted, match="probe: before") as err:
        rmod.run_probes(cfg, run, **kw)
    assert err.value.exit_code == 143
    parts = list((run / "metrics" / ".parts").rglob("*.parquet"))
    assert len(parts) == 3 and not (run / "metrics" / "hydra.parquet").exists()
    monkeypatch.setattr(rmod, "probe_checkpoint", real)
    paths = rmod.run_probes(cfg, run, **kw)
    assert set(pd.read_parquet(paths["hydra"]).step) == {10, 20}
    assert len(list((run / "metrics" / ".parts").rglob("*.parquet"))) == 8


def test_signal_during_corpus_finishes_the_shard_and_stops(tmp_path, monkeypatch):
    from corpus_helpers import experiment, tiny_ngram
    from hierlab.corpus import generate as gen

    cfg = experiment(ngram=tiny_ngram())
    gen.generate_corpora(cfg.corpora, tmp_path / "ref")
    real = gen.build_shard

    def signalled(cfg_json, split, index, split_dir):  # noqa: ANN001, ANN202
        if split == "train" and index == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while shard 1 is built
        return real(cfg_json, split, index, split_dir)

    monkeypatch.setattr(gen, "build_shard", signalled)
    with pytest.raises(Preempted, match="after 2 of 3 shards") as err:
        gen.generate_corpora(cfg.corpora, tmp_path / "run")
    assert err.value.exit_code == 130
    split = tmp_path / "run" / "corpus" / "ngram" / "train"
    assert sorted(p.name for p in split.glob("shard-?????.arrow")) == [
        "shard-00000.arrow", "shard-00001.arrow"] and not (split / "manifest.json").exists()
    monkeypatch.setattr(gen, "build_shard", real)
    gen.generate_corpora(cfg.corpora, tmp_path / "run")
    for s in ("train", "test"):
        a = json.loads((tmp_path / "ref/corpus/ngram" / s / "manifest.json").read_text())
        b = json.loads((tmp_path / "run/corpus/ngram" / s / "manifest.json").read_text())
        assert [r["sha256"] for r in a["shards"]] == [r["sha256"] for r in b["shards"]]


def test_cli_train_sigterm_one_line_exit_143_then_resumes(tmp_path, monkeypatch):
    """The CLI: SIGTERM after step 1 (a scheduler's preemption) -> one line, status 143."""
    from typer.testing import CliRunner

    from hierlab.cli import app
    from tiny import write_tiny_config

    run_dir = tmp_path / "run"
    make_corpus(run_dir)
    cfg_path = write_tiny_config(
        tmp_path / "tiny.yml", corpora={"toy": {"kind": "pcfg"}},
        model=TINY.model_dump(mode="json", exclude_none=True),
        training=tcfg(max_tokens=8 * 32 * 4, checkpoints={"schedule": "linear", "count": 2}
                      ).model_dump(mode="json", exclude_none=True))
    args = ["train", str(cfg_path), "--out", str(run_dir)]
    monkeypatch.setenv("HIERLAB_FAULTS", "sigterm@train:1")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 143, res.output
    lines = [ln for ln in res.output.splitlines() if "stopped:" in ln]
    assert len(lines) == 1 and "at step 1 of 4" in lines[0] and "to resume" in lines[0]
    assert (run_dir / "models" / "toy" / "resume" / "step-00000001").is_dir()
    monkeypatch.delenv("HIERLAB_FAULTS")
    assert CliRunner().invoke(app, args).exit_code == 0
    assert [int(x["step"]) for x in read_csv(run_dir / "models/toy/eval.csv")] == [2, 4]
