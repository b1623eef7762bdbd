"""Training throughput, like for like: a plain PyTorch loop, HF Trainer and ``hierlab train``.

Same model (the config's HF Llama, same seed), same data (the config's own corpora,
generated into a temp folder), same batch, same precision (the config's; bf16 autocast on
CPU in the presets). The plain loop and HF Trainer run in this process, after the corpus
stage has freed its large arrays, so glibc keeps their freed heap pages as ``hierlab train``
does (:mod:`hierlab.train.allocator`; without that, a fresh process re-faults its
activations every step). Every hierlab contender is ``hierlab train`` in a subprocess,
as a user runs it: the config's own settings (evaluation, checkpoint plan, ``log_every``,
threads) over the first ``warmup + steps`` steps of its run, with ``--set`` for what the
contender changes, and tokens/s read from that run's ``loss.csv`` (which leaves out
checkpoints and evaluation).
So what this script reports is what a user's ``loss.csv`` shows. The warm-up (compile
included) is ``--warmup`` steps rounded up to whole ``log_every`` intervals, untimed for
every contender alike; runs are interleaved over ``--repeats`` so background load hits all
alike; best and median are kept.

Contenders:

* ``plain``: the 20-line loop a user would write (eager, AdamW, autocast), all threads;
* ``plain_1t``: the same on one thread (how much a second core buys a small model);
* ``hf_trainer``: ``transformers.Trainer`` at the same precision (``bf16=True``, CPU);
* ``hierlab``: ``hierlab train`` with the config as it is;
* ``hierlab_sdpa``, ``hierlab_eager``: the same with ``--set training.attention=sdpa`` or
  ``eager`` (PyTorch's SDPA kernel, or matmul + softmax);
* ``hierlab_compile`` (attention auto), ``hierlab_sdpa_compile``, ``hierlab_eager_compile``:
  the same with ``--set training.compile=true`` (the compile falls in the warm-up, whose
  seconds are printed; inductor caches compiled graphs on disk, so only the first run on a
  machine pays the full compile; ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` measures it cold);
* ``stage``: ``hierlab train`` on every corpus of the config with ``parallel_corpora: auto``
  (one process per corpus, threads split) -- total tokens of all models per wall second of
  the whole command (process start, checkpoints and evaluation included) -- against
  ``stage_serial``, the same command with ``parallel_corpora: 1``.

Ratios are printed against ``plain``. HF Trainer needs ``accelerate`` (extra ``bench``;
``interop`` pulls it in too). The quickstart (default config) on a 2-core CPU::

    python benchmarks/train_throughput.py --steps 60 --warmup 10 --repeats 2
    python benchmarks/train_throughput.py --config paper --device cuda --batch 256 --steps 30
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hierlab.config import ExperimentConfig, load_config
from hierlab.train.config import TrainingConfig
from hierlab.train.data import TokenWindows, WindowOrder, batch_positions
from hierlab.train.model import build_model
from hierlab.train.schedule import checkpoint_steps

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _model(cfg: ExperimentConfig, windows: TokenWindows, device: str) -> torch.nn.Module:
    return build_model(cfg.model, windows.vocab_size, cfg.training.seed).to(device)


def bench_plain(cfg: ExperimentConfig, corpus: Path, a: argparse.Namespace,
                threads: int | None = None) -> float:
    """The loop a user could write in 20 lines: gather, autocast forward, backward, AdamW."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t = cfg.training
        windows = TokenWindows(corpus / "train", cfg.model.context_length)
        order = WindowOrder(windows.n_windows, t.seed)
        model = _model(cfg, windows, a.device)
        opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas),
                                weight_decay=t.weight_decay)
        amp = AMP[a.precision]
        start = 0.0
        for step in range(a.warmup + a.steps):
            if step == a.warmup:
                _sync(a.device)
                start = time.perf_counter()
            x = torch.from_numpy(windows.gather(order(batch_positions(step, a.batch)))
                                 .astype(np.int64)).to(a.device)
            with torch.autocast(a.device, dtype=amp, enabled=amp is not None):
                loss = model(input_ids=x, labels=x, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(a.device)
        return a.steps * a.batch * cfg.model.context_length / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def bench_hf(cfg: ExperimentConfig, corpus: Path, a: argparse.Namespace, out: Path) -> float:
    """HF Trainer at the same precision, batch and model; clocked at step ends."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    windows = TokenWindows(corpus / "train", cfg.model.context_length)
    order = WindowOrder(windows.n_windows, 0)

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return windows.n_windows

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x = torch.from_numpy(windows.gather(order(np.array([i])))[0].astype(np.int64))
            return {"input_ids": x, "labels": x}

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args: object, **kw: object) -> None:
            _sync(a.device)
            ends.append(time.perf_counter())

    gpu = a.device == "cuda"
    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=a.batch,
        max_steps=a.warmup + a.steps,
        learning_rate=cfg.training.lr,
        optim="adamw_torch",
        max_grad_norm=1.0,
        bf16=a.precision == "bf16",
        fp16=a.precision == "fp16",
        torch_compile=a.compile_hf,
        use_cpu=not gpu,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=gpu,
        seed=0,
    )
    model = _model(cfg, windows, a.device)
    Trainer(model=model, args=targs, train_dataset=Windows(), callbacks=[Clock()]).train()
    return a.steps * a.batch * cfg.model.context_length / (ends[-1] - ends[a.warmup - 1])


def bench_train_cfg(cfg: ExperimentConfig, a: argparse.Namespace, **kw: Any) -> TrainingConfig:
    total = a.warmup + a.steps
    base = cfg.training.model_dump()
    base.update(
        batch_size=a.batch, micro_batch_size=a.batch, precision=a.precision,
        max_tokens=total * a.batch * cfg.model.context_length, log_every=1, eval_tokens=0,
        checkpoints={"schedule": "list", "steps": [total]}, device=a.device, tracking=[],
        tensorboard=False,
    )
    base.update(kw)
    return TrainingConfig(**base)


def _cli_overrides(cfg: ExperimentConfig, corpus: Path, a: argparse.Namespace,
                   **kw: Any) -> dict[str, Any]:
    """The ``--set`` values that make ``hierlab train`` run the first ``warmup + steps`` steps
    of the config's own run: the same checkpoint plan (cut there), evaluation, log_every."""
    t = cfg.training
    ctx = cfg.model.context_length
    sets: dict[str, Any] = {"training.device": a.device, "training.precision": a.precision}
    if a.batch != t.batch_size:
        sets.update({"training.batch_size": a.batch, "training.micro_batch_size": a.batch})
    if t.max_tokens is not None:
        full = t.max_tokens // ctx // a.batch
    else:
        full = int(t.epochs * TokenWindows(corpus / "train", ctx).n_windows) // a.batch
    total = a.warmup + a.steps
    sets["training.max_tokens"] = total * a.batch * ctx
    # the config's plan; steps past the shortened run are dropped by the trainer (cutting
    # them here would leave an empty list, which the config refuses, on a short run)
    sets["training.checkpoints"] = {"schedule": "list", "steps": list(
        checkpoint_steps(t.checkpoints, max(full, total)))}
    sets.update({f"training.{k}": v for k, v in kw.items()})
    return sets


def hierlab_train(config: ExperimentConfig, out: Path, corpus: str | None,
                  sets: dict[str, Any], timeout: float = 3600) -> float:
    """``hierlab train`` in a subprocess (this interpreter), as a user runs it; returns its
    wall seconds. The config is written to ``out/config.yml``; the corpora must already be
    in ``out/corpus/``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "hierlab", "train", str(path), "--out", str(out)]
    cmd += ["--corpus", corpus] if corpus else []
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        raise RuntimeError(f"hierlab train exited {proc.returncode}: "
                           f"{proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def _link_corpora(names: list[str], src: Path, out: Path) -> None:
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (out / "corpus" / name).exists():
            (out / "corpus" / name).symlink_to(src / name)


def bench_hierlab(cfg: ExperimentConfig, corpus: Path, a: argparse.Namespace, out: Path,
                  compile: bool = False, **kw: Any) -> tuple[float, float]:
    """``hierlab train`` on one corpus with the config's settings; (tokens/s after the
    warm-up, seconds of the warm-up) from its loss.csv. ``kw`` overrides training fields
    (e.g. ``attention="sdpa"``)."""
    sets = _cli_overrides(cfg, corpus, a, compile=compile, **kw)
    _link_corpora([corpus.name], corpus.parent, out)
    hierlab_train(cfg, out, corpus.name, sets)
    return loss_csv_rate(out / "models" / corpus.name / "loss.csv", a.warmup,
                         a.batch * cfg.model.context_length)


def loss_csv_rate(path: Path, warmup: int, per_step: int) -> tuple[float, float]:
    """(tokens/s, seconds of the warm-up) of a ``loss.csv`` whose steps each train
    ``per_step`` tokens: the rate over the rows whose interval starts at or after step
    ``warmup`` (each row covers the steps since the previous one, at any ``log_every``)."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    timed_tokens = timed_s = warm_s = 0.0
    prev = 0
    for r in rows:
        step = int(r["step"])
        tokens = (step - prev) * per_step
        seconds = tokens / float(r["tokens_per_s"])
        if prev >= warmup:
            timed_tokens, timed_s = timed_tokens + tokens, timed_s + seconds
        else:
            warm_s += seconds
        prev = step
    if timed_s == 0:
        raise ValueError(f"{path}: no logged interval after step {warmup}; raise --steps")
    return timed_tokens / timed_s, warm_s


def bench_stage(cfg: ExperimentConfig, run: Path, a: argparse.Namespace, out: Path,
                parallel: int | str) -> float:
    """``hierlab train`` over every corpus: total tokens per wall second of the command."""
    first = run / "corpus" / next(iter(cfg.corpora))
    sets = _cli_overrides(cfg, first, a, parallel_corpora=parallel)
    _link_corpora(list(cfg.corpora), run / "corpus", out)
    wall = hierlab_train(cfg, out, None, sets)
    tokens = sum(json.loads((out / "models" / n / "run.json").read_text())["total_tokens"]
                 for n in cfg.corpora)
    return tokens / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quickstart", help="preset name or YAML path")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32"],
                    help="autocast precision (default: the config's)")
    ap.add_argument("--batch", type=int, help="sequences per step (default: the config's)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup", type=int, default=10,
                    help="untimed steps first (rounded up to whole log_every intervals)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats")
    ap.add_argument("--only", help="comma list of contenders (default: all)")
    ap.add_argument("--compile-hf", action="store_true", help="torch_compile for HF Trainer")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(a.config)
    a.batch = a.batch or cfg.training.batch_size
    a.precision = a.precision or cfg.training.precision
    every = int(cfg.training.log_every) if cfg.training.log_every >= 1 else 1
    a.warmup = math.ceil(a.warmup / every) * every  # whole loss.csv rows, for every contender
    names = ["plain", "plain_1t", "hf_trainer", "hierlab", "hierlab_sdpa", "hierlab_eager",
             "hierlab_compile", "hierlab_sdpa_compile", "hierlab_eager_compile", "stage_serial",
             "stage"]
    chosen = a.only.split(",") if a.only else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        ap.error(f"--only: unknown contender(s) {unknown} (contenders: {', '.join(names)})")
    torch.manual_seed(0)
    res: dict[str, Any] = {
        "config": a.config, "device": a.device, "precision": a.precision,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "batch": f"{a.batch} x {cfg.model.context_length}", "steps": a.steps,
        "warmup": a.warmup, "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from hierlab.pipeline import run as run_pipeline

        run_pipeline(cfg, root / "run", stages=("corpus",))
        first = root / "run" / "corpus" / next(iter(cfg.corpora))
        for r in range(a.repeats):
            for name in chosen:
                out = root / f"{name}-{r}"
                if name == "plain":
                    tps = bench_plain(cfg, first, a)
                elif name == "plain_1t":
                    tps = bench_plain(cfg, first, a, threads=1)
                elif name == "hf_trainer":
                    tps = bench_hf(cfg, first, a, out)
                elif name.startswith("hierlab"):  # hierlab[_sdpa|_eager][_compile]
                    parts = name.split("_")[1:]
                    kernel = [p for p in parts if p in ("sdpa", "eager")]
                    kw = {"attention": kernel[0]} if kernel else {}
                    tps, warm = bench_hierlab(cfg, first, a, out, compile="compile" in parts,
                                              **kw)
                    if "compile" in parts:  # the first repeat compiles; later ones hit the cache
                        res.setdefault("warmup_seconds", {}).setdefault(name, []).append(warm)
                else:
                    tps = bench_stage(cfg, root / "run", a, out,
                                      1 if name == "stage_serial" else "auto")
                res["runs"].setdefault(name, []).append(tps)
                print(f"[{r}] {name}: {tps:,.0f} tokens/s", flush=True)
    best = {k: max(v) for k, v in res["runs"].items()}
    median = {k: float(np.median(v)) for k, v in res["runs"].items()}
    res["best_tokens_per_s"], res["median_tokens_per_s"] = best, median
    if "plain" in best:
        res["ratio_vs_plain"] = {k: v / best["plain"] for k, v in best.items()}
        res["median_ratio_vs_plain"] = {k: v / median["plain"] for k, v in median.items()}
        print(f"\n{'contender':22s} {'best tok/s':>10s} {'ratio':>6s} {'median':>10s} "
              f"{'ratio':>6s}  (of {a.repeats} interleaved repeats)")
        for k, v in best.items():
            print(f"{k:22s} {v:10,.0f} {v / best['plain']:5.2f}x {median[k]:10,.0f} "
                  f"{median[k] / median['plain']:5.2f}x")
    for k, v in res.get("warmup_seconds", {}).items():
        print(f"{k}: the first {a.warmup} steps took {v[0]:.1f} s in the first repeat "
              f"(compile included), {min(v):.1f} s at best")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
