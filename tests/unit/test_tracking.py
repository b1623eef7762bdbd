"""Experiment tracking (extra 'tracking'): TensorBoard and W&B offline, off by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierlab.errors import ConfigError
from hierlab.train.config import TrainingConfig
from hierlab.train.tracking import Tracker, backends_of, check_backends

KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "eval/loss")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def tb_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def wandb_run_bytes(out: Path, expect: tuple[bytes, ...] = (), timeout: float = 60.0) -> bytes:
    """The offline run's log; wandb-core may still be flushing it after ``finish()``
    returns (seen on a loaded machine), so wait until every ``expect`` is in it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        runs = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
        raw = runs[-1].read_bytes() if runs else b""
        if (runs and all(k in raw for k in expect)) or time.monotonic() > deadline:
            assert runs, f"no offline W&B run under {out / 'wandb'}"
            return raw
        time.sleep(0.2)


def test_off_by_default_and_backends() -> None:
    cfg = TrainingConfig()
    assert cfg.tracking == [] and backends_of(cfg) == []
    assert backends_of(TrainingConfig(tensorboard=True)) == ["tensorboard"]
    assert backends_of(TrainingConfig(tracking=["wandb"], tensorboard=True)) == [
        "wandb", "tensorboard"]
    with pytest.raises(ValueError, match="tracking"):
        TrainingConfig(tracking=["mlflow"])
    with pytest.raises(ConfigError, match="unknown backend"):
        check_backends(["mlflow"])
    t = Tracker([], Path("/nonexistent"), run_name="x")  # no backend: nothing written
    t.log({"train/loss": 1.0}, 1)
    t.close()


def test_tracker_logs_to_tensorboard_and_wandb_offline(tmp_path: Path, offline: None) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    out = tmp_path / "m"
    t = Tracker(["tensorboard", "wandb"], out, run_name="unit", config={"lr": 0.1})
    t.log({"train/loss": 2.5, "train/grad_norm": 0.75, "skipped": None}, 1)
    t.log({"eval/loss": 2.25}, 2)
    t.close()
    sc = tb_scalars(out)
    assert sc["train/loss"] == [(1, 2.5)] and sc["train/grad_norm"] == [(1, 0.75)]
    assert sc["eval/loss"] == [(2, 2.25)] and "skipped" not in sc
    raw = wandb_run_bytes(out, expect=(b"train/loss", b"train/grad_norm", b"eval/loss"))
    for key in (b"train/loss", b"train/grad_norm", b"eval/loss"):
        assert key in raw
    assert b"skipped" not in raw


def test_training_loop_tracks_loss_lr_grad_norm_and_eval(tmp_path: Path, offline: None) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from hierlab.train.loop import train_model
    from train_helpers import TINY, make_corpus, read_csv, tcfg

    corpus = make_corpus(tmp_path)
    out = train_model(TINY, tcfg(tracking=["tensorboard", "wandb"], wandb_project="t"), corpus,
                      tmp_path / "models" / "toy")
    sc = tb_scalars(out)
    assert set(KEYS) <= set(sc)
    loss = read_csv(out / "loss.csv")
    assert [s for s, _ in sc["train/grad_norm"]] == [int(r["step"]) for r in loss]
    assert [v for _, v in sc["train/grad_norm"]] == pytest.approx(
        [float(r["grad_norm"]) for r in loss], rel=1e-5)
    assert [s for s, _ in sc["eval/loss"]] == [int(r["step"]) for r in read_csv(out / "eval.csv")]
    raw = wandb_run_bytes(out, expect=tuple(k.encode() for k in KEYS))
    for key in KEYS:
        assert key.encode() in raw, key


def test_probe_summary_after_the_probe_stage(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from figures_fixtures import make_synthetic_run
    from hierlab.config import load_config
    from hierlab.pipeline import track_probe_summary

    run = make_synthetic_run(tmp_path, n_ckpt=4, probes=("induction", "hydra"))
    cfg = load_config(None)
    cfg.training.tracking = ["tensorboard"]
    paths = {p: run / "metrics" / f"{p}.parquet" for p in ("induction", "hydra")}
    track_probe_summary(cfg, run, paths)
    sc = tb_scalars(run / "metrics")
    comp = sc["probe/pcfg/hydra/standard/compensation"]
    assert [s for s, _ in comp] == [100, 200, 300, 400]
    import pandas as pd

    t = pd.read_parquet(paths["hydra"])
    t = t[(t.model == "pcfg") & (t.variant == "standard") & (t.metric == "compensation")]
    assert [v for _, v in comp] == pytest.approx(t.groupby("step").value.max().tolist())
