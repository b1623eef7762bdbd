"""The GPU check's training sections: corpus, train (eager and compiled) and ddp.

Each runs in its own child process of ``benchmarks/gpu_check.py`` and emits its rows. The
contenders are ``train_throughput.py``'s ``bench_hf`` / ``bench_hierlab``; the corpus is
made by the pipeline's corpus stage and DDP is ``torchrun ... -m hierlab train``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpu_check_common import (
    IMPLS,
    PRECISIONS,
    bench_args,
    expected_rows,
    experiment,
    flops_per_token,
    n_params,
    peak_flops,
    row,
)


def section_corpus(a: argparse.Namespace, work: Path, emit: Any) -> None:
    from hierlab.corpus.shards import SplitReader
    from hierlab.pipeline import run as run_pipeline

    t0 = time.perf_counter()
    run_pipeline(experiment(a.dry_run), work / "run", stages=("corpus",))
    tokens = SplitReader(work / "run" / "corpus" / "ngram" / "train").total_tokens
    emit(row("corpus", expected_rows("corpus", a.dry_run)[0],
             seconds=time.perf_counter() - t0, note=f"{tokens / 1e6:.2f} M train tokens"))


def section_train(a: argparse.Namespace, work: Path, emit: Any, compile_: bool = False) -> None:
    import torch

    import train_throughput as tt

    cfg = experiment(a.dry_run)
    corpus = work / "run" / "corpus" / "ngram"
    n = n_params(cfg, corpus)
    peak = None if a.dry_run else peak_flops(torch.cuda.get_device_name())
    mode = "compile" if compile_ else "eager"
    if compile_:  # four models of one class are compiled in this process
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    size = (f"{n / 1e6:.1f} M params, batch {cfg.training.batch_size} x "
            f"{cfg.model.context_length}, {a.warmup}+{a.steps} steps")
    for precision in PRECISIONS:
        for impl in IMPLS:
            what = f"{impl} {precision} {mode}"
            if a.dry_run and (precision == "fp16" or compile_):
                emit(row("train", what, note="skipped in --dry-run (CPU: bf16, eager)"))
                continue
            ba = bench_args(a, precision, compile_)
            out = work / what.replace(" ", "-")
            note = size
            try:
                t0 = time.perf_counter()
                if impl == "hf_trainer":
                    tps = tt.bench_hf(cfg, corpus, ba, out)
                else:
                    tps, warm = tt.bench_hierlab(cfg, corpus, ba, out, compile=compile_)
                    note += f"; warm-up {warm:.1f} s"
            except Exception as err:  # one contender failing is a row, not the end
                emit(row("train", what, note=f"error: {type(err).__name__}: {err}"[:300]))
                continue
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            mfu = tps * flops_per_token(n, cfg) / peak if peak else None
            emit(row("train", what, tps, mfu, time.perf_counter() - t0, note))


def section_train_compile(a: argparse.Namespace, work: Path, emit: Any) -> None:
    section_train(a, work, emit, compile_=True)


def section_ddp(a: argparse.Namespace, work: Path, emit: Any) -> None:
    import torch
    import yaml

    import train_throughput as tt

    cfg = experiment(a.dry_run)
    tcfg = tt.bench_train_cfg(cfg, bench_args(a, "bf16", False))
    run = work / "ddp"
    (run / "corpus").mkdir(parents=True, exist_ok=True)
    (run / "corpus" / "ngram").symlink_to(work / "run" / "corpus" / "ngram")
    (run / "config.yml").write_text(yaml.safe_dump(
        cfg.model_copy(update={"training": tcfg}).model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "hierlab", "train", str(run / "config.yml"),
           "--out", str(run), "--corpus", "ngram"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"torchrun exit {proc.returncode}: {' | '.join(tail)}")
    per_step = tcfg.batch_size * cfg.model.context_length
    tps, _ = tt.loss_csv_rate(run / "models" / "ngram" / "loss.csv", a.warmup, per_step)
    peak = None if a.dry_run else peak_flops(torch.cuda.get_device_name())
    n = n_params(cfg, work / "run" / "corpus" / "ngram")
    mfu = tps * flops_per_token(n, cfg) / (2 * peak) if peak else None  # two GPUs' peak
    emit(row("ddp", expected_rows("ddp", a.dry_run)[0], tps, mfu, time.perf_counter() - t0,
             f"global batch {tcfg.batch_size} x {cfg.model.context_length}, "
             f"{a.warmup}+{a.steps} steps" + ("; CPU gloo (--dry-run)" if a.dry_run else "")))
