"""The training plan: every check a user can fail, and every size fixed before step one.

:func:`prepare` reads the corpus manifest and the windows, refuses bad input with a message
naming the field, and returns a :class:`TrainPlan`. Nothing is written before it returns,
so a refused run leaves no trace. The plan's ``run_hash`` identifies the model a run
would train (see :mod:`hierlab.contracts`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hierlab import __version__
from hierlab.corpus.shards import read_manifest
from hierlab.errors import ConfigError, DataError
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.data import TokenWindows
from hierlab.train.dist import Dist
from hierlab.train.model import resolve_vocab_size
from hierlab.train.schedule import checkpoint_steps, log_interval

__all__ = ["Prepared", "TrainPlan", "prepare", "run_hash", "run_info"]


@dataclass(frozen=True)
class TrainPlan:
    """Everything fixed before the first step: sizes, steps, checkpoints, the run hash.

    Attributes:
        total_steps: optimizer steps of the run.
        checkpoint_steps: the steps after which a checkpoint is saved, ascending.
        log_every: steps between ``loss.csv`` rows.
        per_rank_batch: windows each rank trains on per step.
        micro_batch: windows per forward/backward pass (gradient accumulation below it).
        context_length: tokens per window.
        batch_size: the global batch in windows.
        run_hash: the identity of the model the run trains (:func:`run_hash`).
    """

    total_steps: int
    checkpoint_steps: list[int]
    log_every: int
    per_rank_batch: int
    micro_batch: int
    context_length: int
    batch_size: int
    run_hash: str

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one global batch: ``batch_size`` x ``context_length``."""
        return self.batch_size * self.context_length


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` hands the loop: the manifest, the data and the plan.

    Attributes:
        manifest: the train split's manifest.
        windows: the train split's windows.
        test: the test split's windows (None with ``eval_tokens: 0``).
        vocab: the vocabulary size.
        plan: the plan.
    """

    manifest: dict[str, Any]
    windows: TokenWindows
    test: TokenWindows | None
    vocab: int
    plan: TrainPlan


#: training fields that change where and how fast a model trains, not which model: a run
#: may resume under other values (like another device, they may change the last bits)
NOT_HASHED = {"device", "tensorboard", "tracking", "wandb_project", "adamw", "attention",
              "threads", "parallel_corpora"}


def run_hash(model_cfg: ModelConfig, train_cfg: TrainingConfig, manifest: dict) -> str:
    """The identity of the model a run trains, so a changed config never resumes a run.

    Args:
        model_cfg: the model section.
        train_cfg: the training section; the fields of :data:`NOT_HASHED` are left out.
        manifest: the train split's manifest (its config hash, size and vocabulary).

    Returns:
        16 hex digits; equal hashes mean the same model would be trained.
    """
    blob = {
        "model": model_cfg.model_dump(mode="json"),
        "training": train_cfg.model_dump(
            mode="json",
            # decay_fraction shapes only wsd: left out otherwise, so older runs keep their hash
            exclude=NOT_HASHED | ({"decay_fraction"} if train_cfg.schedule != "wsd" else set()),
        ),
        "corpus": {
            "config_hash": manifest.get("config_hash"),
            "total_tokens": manifest.get("total_tokens"),
            "vocab_size": manifest.get("vocab_size"),
        },
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _windows(split_dir: Path, ctx: int, train_cfg: TrainingConfig) -> TokenWindows:
    return TokenWindows(
        split_dir,
        ctx,
        align_to_documents=train_cfg.align_to_documents,
        keep_boundary_token=train_cfg.keep_boundary_token,
    )


def prepare(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpus_dir: Path,
    device: torch.device,
    dist: Dist,
) -> Prepared:
    """Validate the inputs and make the plan, before anything is written.

    Args:
        model_cfg: the model section.
        train_cfg: the training section.
        corpus_dir: the corpus folder (its ``train`` and ``test`` splits).
        device: where the model will run (fp16 needs CUDA).
        dist: this process's place in the job (the batch must divide among the ranks).

    Returns:
        The manifest, the windows and the plan. Bad input is a
        :class:`~hierlab.errors.ConfigError` or :class:`~hierlab.errors.DataError` naming
        the field or file.
    """
    train_dir, test_dir = corpus_dir / "train", corpus_dir / "test"
    if not (train_dir / "manifest.json").exists():
        raise DataError(f"{train_dir}: no train split (generate the corpus first: hierlab corpus)")
    manifest = read_manifest(train_dir)
    vocab = resolve_vocab_size(model_cfg, manifest, str(train_dir / "manifest.json"))
    ctx = model_cfg.context_length
    if train_cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("training.precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if train_cfg.batch_size % dist.world:
        raise ConfigError(
            f"training.batch_size: {train_cfg.batch_size} is not divisible by the "
            f"{dist.world} ranks"
        )
    windows = _windows(train_dir, ctx, train_cfg)
    windows.check_ids()
    if windows.n_windows < train_cfg.batch_size:
        raise DataError(
            f"training.batch_size: {train_cfg.batch_size} sequences per step, but {train_dir} "
            f"holds only {windows.n_windows} windows of {ctx} tokens; lower the batch size or "
            "generate more data"
        )
    test: TokenWindows | None = None
    if train_cfg.eval_tokens > 0:
        if not (test_dir / "manifest.json").exists():
            raise DataError(
                f"{test_dir}: no test split (generate it, or set training.eval_tokens: 0)"
            )
        test = _windows(test_dir, ctx, train_cfg)  # laid out like the train windows
        if test.vocab_size != vocab:
            raise DataError(
                f"{test_dir}: vocab_size {test.vocab_size} differs from the train split's {vocab}"
            )
        if test.n_windows == 0:
            raise DataError(f"{test_dir}: fewer than {ctx} tokens, no test window")
        test.check_ids()
    if train_cfg.max_tokens is not None:
        samples = train_cfg.max_tokens // ctx
    else:
        samples = int(train_cfg.epochs * windows.n_windows)
    total_steps = samples // train_cfg.batch_size
    if total_steps < 1:
        raise ConfigError(
            f"training.max_tokens: {train_cfg.max_tokens} tokens is less than one batch of "
            f"{train_cfg.batch_size} x {ctx} tokens"
        )
    per_rank = train_cfg.batch_size // dist.world
    plan = TrainPlan(
        total_steps=total_steps,
        checkpoint_steps=checkpoint_steps(train_cfg.checkpoints, total_steps),
        log_every=log_interval(train_cfg.log_every, total_steps),
        per_rank_batch=per_rank,
        micro_batch=min(train_cfg.micro_batch_size or 64, per_rank),
        context_length=ctx,
        batch_size=train_cfg.batch_size,
        run_hash=run_hash(model_cfg, train_cfg, manifest),
    )
    return Prepared(manifest, windows, test, vocab, plan)


def run_info(
    name: str,
    manifest: dict,
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    plan: TrainPlan,
    model: torch.nn.Module,
) -> dict[str, Any]:
    """The contents of ``run.json``: what was trained, on what, with which hash.

    Args:
        name: the corpus's name.
        manifest: the train split's manifest (kind, vocabulary, ids, loss floors).
        model_cfg: the model section.
        train_cfg: the training section.
        plan: the run's plan.
        model: the model, to count its parameters.

    Returns:
        The JSON-ready record.
    """
    return {
        "corpus": name,
        "kind": manifest.get("kind"),
        "vocab_size": manifest.get("vocab_size"),
        "loss_floors": manifest.get("loss_floors", {}),
        "eos_id": manifest.get("eos_id"),
        "boundary_id": manifest.get("boundary_id"),
        "num_layers": model_cfg.num_layers,
        "hidden_size": model_cfg.hidden_size,
        "num_heads": model_cfg.num_heads,
        "intermediate_size": model_cfg.ffn_size,
        "context_length": model_cfg.context_length,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "seed": train_cfg.seed,
        "batch_size": plan.batch_size,
        "tokens_per_step": plan.tokens_per_step,
        "total_steps": plan.total_steps,
        "total_tokens": plan.total_steps * plan.tokens_per_step,
        "checkpoint_steps": plan.checkpoint_steps,
        "config_hash": plan.run_hash,
        "corpus_config_hash": manifest.get("config_hash"),
        "hierlab_version": __version__,
        "model": model_cfg.model_dump(mode="json"),
        "training": train_cfg.model_dump(mode="json"),
    }
