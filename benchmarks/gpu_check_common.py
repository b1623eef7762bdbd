"""What the GPU check's sections share: the experiment, its sizes and FLOPs, the row format.

Part of ``benchmarks/gpu_check.py`` (the orchestrator); the sections are
``gpu_check_train.py`` (corpus, train, ddp) and ``gpu_check_probes.py`` (probes).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

PRECISIONS = ("bf16", "fp16")
IMPLS = ("hf_trainer", "hierlab")
PEAKS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}


def experiment(dry: bool) -> Any:
    """The training experiment: the reference model on a 1000-word n-gram corpus."""
    from hierlab.config import ExperimentConfig

    ngram = {"kind": "ngram", "seed": 0, "vocab_size": 1000, "train_sentences": 50_000,
             "test_sentences": 1000, "sentences_per_shard": 50_000}
    model: dict[str, Any] = {}
    probes: dict[str, Any] = {}  # not run; only has to fit the context (load-time check)
    if dry:
        ngram.update(train_sentences=2000, test_sentences=100)
        model = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "context_length": 32}
        probes = {"induction": {"n": 8}, "hydra": {"standard_length": 16}}
    return ExperimentConfig.model_validate({
        "name": "gpu_check", "corpora": {"ngram": ngram}, "model": model, "probes": probes,
        "training": {"batch_size": 4 if dry else 256, "lr": 1e-3, "betas": [0.9, 0.95],
                     "precision": "bf16", "device": "cpu" if dry else "cuda"},
    })


def bench_args(a: argparse.Namespace, precision: str, compile_: bool) -> argparse.Namespace:
    """The namespace train_throughput's bench_* functions read (its CLI's fields)."""
    return argparse.Namespace(
        device="cpu" if a.dry_run else "cuda", precision=precision,
        batch=experiment(a.dry_run).training.batch_size, steps=a.steps, warmup=a.warmup,
        compile_hf=compile_)


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def n_params(cfg: Any, corpus: Path) -> int:
    """Parameters of the model the benchmarks build on this corpus (embeddings included)."""
    from hierlab.train.data import TokenWindows
    from hierlab.train.model import build_model

    vocab = TokenWindows(corpus / "train", cfg.model.context_length).vocab_size
    return sum(p.numel() for p in build_model(cfg.model, vocab, 0).parameters())


def flops_per_token(n_params: int, cfg: Any) -> float:
    m = cfg.model
    return 6.0 * n_params + 12.0 * m.num_layers * m.context_length * m.hidden_size


def row(section: str, what: str, tps: float | None = None, mfu: float | None = None,
        seconds: float | None = None, note: str = "") -> dict[str, Any]:
    return {"section": section, "what": what, "tps": tps, "mfu": mfu, "seconds": seconds,
            "note": note}


def label(section: str) -> str:  # the table's section column: train_compile -> train
    return section.split("_")[0]


def expected_rows(section: str, dry: bool) -> list[str]:
    """The row names a section owes the table (the missing ones get its error)."""
    if section in ("train", "train_compile"):
        mode = "compile" if section == "train_compile" else "eager"
        return [f"{impl} {p} {mode}" for p in PRECISIONS for impl in IMPLS]
    return {"corpus": ["n-gram corpus (pipeline corpus stage)"],
            "probes": ["OLMo-1B-size probe suite" if not dry else "2-layer Olmo probe suite"],
            "ddp": ["hierlab train, torchrun 2 processes bf16"]}[section]
