"""Training throughput, like for like: a plain PyTorch loop, HF Trainer and hierlab.

Same process, same model (the config's HF Llama, same seed), same data (the config's own
corpora, generated into a temp folder), same batch, same precision (bf16 autocast on CPU
by default). Each contender runs ``--warmup`` untimed steps and then ``--steps`` timed
ones; tokens/s is counted from the end of the warm-up to the end of the last step. Runs are
interleaved over ``--repeats`` so background load hits all alike; the best is kept.

Contenders:

* ``plain``: the 20-line loop a user would write (eager, AdamW, autocast), all threads;
* ``plain_1t``: the same on one thread (how much a second core buys a small model);
* ``hf_trainer``: ``transformers.Trainer`` at the same precision (``bf16=True``, CPU);
* ``hierlab``: :func:`hierlab.train.loop.train_model` (one model, all threads), from its
  ``loss.csv`` (checkpointing and evaluation are not timed);
* ``hierlab_sdpa``, ``hierlab_eager``: the same with ``training.attention`` forced to
  PyTorch's SDPA kernel or to the eager (matmul + softmax) attention;
* ``hierlab_compile`` (attention auto), ``hierlab_sdpa_compile``, ``hierlab_eager_compile``:
  the same with ``training.compile: true``
  (the compile falls in the untimed warm-up, whose seconds are printed; inductor caches
  compiled graphs on disk, so only the first run on a machine pays the full compile; set
  ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` to measure it cold);
* ``stage``: :func:`hierlab.train.loop.train_corpora` on every corpus of the config with
  ``parallel_corpora: auto`` (one process per corpus, threads split) -- total tokens of
  all models per wall second of the whole call (process start, checkpoints and evaluation
  included) -- against ``stage_serial``, the same call with ``parallel_corpora: 1``.

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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierlab.config import ExperimentConfig, load_config
from hierlab.train.config import TrainingConfig
from hierlab.train.data import TokenWindows, WindowOrder, batch_positions
from hierlab.train.loop import train_corpora, train_model
from hierlab.train.model import build_model

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


def bench_hierlab(cfg: ExperimentConfig, corpus: Path, a: argparse.Namespace, out: Path,
                  compile: bool = False, **kw: Any) -> tuple[float, float]:
    """train_model on one corpus; (tokens/s after the warm-up, seconds of the warm-up).
    ``kw`` overrides training fields (e.g. ``attention="sdpa"``)."""
    tcfg = bench_train_cfg(cfg, a, compile=compile, **kw)
    train_model(cfg.model, tcfg, corpus, out)
    return loss_csv_rate(out / "loss.csv", a.warmup, a.batch * cfg.model.context_length)


def loss_csv_rate(path: Path, warmup: int, per_step: int) -> tuple[float, float]:
    """(tokens/s over the rows after the first ``warmup``, seconds of those first rows) of a
    ``log_every: 1`` loss.csv whose steps each train ``per_step`` tokens."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    warm = sum(per_step / float(r["tokens_per_s"]) for r in rows[:warmup])
    timed = rows[warmup:]
    return len(timed) * per_step / sum(per_step / float(r["tokens_per_s"]) for r in timed), warm


def bench_stage(cfg: ExperimentConfig, run: Path, a: argparse.Namespace, out: Path,
                parallel: int | str) -> float:
    """train_corpora over every corpus: total tokens per wall second of the whole call."""
    tcfg = bench_train_cfg(cfg, a, parallel_corpora=parallel)
    for name in cfg.corpora:
        (out / "corpus").mkdir(parents=True, exist_ok=True)
        (out / "corpus" / name).symlink_to(run / "corpus" / name)
    t0 = time.perf_counter()
    dirs = train_corpora(cfg.model, tcfg, cfg.corpora, out, device=a.device)
    wall = time.perf_counter() - t0
    tokens = sum(json.loads((d / "run.json").read_text())["total_tokens"] for d in dirs.values())
    return tokens / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quickstart", help="preset name or YAML path")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--batch", type=int, help="sequences per step (default: the config's)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats; best kept")
    ap.add_argument("--only", help="comma list of contenders (default: all)")
    ap.add_argument("--compile-hf", action="store_true", help="torch_compile for HF Trainer")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(a.config)
    a.batch = a.batch or cfg.training.batch_size
    names = ["plain", "plain_1t", "hf_trainer", "hierlab", "hierlab_sdpa", "hierlab_eager",
             "hierlab_compile", "hierlab_sdpa_compile", "hierlab_eager_compile", "stage_serial",
             "stage"]
    chosen = a.only.split(",") if a.only else names
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
        print(f"\n{'contender':18s} {'best tok/s':>10s} {'ratio':>6s} {'median':>10s} {'ratio':>6s}"
              f"  (of {a.repeats} interleaved repeats)")
        for k, v in best.items():
            print(f"{k:18s} {v:10,.0f} {v / best['plain']:5.2f}x {median[k]:10,.0f} "
                  f"{median[k] / median['plain']:5.2f}x")
    if "warmup_seconds" in res:
        for k, v in res["warmup_seconds"].items():
            print(f"{k}: {a.warmup} warm-up steps took {v[0]:.1f} s in the first repeat "
                  f"(compile included), {min(v):.1f} s at best")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
