"""Shared builders for the probe tests (tiny random-init models; no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OlmoConfig, OlmoForCausalLM

ROLES = {"subject": [0, 300], "verb": [300, 600], "object": [600, 900], "connector": [900, 1000]}


def tiny_model(kind: str = "llama", seed: int = 0, layers: int = 2, vocab: int = 1003,
               attn: str = "eager") -> torch.nn.Module:
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=256)
    if kind == "llama":
        m = LlamaForCausalLM(LlamaConfig(**common))
    else:
        m = OlmoForCausalLM(OlmoConfig(**common, pad_token_id=1002, eos_token_id=1000))
    m.set_attn_implementation(attn)
    return m.eval()


def make_run(root: Path, steps=(10, 20), corrupt: int | None = 30, kind: str = "llama") -> Path:
    """A hierlab run dir with a pcfg test split and tiny checkpoints (one corrupt)."""
    from hierlab.corpus.shards import write_split

    run = root / "run"
    toks = np.random.default_rng(0).integers(0, 1001, size=4000).astype(np.uint16)
    write_split(run / "corpus" / "pcfg" / "test", [toks],
                doc_starts=[np.arange(0, 4000, 100, dtype=np.int64)], manifest={
        "corpus": "pcfg", "split": "test", "kind": "pcfg", "vocab_size": 1003, "eos_id": 1000,
        "pad_id": 1002, "unk_id": 1001, "boundary_id": None, "roles": ROLES})
    ck_root = run / "models" / "pcfg" / "checkpoints"
    for i, step in enumerate(steps):
        d = ck_root / f"step-{step:08d}"
        tiny_model(kind, seed=i).save_pretrained(d)
        (d / "state.json").write_text(json.dumps({"step": step, "tokens_seen": step * 1000}))
    if corrupt is not None:
        d = ck_root / f"step-{corrupt:08d}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{not json")
        (d / "state.json").write_text(json.dumps({"step": corrupt, "tokens_seen": 1}))
    return run


def tiny_probes_config(**overrides):
    from hierlab.probes.config import ProbesConfig

    cfg = {
        "device": "cpu",
        "induction": {"samples": 3, "n": 8, "k_max": 3, "position_windows": 2,
                      "indist_samples": 2, "icl_length": 64, "icl_early_band": [5, 10],
                      "icl_late_band": [50, 60]},
        "fv": {"reference_pairs": 4, "tasks": ["copy_object", "restate_object"], "n_shots": 3,
               "mean_prompts": 4, "cie_prompts": 2, "eval_prompts": 4},
        "hydra": {"max_samples": 2, "length": 32, "random_samples": 2, "random_length": 32,
                  "standard_samples": 2, "standard_length": 16},
        "structure": {"samples": 5},
    }
    cfg.update(overrides)
    return ProbesConfig.model_validate(cfg)
