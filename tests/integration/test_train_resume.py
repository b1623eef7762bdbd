"""Resume: a run killed at any moment (between or inside checkpoints, compiled or not)
continues to the uninterrupted run's losses and weights, bit for bit on CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hierlab.train.loop import train_model
from train_helpers import (  # noqa: F401 - _one_thread is an autouse fixture
    TINY,
    Killed,
    _one_thread,
    kill_at,
    make_corpus,
    read_csv,
    snapshot,
    tcfg,
)


# ----- resume ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kill", [7, 12, 13])
def test_resume_after_a_kill_reproduces_the_run_exactly(tmp_path: Path, kill: int) -> None:
    """Killed after step `kill` (between checkpoints, right at one, just after one), the
    continued run's losses and weights equal the uninterrupted run's bit for bit."""
    corpus = make_corpus(tmp_path)
    cfg = tcfg(precision="bf16")  # bf16 autocast on CPU, the presets' precision
    ref = train_model(TINY, cfg, corpus, tmp_path / "ref")
    with pytest.raises(Killed):
        train_model(TINY, cfg, corpus, tmp_path / "run", on_step=kill_at(kill))
    # a torn checkpoint and a torn csv line are tolerated
    (tmp_path / "run" / "checkpoints" / ".tmp-step-00000020-1").mkdir()
    with open(tmp_path / "run" / "loss.csv", "a") as fh:
        fh.write("14,3584,2.1")
    run = train_model(TINY, cfg, corpus, tmp_path / "run")
    for name, col in (
        ("loss.csv", "train_loss"),
        ("loss.csv", "grad_norm"),
        ("loss.csv", "lr"),
        ("eval.csv", "test_loss"),
    ):
        a = [(r["step"], r[col]) for r in read_csv(ref / name)]
        b = [(r["step"], r[col]) for r in read_csv(run / name)]
        assert a == b, name
    a = snapshot(ref / "checkpoints")
    b = snapshot(run / "checkpoints")
    assert sorted(a) == sorted(b)
    assert a["step-00000020/model.safetensors"] == b["step-00000020/model.safetensors"]
    assert not list((run / "checkpoints").glob(".tmp-*"))


# ----- kills at checkpoint boundaries ----------------------------------------------------------
def _csv_without_speed(path: Path) -> list[dict[str, str]]:
    """A run's CSV rows without the wall-clock ``tokens_per_s`` column."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_csv(path)]


@pytest.mark.parametrize(("when", "step"), [("after", 0), ("before", 5), ("after", 5),
                                            ("before", 12), ("after", 12), ("after", 20)])
def test_kill_at_a_checkpoint_boundary_resumes_to_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str, step: int
) -> None:
    """Killed right before or right after checkpoint ``step`` is published (the SIGKILL of
    ``HIERLAB_FAULTS`` kill@ / killafter@, simulated by an exception), the rerun ends with
    the uninterrupted run's eval.csv, loss.csv (minus tokens/s) and weights. Regression: a
    run resumed from the step-0 checkpoint evaluated and logged step 0 a second time."""
    import hierlab.faults as faults

    corpus = make_corpus(tmp_path)
    cfg = tcfg(precision="bf16", checkpoints={"schedule": "list", "steps": [0, 5, 12]})
    ref = train_model(TINY, cfg, corpus, tmp_path / "ref")

    def kill(pid: int, sig: int) -> None:
        raise Killed(step)

    monkeypatch.setattr(faults.os, "kill", kill)
    monkeypatch.setenv(faults.ENV, f"{'kill' if when == 'before' else 'killafter'}@"
                                   f"*/checkpoints/step-{step:08d}")
    with pytest.raises(Killed):
        train_model(TINY, cfg, corpus, tmp_path / "run")
    published = (tmp_path / "run" / "checkpoints" / f"step-{step:08d}").is_dir()
    assert published == (when == "after")
    monkeypatch.delenv(faults.ENV)
    run = train_model(TINY, cfg, corpus, tmp_path / "run")
    assert _csv_without_speed(run / "eval.csv") == _csv_without_speed(ref / "eval.csv")
    assert [r["step"] for r in read_csv(run / "eval.csv")] == ["0", "5", "12", "20"]
    assert _csv_without_speed(run / "loss.csv") == _csv_without_speed(ref / "loss.csv")
    a, b = snapshot(ref / "checkpoints"), snapshot(run / "checkpoints")
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith("model.safetensors"):
            assert a[name] == b[name], name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile (inductor) on CPU needs a C++ compiler")
def test_compiled_run_resumes_bitwise_against_a_compiled_run(tmp_path: Path) -> None:
    """A speed lever may not break resume. With ``training.compile`` a killed and
    resumed run equals the uninterrupted compiled run bit for bit (losses and weights)."""
    corpus = make_corpus(tmp_path)
    cfg = tcfg(precision="bf16", compile=True, checkpoints={"schedule": "list", "steps": [6]},
               max_tokens=8 * 32 * 10)
    ref = train_model(TINY, cfg, corpus, tmp_path / "ref")
    with pytest.raises(Killed):
        train_model(TINY, cfg, corpus, tmp_path / "run", on_step=kill_at(8))
    run = train_model(TINY, cfg, corpus, tmp_path / "run")
    a = [(r["step"], r["train_loss"], r["grad_norm"]) for r in read_csv(ref / "loss.csv")]
    b = [(r["step"], r["train_loss"], r["grad_norm"]) for r in read_csv(run / "loss.csv")]
    assert a == b and len(a) >= 3
    weights = "checkpoints/step-00000010/model.safetensors"
    assert (ref / weights).read_bytes() == (run / weights).read_bytes()


# A fresh process that generates a small corpus of the quickstart's PCFG into argv[1]; the
# compiled tests append what they train and print one JSON line.
_QUICKSTART_PCFG = """
import csv, json, sys
from pathlib import Path
import torch
from hierlab.config import load_config
from hierlab.corpus.generate import generate_corpora
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.loop import train_model
tmp = Path(sys.argv[1])
qs = load_config("quickstart")  # its corpus (fewer documents), model and training
pcfg = type(qs.corpora["pcfg"]).model_validate(
    {**qs.corpora["pcfg"].model_dump(), "train_documents": 20, "test_documents": 5})
corpus = generate_corpora({"pcfg": pcfg}, tmp)["pcfg"]
"""


def _fresh_process(body: str, folder: Path, *args: str) -> object:
    """Run the quickstart-PCFG prelude and ``body`` in a fresh Python; its last JSON line."""
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", _QUICKSTART_PCFG + body, str(folder), *args],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


_COMPILER = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                               reason="torch.compile (inductor) on CPU needs a C++ compiler")


@pytest.mark.slow
@_COMPILER
def test_compiled_runs_are_deterministic_at_the_quickstart_shape(tmp_path: Path) -> None:
    """Regression: compiled on 2 CPU threads, two identical runs of the quickstart
    model drifted apart from step ~4 until training ran under deterministic algorithms. In a
    fresh process: once a process has been set to one thread (this file's fixture), the
    drift no longer shows, so the fixture's process cannot test it."""
    res = _fresh_process("""
cfg = TrainingConfig(**{**qs.training.model_dump(), "compile": True, "log_every": 1,
                        "eval_tokens": 0, "max_tokens": 8 * 256 * 12,
                        "checkpoints": {"schedule": "list", "steps": [12]}})
losses = []
for i in range(2):
    run = train_model(qs.model, cfg, corpus, tmp / f"run{i}")
    losses.append([r["train_loss"] for r in csv.DictReader(open(run / "loss.csv"))])
print(json.dumps({"losses": losses, "threads": torch.get_num_threads(),
                  "deterministic_after": torch.are_deterministic_algorithms_enabled()}))
""", tmp_path)
    a, b = res["losses"]
    assert len(a) == 12 and a == b, (res["threads"], a, b)
    assert res["deterministic_after"] is False  # the caller's setting is back


@pytest.mark.slow
@_COMPILER
def test_a_compiled_model_trains_as_alone_after_another_shape(tmp_path: Path) -> None:
    """Regression: a model compiled after another model of another shape in the same
    process (the quickstart's copy model after the PCFG's) got dynamic-shape kernels and
    other losses than when compiled alone; compiling with static shapes makes it the same."""
    body = """
def cfg(batch, ctx, steps):
    return TrainingConfig(**{**qs.training.model_dump(), "compile": True, "log_every": 1,
        "batch_size": batch, "micro_batch_size": batch, "eval_tokens": 0,
        "max_tokens": batch * ctx * steps, "checkpoints": {"schedule": "list",
                                                           "steps": [steps]}})
small = ModelConfig(**{**qs.model.model_dump(), "context_length": 32})
if sys.argv[2] == "after":
    train_model(qs.model, cfg(8, 256, 6), corpus, tmp / "first")
run = train_model(small, cfg(32, 32, 12), corpus, tmp / "second")
print(json.dumps([r["train_loss"] for r in csv.DictReader(open(run / "loss.csv"))]))
"""
    losses = {mode: _fresh_process(body, tmp_path / mode, mode) for mode in ("alone", "after")}
    assert len(losses["alone"]) == 12 and losses["after"] == losses["alone"], losses


def test_kill_while_writing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill inside the checkpoint write leaves only a temp dir; the rerun resumes from the
    previous checkpoint and ends with the uninterrupted run's weights."""
    import hierlab.train.checkpoint as ckpt

    corpus = make_corpus(tmp_path)
    ref = train_model(TINY, tcfg(), corpus, tmp_path / "ref")
    real_save = ckpt.quiet_save

    def torn_save(model: torch.nn.Module, path: Path) -> None:
        real_save(model, path)
        if path.name.startswith(".tmp-step-00000012"):
            raise Killed(12)

    monkeypatch.setattr(ckpt, "quiet_save", torn_save)
    with pytest.raises(Killed):
        train_model(TINY, tcfg(), corpus, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir())[-1] == "step-00000005"
    # an error inside the write removes its temp dir (a real kill leaves it: swept on start)
    assert not list(ckpts.glob(".tmp-step-00000012-*"))
    monkeypatch.setattr(ckpt, "quiet_save", real_save)
    run = train_model(TINY, tcfg(), corpus, tmp_path / "run")
    assert read_csv(ref / "eval.csv") == read_csv(run / "eval.csv")
    assert (
        snapshot(ref / "checkpoints")["step-00000020/model.safetensors"]
        == snapshot(run / "checkpoints")["step-00000020/model.safetensors"]
    )


