"""Checkpoints: save, find and resume, so a run killed at any moment continues exactly.

``checkpoints/step-XXXXXXXX/`` holds ``save_pretrained`` weights (so TransformerLens,
nnsight and HF tools load it), the corpus tokenizer and ``state.json``. The latest one also
holds ``trainer_state.pt`` (optimizer, grad scaler, torch RNG, logging accumulators):
everything a resumed run needs, because the data position is the step itself. A checkpoint
is written to a temporary folder and renamed into place; a torn one is swept on start.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hierlab import __version__
from hierlab.errors import ConfigError, DataError
from hierlab.io import atomic_dir, list_step_dirs, read_json, step_dir
from hierlab.train.plan import TrainPlan

__all__ = ["TRAINER_STATE", "find_run_state", "load_resume", "prune_resume_state", "quiet_save",
           "save_checkpoint", "sweep_torn"]

TRAINER_STATE = "trainer_state.pt"
RESUME_DIR = "resume"  # models/<c>/resume/step-N/: a preemption's resume point, not a checkpoint


def resume_root(out_dir: Path) -> Path:
    """Where a preempted run leaves its resume point.

    Outside ``checkpoints/``, so that probes and ``eval.csv`` see only the schedule's
    checkpoints.

    Args:
        out_dir: the model's folder.

    Returns:
        ``out_dir/resume``.
    """
    return Path(out_dir) / RESUME_DIR


def find_run_state(out_dir: Path, plan: TrainPlan) -> tuple[bool, tuple[int, Path] | None]:
    """Whether a model's folder holds a finished run, or else where to resume it.

    A different run hash is a :class:`~hierlab.errors.ConfigError`, so a changed config
    never continues someone else's run.

    Args:
        out_dir: the model's folder.
        plan: this run's plan (its hash and step count).

    Returns:
        ``(finished, resume)``: ``resume`` is ``(step, folder)`` of the latest checkpoint
        or resume point that holds a trainer state, or None (start from scratch).
    """
    run_json = out_dir / "run.json"
    found: set[str] = set()
    if run_json.exists():
        try:
            found.add(json.loads(run_json.read_text()).get("config_hash"))
        except json.JSONDecodeError:
            raise DataError(f"{run_json}: corrupt (delete {out_dir} to retrain)") from None
    ckpts = list_step_dirs(out_dir / "checkpoints")
    states = {step: read_json(p / "state.json") for step, p in ckpts}
    points = list_step_dirs(resume_root(out_dir))
    point_states = {step: read_json(p / "state.json") for step, p in points}
    found |= {s.get("config_hash") for s in [*states.values(), *point_states.values()] if s}
    found.discard(None)
    if found and found != {plan.run_hash}:
        raise ConfigError(
            f"{out_dir}: trained with a different config (hash {sorted(found)[0]}, now "
            f"{plan.run_hash}); use another --out or delete {out_dir} to retrain"
        )
    final = states.get(plan.total_steps)
    if final is not None and run_json.exists():
        return True, None
    resumable = [(s, p) for s, p in ckpts if states[s] and (p / TRAINER_STATE).exists()]
    resumable += [(s, p) for s, p in points if point_states[s] and (p / TRAINER_STATE).exists()]
    return False, (max(resumable) if resumable else None)


def sweep_torn(ckpt_root: Path) -> None:
    """Remove the temporary folders of checkpoints whose write a kill interrupted.

    Args:
        ckpt_root: the model's ``checkpoints`` folder (its resume points are swept too).
    """
    for tmp in [*ckpt_root.glob(".tmp-*"), *resume_root(ckpt_root.parent).glob(".tmp-*")]:
        shutil.rmtree(tmp, ignore_errors=True)


def load_resume(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> dict[str, Any]:
    """Restore everything a resumed run needs from a checkpoint, so it continues bitwise.

    Args:
        path: the checkpoint (or resume point) folder.
        model: the freshly built model, loaded in place and moved to ``device``.
        optimizer: its optimizer, loaded in place.
        scaler: the grad scaler, loaded in place.
        device: where the model runs (the CUDA RNG is restored there).

    Returns:
        The logging accumulators saved with the checkpoint
        (:func:`hierlab.train.dist.accumulators`).
    """
    weights = load_file(str(path / "model.safetensors"), device="cpu")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise DataError(f"{path}: weights do not match the configured model")
    model.to(device)
    ts = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(ts["optimizer"])
    scaler.load_state_dict(ts["scaler"])
    torch.set_rng_state(ts["rng_cpu"])
    if device.type == "cuda" and ts.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ts["rng_cuda"], device)
    return ts["acc"]


def quiet_save(model: torch.nn.Module, path: Path) -> None:
    """``save_pretrained`` without transformers' per-save progress bar (ours is running).

    Args:
        model: the HF model.
        path: the folder to save into.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    *,
    plan: TrainPlan,
    corpus: str,
    corpus_dir: Path,
    seed: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    accumulators: dict[str, Any],
    train_loss: float | None,
    test_loss: float | None,
    learning_rate: float,
    resume_point: bool = False,
) -> None:
    """Publish checkpoint ``step`` atomically; only the new one keeps the resume state.

    Args:
        ckpt_root: the model's ``checkpoints`` folder (or :func:`resume_root` for a resume
            point).
        step: the optimizer steps taken.
        plan: the run's plan (tokens per step, run hash, step count) for ``state.json``.
        corpus: the corpus's name.
        corpus_dir: the corpus folder, whose tokenizer is copied in.
        seed: the run's seed.
        model: the (uncompiled, unwrapped) model, saved with ``save_pretrained``.
        optimizer: its optimizer, for the trainer state.
        scaler: the grad scaler, for the trainer state.
        device: where the model runs (its CUDA RNG is saved).
        accumulators: the logging accumulators (:func:`hierlab.train.dist.accumulators`).
        train_loss: the mean training loss since the last log step (None at step 0).
        test_loss: the test loss at ``step`` (None: not measured).
        learning_rate: the learning rate of the last step.
        resume_point: a preempted run's state at ``step``, dropped once a later checkpoint
            is saved.
    """
    final = step_dir(ckpt_root, step)
    # removed on error (a full disk: DiskFullError); swept on start if torn by a kill
    with atomic_dir(final, overwrite=True, prefix=f".tmp-{final.name}-") as tmp:
        _fill_checkpoint(tmp, step, plan=plan, corpus=corpus, corpus_dir=corpus_dir, seed=seed,
                         model=model, optimizer=optimizer, scaler=scaler, dev=device,
                         acc=accumulators, train_loss=train_loss, test_loss=test_loss,
                         lr=learning_rate, resume_point=resume_point)
    if resume_point:  # one resume point at a time
        for s, p in list_step_dirs(ckpt_root):
            if s != step:
                shutil.rmtree(p, ignore_errors=True)
    else:
        prune_resume_state(ckpt_root.parent, step)


def prune_resume_state(out_dir: Path, step: int) -> None:
    """Keep the resume state of checkpoint ``step`` only, so old trainer states do not pile up.

    Drops the trainer state of every other checkpoint and the resume points up to
    ``step``. A kill between a checkpoint's publish and this leaves both; the next save, or
    the finished run's check, prunes them.

    Args:
        out_dir: the model's folder.
        step: the checkpoint whose resume state is kept.
    """
    for s, p in list_step_dirs(Path(out_dir) / "checkpoints"):
        if s != step:
            (p / TRAINER_STATE).unlink(missing_ok=True)
    if resume_root(out_dir).is_dir():
        for s, p in list_step_dirs(resume_root(out_dir)):
            if s <= step:
                shutil.rmtree(p, ignore_errors=True)
        with contextlib.suppress(OSError):  # gone once empty
            resume_root(out_dir).rmdir()


def _fill_checkpoint(
    tmp: Path, step: int, *, plan: TrainPlan, corpus: str, corpus_dir: Path, seed: int,
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    dev: torch.device, acc: dict[str, Any], train_loss: float | None,
    test_loss: float | None, lr: float, resume_point: bool = False,
) -> None:
    quiet_save(model, tmp)
    tok_dir = corpus_dir / "tokenizer"
    if tok_dir.is_dir():
        for f in tok_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    state = {
        "step": step,
        "tokens_seen": step * plan.tokens_per_step,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "lr": lr,
        "seed": seed,
        "hierlab_version": __version__,
        "config_hash": plan.run_hash,
        "corpus": corpus,
        "total_steps": plan.total_steps,
        **({"resume_point": True} if resume_point else {}),
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "acc": dict(acc),
        },
        tmp / TRAINER_STATE,
    )
