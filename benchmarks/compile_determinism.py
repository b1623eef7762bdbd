"""Is a compiled CPU run deterministic? Two identical runs per mode, losses compared.

Why this exists: ``training.compile`` with eager attention is the fastest CPU setting we
measured (benchmarks/train_throughput.py, ``hierlab_eager_compile``), but a speed-up that
breaks "same config, identical losses" is not taken as a default. This trains the config's
first corpus ``--steps`` steps twice per mode in one process (same seed, same data, logged
every step) and prints, per mode, whether the two loss columns are identical and their
largest difference. Before compiled CPU training ran under deterministic algorithms
(``hierlab.train.kernels.deterministic``) it found the compiled modes drifting apart by
4e-5 to 1e-4 within 12 steps; now every mode is identical::

    python benchmarks/compile_determinism.py --steps 12
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
from pathlib import Path

from hierlab.config import load_config
from hierlab.pipeline import run as run_pipeline
from hierlab.train.loop import train_model
from train_throughput import bench_train_cfg

MODES = {
    "sdpa": {"attention": "sdpa"},
    "eager": {"attention": "eager"},
    "eager_compile": {"attention": "eager", "compile": True},
    "sdpa_compile": {"attention": "sdpa", "compile": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quickstart", help="preset name or YAML path")
    ap.add_argument("--steps", type=int, default=12, help="training steps per run")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--threads", type=int, help="training.threads (default: torch's)")
    ap.add_argument("--only", help="comma list of modes (default: all)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(a.config)
    bench = argparse.Namespace(warmup=0, steps=a.steps, batch=cfg.training.batch_size,
                               precision=a.precision, device="cpu")
    modes = a.only.split(",") if a.only else list(MODES)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_pipeline(cfg, root / "run", stages=("corpus",))
        corpus = root / "run" / "corpus" / next(iter(cfg.corpora))
        print(f"{'mode':15s} identical  max |loss difference|  final losses")
        for mode in modes:
            losses = []
            for rep in range(2):
                out = root / f"{mode}-{rep}"
                tcfg = bench_train_cfg(cfg, bench, threads=a.threads, **MODES[mode])
                train_model(cfg.model, tcfg, corpus, out)
                with open(out / "loss.csv") as fh:
                    losses.append([float(r["train_loss"]) for r in csv.DictReader(fh)])
            diff = max(abs(x - y) for x, y in zip(*losses, strict=True))
            print(f"{mode:15s} {str(losses[0] == losses[1]):9s}  {diff:20.3g}  "
                  f"{losses[0][-1]:.7f} {losses[1][-1]:.7f}", flush=True)


if __name__ == "__main__":
    main()
