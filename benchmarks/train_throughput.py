"""Training throughput: HF ``Trainer`` (the reference's settings) vs hierlab's loop.

Same process, same model (the reference Llama, SPEC §4.4, same seed), same data (random
tokens in memory-mapped shards), same batch. HF Trainer runs with the reference's settings
adapted to the device (CPU: fp32, no compile; GPU: fp16 + torch_compile, SPEC §4.5);
hierlab's loop runs with each precision asked for. Tokens/s are measured over the steps
after a warm-up, from step-end to step-end (data loading included). A third number is the
data path alone: random windows gathered from the memory maps (target >= 10 M tokens/s).

    python benchmarks/train_throughput.py --device cpu --steps 5 --warmup 2
    python benchmarks/train_throughput.py --device cuda --batch 64 --steps 50 --warmup 20 \
        --precisions bf16,fp16 --compile
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hierlab.corpus.shards import write_split
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.data import TokenWindows, WindowOrder, batch_positions
from hierlab.train.loop import train_model
from hierlab.train.model import build_model

VOCAB = 1003


def make_corpus(root: Path, tokens: int, shards: int = 4) -> Path:
    """A split of uniformly random ids (the speed does not depend on the content)."""
    rng = np.random.default_rng(0)
    per = tokens // shards
    parts = [rng.integers(0, 1000, per).astype(np.uint16) for _ in range(shards)]
    manifest = dict(
        corpus="bench",
        kind="pcfg",
        vocab_size=VOCAB,
        eos_id=1000,
        pad_id=1002,
        unk_id=1001,
        boundary_id=None,
        config_hash="bench",
        loss_floors={},
    )
    for split in ("train", "test"):
        write_split(
            root / split,
            parts if split == "train" else parts[:1],
            manifest={**manifest, "split": split},
        )
    return root


def bench_hf(model_cfg: ModelConfig, corpus: Path, args: argparse.Namespace, out: Path) -> float:
    """HF Trainer with the reference's TrainingArguments (SPEC §4.5) adapted to the device."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    windows = TokenWindows(corpus / "train", model_cfg.context_length)
    order = WindowOrder(windows.n_windows, 0)

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return windows.n_windows

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x = torch.from_numpy(windows.gather(order(np.array([i])))[0].astype(np.int64))
            return {"input_ids": x, "labels": x, "attention_mask": torch.ones_like(x)}

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, *a: object, **k: object) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    gpu = args.device == "cuda"
    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=5e-5,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        max_grad_norm=1.0,
        fp16=gpu,
        torch_compile=gpu and args.compile,
        use_cpu=not gpu,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=args.hf_workers,
        dataloader_pin_memory=gpu,
        seed=0,
    )
    clock = Clock()
    model = build_model(model_cfg, VOCAB, seed=0)
    Trainer(model=model, args=targs, train_dataset=Windows(), callbacks=[clock]).train()
    span = clock.ends[-1] - clock.ends[args.warmup - 1]
    return args.steps * args.batch * model_cfg.context_length / span


def bench_hierlab(
    model_cfg: ModelConfig, corpus: Path, args: argparse.Namespace, precision: str, out: Path
) -> float:
    """hierlab's own loop (train_model), one loss.csv row per step."""
    total = args.warmup + args.steps
    cfg = TrainingConfig(
        batch_size=args.batch,
        micro_batch_size=args.batch,
        precision=precision,
        compile=args.compile,
        max_tokens=total * args.batch * model_cfg.context_length,
        log_every=1,
        eval_tokens=0,
        checkpoints={"schedule": "list", "steps": [total]},
        device=args.device,
    )
    train_model(model_cfg, cfg, corpus, out)
    with open(out / "loss.csv") as fh:
        rows = list(csv.DictReader(fh))[args.warmup :]
    per_step = cfg.batch_size * model_cfg.context_length
    seconds = sum(per_step / float(r["tokens_per_s"]) for r in rows)
    return len(rows) * per_step / seconds


def bench_data(corpus: Path, context: int, batch: int, seconds: float = 2.0) -> float:
    """Random windows gathered from the memory maps (page cache warm), tokens/s."""
    windows = TokenWindows(corpus / "train", context)
    order = WindowOrder(windows.n_windows, 0)
    windows.gather(order(np.arange(min(batch, windows.n_windows))))
    n, step, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += windows.gather(order(batch_positions(step, batch))).size
        step += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--model",
        choices=["reference", "small"],
        default="reference",
        help="reference: 17.3 M params; small: 2 layers, width 128",
    )
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (x 512 tokens)")
    ap.add_argument("--steps", type=int, default=5, help="measured steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--precisions", default="fp32,bf16", help="hierlab precisions to run")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile hierlab (and HF on GPU, as the reference)",
    )
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--hf-workers", type=int, default=0, help="HF dataloader workers")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats; best is kept")
    ap.add_argument("--data-batch", type=int, default=3104, help="windows per gather (data path)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.model == "reference":
        model_cfg = ModelConfig()
    else:
        model_cfg = ModelConfig(hidden_size=128, num_layers=2, num_heads=4)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, object] = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "batch": f"{args.batch} x {model_cfg.context_length}",
        "steps": args.steps,
        "warmup": args.warmup,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        need = (args.warmup + args.steps + 1) * args.batch * model_cfg.context_length
        corpus = make_corpus(root / "corpus", max(need, 1 << 25))
        results["data_tokens_per_s"] = bench_data(corpus, model_cfg.context_length, args.data_batch)
        print(
            f"data path: {results['data_tokens_per_s'] / 1e6:.1f} M tokens/s "
            f"({args.data_batch} random windows per gather)",
            flush=True,
        )
        ref_prec = "fp32"
        if args.device == "cuda":
            ref_prec = "fp16+compile" if args.compile else "fp16"
        results["hf_trainer_precision"] = ref_prec
        runs: dict[str, list[float]] = {}
        for r in range(args.repeats):  # interleaved, so background load hits all alike
            if not args.skip_hf:
                tps = bench_hf(model_cfg, corpus, args, root / f"hf-{r}")
                runs.setdefault("hf_trainer", []).append(tps)
                print(f"[{r}] HF Trainer ({ref_prec}): {tps:,.0f} tokens/s", flush=True)
            for prec in args.precisions.split(","):
                tps = bench_hierlab(model_cfg, corpus, args, prec, root / f"hierlab-{prec}-{r}")
                runs.setdefault(f"hierlab_{prec}", []).append(tps)
                print(f"[{r}] hierlab {prec}: {tps:,.0f} tokens/s", flush=True)
        results["runs_tokens_per_s"] = runs
        best = {k: max(v) for k, v in runs.items()}
        results["best_tokens_per_s"] = best
        if "hf_trainer" in best:
            for k, v in best.items():
                if k != "hf_trainer":
                    results[f"ratio_{k}_vs_hf"] = v / best["hf_trainer"]
                    print(
                        f"{k}: {v:,.0f} tokens/s = {v / best['hf_trainer']:.2f} x HF Trainer "
                        f"({ref_prec}, {best['hf_trainer']:,.0f} tokens/s); best of "
                        f"{args.repeats}",
                        flush=True,
                    )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
