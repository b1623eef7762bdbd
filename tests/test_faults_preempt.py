"""Preemption (issue 20 item 1): SIGTERM/SIGINT during train saves a resume point at the next
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
from test_train_loop import TINY, make_corpus, read_csv, snapshot, tcfg

LOGGED = (("loss.csv", ("step", "tokens_seen", "train_loss", "lr", "grad_norm")),
          ("eval.csv", ("step", "tokens_seen", "test_loss")))


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    assert f"stopped after step {stop} of 20" in msg and "to resume" in msg and "\n" not in msg
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


def test_a_second_signal_stops_at_once(tmp_path):
    corpus = make_corpus(tmp_path)

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
        assert "stopped after step 7 of 20" in (out / f"stopped-rank{r}.txt").read_text()
    assert (out / "resume" / "step-00000007" / "trainer_state.pt").exists()
    _ddp(tmp_path, corpus, out)
    assert_same_run(tmp_path / "ref", out)
