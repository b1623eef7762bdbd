"""DDP (gloo, 2 CPU processes): same data, same losses as one process, rank 0 writes."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from train_helpers import TINY, _one_thread, make_corpus, tcfg  # noqa: F401


def _worker(rank: int, world: int, port: int, corpus: str, out: str) -> None:
    import torch

    from hierlab.train.loop import train_model

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    train_model(TINY, tcfg(), Path(corpus), Path(out), device="cpu")


def _losses(path: Path, col: str) -> list[float]:
    with open(path) as fh:
        return [float(r[col]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    from hierlab.train.loop import train_model

    single = train_model(TINY, tcfg(), corpus, tmp_path / "single")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(corpus), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = tmp_path / "ddp"
    for name, col in (("loss.csv", "train_loss"), ("eval.csv", "test_loss")):
        a, b = _losses(single / name, col), _losses(ddp / name, col)
        assert len(a) == len(b)
        assert a == pytest.approx(b, rel=1e-4), name
    assert (ddp / "checkpoints" / "step-00000020" / "trainer_state.pt").exists()
