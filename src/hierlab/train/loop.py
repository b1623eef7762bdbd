"""The training loop: one model per corpus, read top to bottom (nanoGPT style).

The hot loop is plain torch: gather windows -> forward/backward over micro-batches -> clip
-> AdamW step; checks and sizes, kernels, checkpoints, logs and torchrun each live in a
module of their own beside it. The data position is the step itself, so a killed run
continues from its latest checkpoint and reproduces the uninterrupted losses bit for bit on
CPU. The modules around the loop and its outputs: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from hierlab import faults, preempt
from hierlab.errors import ConfigError
from hierlab.io import atomic_write_json, step_dir
from hierlab.lock import writes
from hierlab.progress import progress_bar
from hierlab.train import checkpoint as ckpt
from hierlab.train.allocator import keep_freed_memory
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.data import TokenWindows, WindowOrder, batch_positions, eval_window_indices
from hierlab.train.dist import (
    Dist,
    accumulators,
    all_reduce,
    barrier,
    dist_setup,
    rank_share,
    resolve_device,
)
from hierlab.train.kernels import (
    adamw,
    attention_impl,
    attention_kernel,
    autocast,
    compiles,
    deterministic,
)
from hierlab.train.logs import RunLog, fmt
from hierlab.train.model import build_model
from hierlab.train.plan import prepare, run_info
from hierlab.train.schedule import lr_at
from hierlab.train.tracking import backends_of, check_backends

__all__ = ["concurrent_corpora", "train_corpora", "train_model"]

log = logging.getLogger(__name__)


@writes("run_dir")  # one writer per run folder (hierlab.lock)
def train_corpora(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpora: Iterable[str],
    run_dir: Path,
    only: str | None = None,
    device: str | None = None,
) -> dict[str, Path]:
    """Train one model per corpus on ``run_dir/corpus/<name>``, resumably.

    Finished models are skipped, killed ones resumed. With ``training.parallel_corpora``
    > 1 (or ``auto``) several corpora train at the same time, one process each, with
    torch's threads split between them. Measured on 2 cores (quickstart,
    benchmarks/train_throughput.py ``stage``): 0.94-0.97x of one after the other, since
    this model already uses both threads well; so the default is 1.

    Args:
        model_cfg: the ``model`` section.
        train_cfg: the ``training`` section.
        corpora: the corpus names (or the experiment's ``corpora`` section itself).
        run_dir: the run directory; holds the run folder's writer lock while training.
        only: train only the model of this corpus.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (None: ``training.device``, else CUDA when
            present).

    Returns:
        corpus name -> its model folder ``run_dir/models/<name>``.
    """
    run_dir = Path(run_dir)
    names = list(corpora)
    if only is not None:
        if only not in names:
            raise ConfigError(
                f"--corpus: {only!r} is not a corpus of the config (corpora: {', '.join(names)})"
            )
        names = [only]
    if not names:
        raise ConfigError("corpora: the config lists no corpus to train on")
    jobs = [(n, run_dir / "corpus" / n, run_dir / "models" / n) for n in names]
    at_once = concurrent_corpora(train_cfg, len(jobs), device)
    if at_once == 1:
        with _threads(train_cfg.threads):
            return {
                n: train_model(model_cfg, train_cfg, c, o, corpus_name=n, device=device)
                for n, c, o in jobs
            }
    threads = train_cfg.threads or max(1, torch.get_num_threads() // at_once)
    level = logging.getLogger("hierlab").getEffectiveLevel()
    out: dict[str, Path] = {}
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(at_once, mp_context=ctx) as pool:
        futures = {
            pool.submit(_train_worker, model_cfg, train_cfg, c, o, n, device, threads, i,
                        level): n
            for i, (n, c, o) in enumerate(jobs)
        }
        for fut in as_completed(futures):  # the first error is raised; others finish
            out[futures[fut]] = fut.result()
    return {n: out[n] for n in names}


def concurrent_corpora(train_cfg: TrainingConfig, n_jobs: int, device: str | None) -> int:
    """How many corpora train at once.

    Args:
        train_cfg: the training section (``parallel_corpora``, ``device``).
        n_jobs: the corpora to train.
        device: the requested device (None: the config's).

    Returns:
        ``parallel_corpora``, with ``auto`` = one process per corpus up to the CPU cores on
        CPU, and 1 on CUDA or under torchrun; never more than ``n_jobs``.
    """
    if n_jobs <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    if train_cfg.parallel_corpora != "auto":
        return min(int(train_cfg.parallel_corpora), n_jobs)
    if resolve_device(device or train_cfg.device).type != "cpu":
        return 1
    return max(1, min(n_jobs, torch.get_num_threads()))


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block (None: left as they are)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_worker(
    model_cfg: ModelConfig, train_cfg: TrainingConfig, corpus_dir: Path, out_dir: Path,
    name: str, device: str | None, threads: int, position: int, log_level: int,
) -> Path:
    """One corpus in its own process: its thread share, its own progress-bar line."""
    logging.basicConfig(level=log_level, format="%(message)s")
    torch.set_num_threads(threads)
    return train_model(model_cfg, train_cfg, corpus_dir, out_dir, corpus_name=name,
                       device=device, bar_position=position)


def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpus_dir: Path,
    out_dir: Path,
    *,
    corpus_name: str | None = None,
    device: str | None = None,
    on_step: Callable[[int], None] | None = None,
    bar_position: int | None = None,
) -> Path:
    """Train (or resume, or skip if finished) one model on ``corpus_dir/{train,test}``.

    Every check a user can fail runs before anything is written. SIGTERM/SIGINT leaves a
    resume point at the next step boundary.

    Args:
        model_cfg: the ``model`` section.
        train_cfg: the ``training`` section.
        corpus_dir: the corpus folder.
        out_dir: the model's folder.
        corpus_name: the corpus's name in logs and trackers (default: the folder's name).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (None: ``training.device``, else CUDA when
            present); under torchrun each rank takes its local GPU.
        on_step: called with the step count after every optimizer step (tests use it to
            simulate a kill).
        bar_position: the progress bar's line when several models train at once.

    Returns:
        ``out_dir``.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    name = corpus_name or corpus_dir.name
    keep_freed_memory()  # a fresh process re-faulted its activations' pages every step
    dev = resolve_device(device or train_cfg.device)
    dist, owns_group = dist_setup(dev.type)
    if dev.type == "cuda" and dist.world > 1:
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    compiled = train_cfg.compile and compiles(dev)
    if train_cfg.compile and not compiled:
        log.warning("%s: training.compile: no C++ compiler found (inductor needs g++ or "
                    "clang++ on CPU); training uncompiled, about 1.5x slower", name)
    try:
        # compiled CPU kernels are reproducible only under deterministic algorithms
        # SIGTERM/SIGINT: a resume point at the next step boundary (hierlab.preempt)
        with deterministic(compiled and dev.type == "cpu"), preempt.handling():
            return _train(model_cfg, train_cfg, corpus_dir, out_dir, name, dev, dist,
                          compiled, on_step, bar_position)
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


def evaluate(
    model: torch.nn.Module,
    test: TokenWindows | None,
    window_indices: np.ndarray,
    batch_size: int,
    device: torch.device,
    precision: str,
    dist: Dist,
) -> float | None:
    """Mean next-token loss on fixed test windows, the same windows at every checkpoint.

    Measured with SDPA attention whatever the training kernel, so the test loss does not
    depend on it.

    Args:
        model: the (unwrapped) model; left in training mode afterwards.
        test: the test split's windows (None: the corpus has none).
        window_indices: the test windows to score; each rank takes a strided share.
        batch_size: windows per forward pass.
        device: where the model runs.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        dist: this process's place in the job; the sums are all-reduced.

    Returns:
        The mean loss over the windows, or None without test windows.
    """
    if test is None or len(window_indices) == 0:
        return None
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=device)
    # the test loss is always measured with SDPA: uncompiled, it is the faster kernel for a
    # forward pass, and a test loss should not depend on the training kernel
    with torch.no_grad(), attention_kernel(model, "sdpa"):
        for batch in test.iter_batches(window_indices[dist.rank :: dist.world], batch_size):
            x = torch.from_numpy(batch.astype(np.int64)).to(device)
            with autocast(device, precision):
                loss = model(input_ids=x, labels=x, use_cache=False).loss
            tot[0] += loss.double() * len(x)
            tot[1] += len(x)
    model.train()
    all_reduce(tot, dist)
    return float(tot[0] / tot[1])


def _train(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    corpus_dir: Path,
    out_dir: Path,
    name: str,
    dev: torch.device,
    dist: Dist,
    compiled: bool,
    on_step: Callable[[int], None] | None,
    bar_position: int | None = None,
) -> Path:
    # --- plan: every check before anything is written -----------------------------------------
    prep = prepare(model_cfg, train_cfg, corpus_dir, dev, dist)
    plan, windows, test = prep.plan, prep.windows, prep.test
    finished, resume = ckpt.find_run_state(out_dir, plan)
    if finished:
        log.info("%s: finished model found in %s (config %s); skipping", name, out_dir,
                 plan.run_hash)
        if dist.main:  # killed right after its last checkpoint: the older state goes now
            ckpt.prune_resume_state(out_dir, plan.total_steps)
        return out_dir
    check_backends(backends_of(train_cfg))  # a missing tracking extra fails before any output

    # --- model, optimizer, precision; resume ---------------------------------------------------
    raw_model = build_model(
        model_cfg,
        prep.vocab,
        train_cfg.seed,
        eos_id=prep.manifest.get("eos_id"),
        pad_id=prep.manifest.get("pad_id"),
        bos_id=prep.manifest.get("boundary_id"),
    )
    raw_model.set_attn_implementation(attention_impl(train_cfg.attention, dev, compiled))
    raw_model.to(dev)
    optimizer = adamw(raw_model, train_cfg, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=train_cfg.precision == "fp16")
    start_step, acc = 0, {"loss_sum": 0.0, "loss_n": 0, "tokens_since": 0}
    if resume is not None:
        start_step, path = resume
        acc = ckpt.load_resume(path, raw_model, optimizer, scaler, dev)
        log.info("%s: resuming from %s (step %d of %d)", name, path, start_step, plan.total_steps)
    model: torch.nn.Module = raw_model
    if compiled:
        # static shapes: a second model compiled in the same process (another corpus, another
        # shape) would otherwise get dynamic-shape kernels, and other numbers than alone
        model = torch.compile(model, dynamic=False)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    # --- outputs (rank 0) ----------------------------------------------------------------------
    ckpt_root = out_dir / "checkpoints"
    runlog: RunLog | None = None
    if dist.main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        ckpt.sweep_torn(ckpt_root)
        info = run_info(name, prep.manifest, model_cfg, train_cfg, plan, raw_model)
        atomic_write_json(out_dir / "run.json", info)
        runlog = RunLog(out_dir, name, train_cfg, None if resume is None else start_step)
    barrier(dist)

    # --- data ----------------------------------------------------------------------------------
    order = WindowOrder(windows.n_windows, train_cfg.seed)
    eval_idx = np.zeros(0, dtype=np.int64)
    if test is not None:
        eval_idx = eval_window_indices(test.n_windows, train_cfg.eval_tokens // plan.context_length)
    eval_bs = train_cfg.eval_batch_size or plan.micro_batch
    ckpt_set = set(plan.checkpoint_steps)

    def checkpoint(step: int, train_loss: float | None, lr: float, resume: bool = False) -> None:
        """Evaluate, log and save at ``step`` (every rank evaluates; rank 0 writes); a
        ``resume`` point (preemption) is saved aside, without evaluating or logging."""
        test_loss = None if resume else evaluate(raw_model, test, eval_idx, eval_bs, dev,
                                                 train_cfg.precision, dist)
        if runlog is not None:
            if not resume:
                runlog.eval(step, step * plan.tokens_per_step, test_loss)
            ckpt.save_checkpoint(
                ckpt.resume_root(out_dir) if resume else ckpt_root, step, plan=plan,
                corpus=name, corpus_dir=corpus_dir, resume_point=resume,
                seed=train_cfg.seed, model=raw_model, optimizer=optimizer, scaler=scaler,
                device=dev, accumulators=acc, train_loss=train_loss, test_loss=test_loss,
                learning_rate=lr,
            )
        barrier(dist)
        log.info("%s: checkpoint step %d: train %s test %s", name, step, fmt(train_loss),
                 fmt(test_loss))

    # --- the loop ------------------------------------------------------------------------------
    if resume is None and 0 in ckpt_set:  # resumed from step 0: it is saved and logged
        checkpoint(0, None, lr_at(0, train_cfg, plan.total_steps))
    raw_model.train()
    clip = train_cfg.grad_clip if train_cfg.grad_clip else float("inf")
    loss_sum = torch.tensor(rank_share(acc, dist), dtype=torch.float64, device=dev)
    loss_n, tokens_since = int(acc["loss_n"]), int(acc["tokens_since"])
    t_last = time.perf_counter()
    bar = progress_bar(total=plan.total_steps, initial=start_step, desc=f"train {name}",
                       unit="step", enabled=None if dist.main else False, position=bar_position)
    for step in range(start_step, plan.total_steps):
        lr = lr_at(step, train_cfg, plan.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = order(batch_positions(step, plan.batch_size, dist.rank, dist.world))

        # forward/backward over micro-batches; DDP syncs gradients on the last one only
        step_loss = torch.zeros((), dtype=torch.float64, device=dev)
        chunks = range(0, len(idx), plan.micro_batch)
        for i, lo in enumerate(chunks):
            batch = windows.gather(idx[lo : lo + plan.micro_batch])
            x = torch.from_numpy(batch.astype(np.int64)).to(dev, non_blocking=True)
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or dist.world == 1 else model.no_sync()
            with sync:
                with autocast(dev, train_cfg.precision):
                    loss = model(input_ids=x, labels=x, use_cache=False).loss
                weight = len(x) / len(idx)
                scaler.scale(loss * weight).backward()
            step_loss += loss.detach().double() * weight

        # clip, step
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        # log and checkpoint
        done = step + 1
        loss_sum += step_loss
        loss_n += 1
        tokens_since += plan.tokens_per_step
        bar.update(1)
        is_log = done % plan.log_every == 0 or done == plan.total_steps
        if is_log or done in ckpt_set:
            train_loss = float(all_reduce(loss_sum.clone(), dist) / (loss_n * dist.world))
            if is_log:
                now = time.perf_counter()
                tps = tokens_since / max(now - t_last, 1e-9)
                if runlog is not None:
                    runlog.train(done, done * plan.tokens_per_step, train_loss, lr,
                                 grad_norm.item(), tps)
                bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tps:,.0f}")
                loss_sum.zero_()
                loss_n, tokens_since, t_last = 0, 0, now
            if done in ckpt_set:
                acc = accumulators(loss_sum, loss_n, tokens_since, dist)
                t0 = time.perf_counter()
                checkpoint(done, train_loss, lr)
                t_last += time.perf_counter() - t0  # keep tokens/s a training speed
        if on_step is not None:
            on_step(done)
        faults.hit("train", step=done, rank=dist.rank)
        signum = preempt.agreed(dist, dev)  # every rank stops at the same step
        if signum is not None and done < plan.total_steps:
            if done not in ckpt_set:
                acc = accumulators(loss_sum, loss_n, tokens_since, dist)
                checkpoint(done, None, lr, resume=True)
            bar.close()
            if runlog is not None:
                runlog.close()
            where = ckpt.resume_root(out_dir) if done not in ckpt_set else ckpt_root
            preempt.stop(f"train {name}: at step {done} of {plan.total_steps}, resume point "
                         f"{step_dir(where, done)}")
    bar.close()
    if runlog is not None:
        runlog.close()
    return out_dir
