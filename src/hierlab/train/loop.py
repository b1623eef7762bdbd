"""The training loop: one model per corpus, read top to bottom (nanoGPT style).

``train_corpora`` trains every corpus of an experiment; ``train_model`` trains one. The
hot loop is plain torch: gather windows -> forward/backward over micro-batches -> clip ->
AdamW step. Optional ``torchrun`` DDP (each rank takes a strided slice of the same global
batch; rank 0 writes). Everything a resumed run needs (weights, optimizer, RNG, logging
accumulators) is in the latest checkpoint; the data position is the step itself, because
the window order is a pure function of (seed, sample index). A run killed at any moment
therefore continues from its latest checkpoint and reproduces the uninterrupted losses
bit for bit on CPU.

Outputs (notes/CONTRACTS.md): ``run.json``, ``loss.csv``, ``eval.csv`` and
``checkpoints/step-XXXXXXXX/`` (save_pretrained + tokenizer + state.json; the latest one
also holds ``trainer_state.pt``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from hierlab import __version__
from hierlab.corpus.shards import read_manifest
from hierlab.errors import ConfigError, DataError
from hierlab.io import atomic_write_json, atomic_write_text, make_temp_dir, publish_dir
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.data import TokenWindows, WindowOrder, batch_positions, eval_window_indices
from hierlab.train.model import build_model, resolve_vocab_size
from hierlab.train.schedule import checkpoint_steps, log_interval, lr_at
from hierlab.train.tracking import Tracker, backends_of, check_backends

if TYPE_CHECKING:
    from hierlab.config import ExperimentConfig

__all__ = ["train_corpora", "train_model", "TrainPlan"]

log = logging.getLogger(__name__)

LOSS_COLUMNS = ["step", "tokens_seen", "train_loss", "lr", "grad_norm", "tokens_per_s"]
EVAL_COLUMNS = ["step", "tokens_seen", "test_loss"]
TRAINER_STATE = "trainer_state.pt"


# ----- distributed helpers --------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_setup(device_type: str) -> tuple[Dist, bool]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (dist, we_created_it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), False
    import torch.distributed as tdist

    created = False
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        created = True
    local = int(os.environ.get("LOCAL_RANK", 0))
    return Dist(tdist.get_rank(), tdist.get_world_size(), local), created


def _barrier(dist: Dist) -> None:
    if dist.world > 1:
        torch.distributed.barrier()


def _all_reduce(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.world > 1:
        torch.distributed.all_reduce(t)
    return t


# ----- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainPlan:
    """Everything fixed before the first step: sizes, steps, checkpoints, the config hash."""

    total_steps: int
    checkpoint_steps: list[int]
    log_every: int
    per_rank_batch: int
    micro_batch: int
    context_length: int
    batch_size: int
    config_hash: str

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length


def _run_hash(model_cfg: ModelConfig, train_cfg: TrainingConfig, manifest: dict) -> str:
    """Equal hashes mean the same model would be trained: configs (minus the device and
    the TensorBoard switch) plus the identity of the train split."""
    blob = {
        "model": model_cfg.model_dump(mode="json"),
        "training": train_cfg.model_dump(
            mode="json", exclude={"device", "tensorboard", "tracking", "wandb_project"}
        ),
        "corpus": {
            "config_hash": manifest.get("config_hash"),
            "total_tokens": manifest.get("total_tokens"),
            "vocab_size": manifest.get("vocab_size"),
        },
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _resolve_device(requested: str | None) -> torch.device:
    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"training.device: unknown device {name!r} (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device: {name!r} requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"training.device: {name!r} is not supported (cpu, cuda, cuda:N)")
    return device


# ----- checkpoints and logs ---------------------------------------------------------------------
def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def _list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit():
                out.append((int(p.name[5:]), p))
    return sorted(out)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _truncate_csv(path: Path, columns: list[str], last_step: int) -> None:
    """Keep the header and the complete rows with step <= last_step (drops a torn last line
    left by a kill), rewritten atomically."""
    rows: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) != len(columns):
                continue
            try:
                step = int(parts[0])
            except ValueError:
                continue
            if step <= last_step:
                rows.append(line)
    atomic_write_text(path, "\n".join([",".join(columns), *rows]) + "\n")


class _CsvLog:
    """An append-only CSV, flushed per row so a kill loses at most the row being written."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._fh, lineterminator="\n")

    def row(self, values: list[Any]) -> None:
        self._writer.writerow(values)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _quiet_save(model: torch.nn.Module, path: Path) -> None:
    """save_pretrained without transformers' per-save progress bar (ours is running)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


# ----- the public API ---------------------------------------------------------------------------
def train_corpora(
    cfg: ExperimentConfig, run_dir: Path, only: str | None = None, device: str | None = None
) -> dict[str, Path]:
    """Train one model per corpus of ``cfg`` on ``run_dir/corpus/<name>``; returns the model
    folders ``run_dir/models/<name>``. Finished models are skipped, killed ones resumed."""
    run_dir = Path(run_dir)
    names = list(cfg.corpora)
    if only is not None:
        if only not in cfg.corpora:
            raise ConfigError(
                f"--corpus: {only!r} is not a corpus of the config (corpora: {', '.join(names)})"
            )
        names = [only]
    if not names:
        raise ConfigError("corpora: the config lists no corpus to train on")
    out: dict[str, Path] = {}
    for name in names:
        out[name] = train_model(
            cfg.model,
            cfg.training,
            run_dir / "corpus" / name,
            run_dir / "models" / name,
            corpus_name=name,
            device=device,
        )
    return out


def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpus_dir: Path,
    out_dir: Path,
    *,
    corpus_name: str | None = None,
    device: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Train (or resume, or skip if finished) one model on ``corpus_dir/{train,test}``.

    ``on_step(step)`` is called after every optimizer step (tests use it to simulate a
    kill). Every check a user can fail runs before anything is written.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    name = corpus_name or corpus_dir.name
    dev = _resolve_device(device or train_cfg.device)
    dist, owns_group = _dist_setup(dev.type)
    if dev.type == "cuda" and dist.world > 1:
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    try:
        return _train(model_cfg, train_cfg, corpus_dir, out_dir, name, dev, dist, on_step)
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


def _prepare(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpus_dir: Path,
    dev: torch.device,
    dist: Dist,
) -> tuple[dict, TokenWindows, TokenWindows | None, int, TrainPlan]:
    """Validate inputs and make the plan; raises before anything is written."""
    train_dir, test_dir = corpus_dir / "train", corpus_dir / "test"
    if not (train_dir / "manifest.json").exists():
        raise DataError(f"{train_dir}: no train split (generate the corpus first: hierlab corpus)")
    manifest = read_manifest(train_dir)
    vocab = resolve_vocab_size(model_cfg, manifest, str(train_dir / "manifest.json"))
    ctx = model_cfg.context_length
    if train_cfg.precision == "fp16" and dev.type != "cuda":
        raise ConfigError("training.precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if train_cfg.batch_size % dist.world:
        raise ConfigError(
            f"training.batch_size: {train_cfg.batch_size} is not divisible by the "
            f"{dist.world} ranks"
        )
    windows = TokenWindows(
        train_dir,
        ctx,
        align_to_documents=train_cfg.align_to_documents,
        keep_boundary_token=train_cfg.keep_boundary_token,
    )
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
        test = TokenWindows(  # laid out like the train windows, so the losses compare
            test_dir,
            ctx,
            align_to_documents=train_cfg.align_to_documents,
            keep_boundary_token=train_cfg.keep_boundary_token,
        )
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
    micro = min(train_cfg.micro_batch_size or 64, per_rank)
    plan = TrainPlan(
        total_steps=total_steps,
        checkpoint_steps=checkpoint_steps(train_cfg.checkpoints, total_steps),
        log_every=log_interval(train_cfg.log_every, total_steps),
        per_rank_batch=per_rank,
        micro_batch=micro,
        context_length=ctx,
        batch_size=train_cfg.batch_size,
        config_hash=_run_hash(model_cfg, train_cfg, manifest),
    )
    return manifest, windows, test, vocab, plan


def _check_run_dir(out_dir: Path, plan: TrainPlan) -> tuple[bool, tuple[int, Path] | None]:
    """(finished, latest resumable checkpoint); a different config hash is an error."""
    run_json = out_dir / "run.json"
    found: set[str] = set()
    if run_json.exists():
        try:
            found.add(json.loads(run_json.read_text()).get("config_hash"))
        except json.JSONDecodeError:
            raise DataError(f"{run_json}: corrupt (delete {out_dir} to retrain)") from None
    ckpts = _list_checkpoints(out_dir / "checkpoints")
    states = {step: _read_state(p) for step, p in ckpts}
    found |= {s.get("config_hash") for s in states.values() if s}
    found.discard(None)
    if found and found != {plan.config_hash}:
        raise ConfigError(
            f"{out_dir}: trained with a different config (hash {sorted(found)[0]}, now "
            f"{plan.config_hash}); use another --out or delete {out_dir} to retrain"
        )
    final = states.get(plan.total_steps)
    if final is not None and (out_dir / "run.json").exists():
        return True, None
    resumable = [(s, p) for s, p in ckpts if states[s] and (p / TRAINER_STATE).exists()]
    return False, (resumable[-1] if resumable else None)


def _train(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpus_dir: Path,
    out_dir: Path,
    name: str,
    dev: torch.device,
    dist: Dist,
    on_step: Callable[[int], None] | None,
) -> Path:
    manifest, windows, test, vocab, plan = _prepare(model_cfg, train_cfg, corpus_dir, dev, dist)
    finished, resume = _check_run_dir(out_dir, plan)
    if finished:
        log.info(
            "%s: finished model found in %s (config %s); skipping", name, out_dir, plan.config_hash
        )
        return out_dir
    ckpt_root = out_dir / "checkpoints"

    # --- model, optimizer, precision ----------------------------------------------------------
    raw_model = build_model(
        model_cfg,
        vocab,
        train_cfg.seed,
        eos_id=manifest.get("eos_id"),
        pad_id=manifest.get("pad_id"),
        bos_id=manifest.get("boundary_id"),
    )
    decay = [p for p in raw_model.parameters() if p.dim() >= 2]
    no_decay = [p for p in raw_model.parameters() if p.dim() < 2]
    raw_model.to(dev)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=train_cfg.lr,
        betas=tuple(train_cfg.betas),
        eps=train_cfg.eps,
        fused=dev.type == "cuda",
    )
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[train_cfg.precision]
    scaler = torch.amp.GradScaler("cuda", enabled=train_cfg.precision == "fp16")

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=amp_dtype)

    # --- resume --------------------------------------------------------------------------------
    start_step, acc = 0, {"loss_sum": 0.0, "loss_n": 0, "tokens_since": 0}
    if resume is not None:
        start_step, path = resume
        weights = load_file(str(path / "model.safetensors"), device="cpu")
        missing, unexpected = raw_model.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise DataError(f"{path}: weights do not match the configured model")
        raw_model.to(dev)
        ts = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(ts["optimizer"])
        scaler.load_state_dict(ts["scaler"])
        torch.set_rng_state(ts["rng_cpu"])
        if dev.type == "cuda" and ts.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ts["rng_cuda"], dev)
        acc = ts["acc"]
        log.info("%s: resuming from %s (step %d of %d)", name, path, start_step, plan.total_steps)

    model: torch.nn.Module = raw_model
    if train_cfg.compile:
        model = torch.compile(model)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    # --- outputs (rank 0) ----------------------------------------------------------------------
    loss_log = eval_log = tb = None
    check_backends(backends_of(train_cfg))  # fail early, before any output, if an extra is missing
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_root.mkdir(exist_ok=True)
        for tmp in ckpt_root.glob(".tmp-*"):  # a checkpoint torn by a kill
            shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_json(
            out_dir / "run.json", _run_info(name, manifest, model_cfg, train_cfg, plan, raw_model)
        )
        keep = start_step if resume is not None else -1  # rows of the resumed checkpoint stay
        _truncate_csv(out_dir / "loss.csv", LOSS_COLUMNS, keep)
        _truncate_csv(out_dir / "eval.csv", EVAL_COLUMNS, keep)
        loss_log, eval_log = _CsvLog(out_dir / "loss.csv"), _CsvLog(out_dir / "eval.csv")
        tb = Tracker(backends_of(train_cfg), out_dir, run_name=name, resume=resume is not None,
                     project=train_cfg.wandb_project, config=train_cfg.model_dump(mode="json"))
    _barrier(dist)

    order = WindowOrder(windows.n_windows, train_cfg.seed)
    eval_idx = np.zeros(0, dtype=np.int64)
    if test is not None:
        eval_idx = eval_window_indices(test.n_windows, train_cfg.eval_tokens // plan.context_length)
    eval_bs = train_cfg.eval_batch_size or plan.micro_batch
    ckpt_set = set(plan.checkpoint_steps)

    def evaluate() -> float | None:
        """Mean next-token loss on the fixed test windows (each rank a strided share)."""
        if test is None or len(eval_idx) == 0:
            return None
        raw_model.eval()
        tot = torch.zeros(2, dtype=torch.float64, device=dev)
        with torch.no_grad():
            for batch in test.iter_batches(eval_idx[dist.rank :: dist.world], eval_bs):
                x = torch.from_numpy(batch.astype(np.int64)).to(dev)
                with autocast():
                    loss = raw_model(input_ids=x, labels=x, use_cache=False).loss
                tot[0] += loss.double() * len(x)
                tot[1] += len(x)
        raw_model.train()
        _all_reduce(tot, dist)
        return float(tot[0] / tot[1])

    def save_checkpoint(
        step: int, train_loss: float | None, test_loss: float | None, lr: float
    ) -> None:
        if not dist.main:
            return
        final = _step_dir(ckpt_root, step)
        tmp = make_temp_dir(final, prefix=f".tmp-{final.name}-")  # swept on start if torn
        _quiet_save(raw_model, tmp)
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
            "seed": train_cfg.seed,
            "hierlab_version": __version__,
            "config_hash": plan.config_hash,
            "corpus": name,
            "total_steps": plan.total_steps,
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
        publish_dir(tmp, final, overwrite=True)  # re-written after a kill before cleanup
        for s, p in _list_checkpoints(ckpt_root):  # resume state: latest checkpoint only
            if s != step:
                (p / TRAINER_STATE).unlink(missing_ok=True)

    def checkpoint(step: int, train_loss: float | None, lr: float) -> None:
        test_loss = evaluate()
        if dist.main:
            eval_log.row([step, step * plan.tokens_per_step, _fmt(test_loss)])
            tb.log({"eval/loss": test_loss}, step)
        save_checkpoint(step, train_loss, test_loss, lr)
        _barrier(dist)
        log.info(
            "%s: checkpoint step %d: train %s test %s",
            name,
            step,
            _fmt(train_loss),
            _fmt(test_loss),
        )

    # --- the loop ------------------------------------------------------------------------------
    if start_step == 0 and 0 in ckpt_set:
        checkpoint(0, None, lr_at(0, train_cfg, plan.total_steps))
    raw_model.train()
    clip = train_cfg.grad_clip if train_cfg.grad_clip else float("inf")
    loss_sum = torch.tensor(acc["loss_sum"], dtype=torch.float64, device=dev)
    loss_n, tokens_since = int(acc["loss_n"]), int(acc["tokens_since"])
    t_last = time.perf_counter()
    bar = tqdm(
        total=plan.total_steps,
        initial=start_step,
        desc=f"train {name}",
        unit="step",
        disable=None if dist.main else True,
    )
    for step in range(start_step, plan.total_steps):
        lr = lr_at(step, train_cfg, plan.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = order(batch_positions(step, plan.batch_size, dist.rank, dist.world))
        step_loss = torch.zeros((), dtype=torch.float64, device=dev)
        chunks = range(0, len(idx), plan.micro_batch)
        for i, lo in enumerate(chunks):
            batch = windows.gather(idx[lo : lo + plan.micro_batch])
            x = torch.from_numpy(batch.astype(np.int64)).to(dev, non_blocking=True)
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or dist.world == 1 else model.no_sync()
            with sync:
                with autocast():
                    loss = model(input_ids=x, labels=x, use_cache=False).loss
                weight = len(x) / len(idx)
                scaler.scale(loss * weight).backward()
            step_loss += loss.detach().double() * weight
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        loss_sum += step_loss
        loss_n += 1
        tokens_since += plan.tokens_per_step
        bar.update(1)
        if done % plan.log_every == 0 or done == plan.total_steps or done in ckpt_set:
            mean = _all_reduce(loss_sum.clone(), dist) / (loss_n * dist.world)
            train_loss = float(mean)
            if done % plan.log_every == 0 or done == plan.total_steps:
                now = time.perf_counter()
                tps = tokens_since / max(now - t_last, 1e-9)
                if dist.main:
                    loss_log.row(
                        [
                            done,
                            done * plan.tokens_per_step,
                            _fmt(train_loss),
                            _fmt(lr),
                            _fmt(grad_norm.item()),
                            f"{tps:.1f}",
                        ]
                    )
                    tb.log({"train/loss": train_loss, "train/lr": lr, "train/tokens_per_s": tps,
                            "train/grad_norm": grad_norm.item()}, done)
                bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tps:,.0f}")
                loss_sum.zero_()
                loss_n, tokens_since, t_last = 0, 0, now
            if done in ckpt_set:
                acc = {"loss_sum": float(loss_sum), "loss_n": loss_n, "tokens_since": tokens_since}
                t0 = time.perf_counter()
                checkpoint(done, train_loss, lr)
                t_last += time.perf_counter() - t0  # keep tokens/s a training speed
        if on_step is not None:
            on_step(done)
    bar.close()
    if dist.main:
        loss_log.close()
        eval_log.close()
        tb.close()
    return out_dir


def _run_info(
    name: str,
    manifest: dict,
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    plan: TrainPlan,
    model: torch.nn.Module,
) -> dict[str, Any]:
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
        "config_hash": plan.config_hash,
        "corpus_config_hash": manifest.get("config_hash"),
        "hierlab_version": __version__,
        "model": model_cfg.model_dump(mode="json"),
        "training": train_cfg.model_dump(mode="json"),
    }
