"""Shared builders for the probe tests (tiny random-init models; no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoConfig,
    OlmoForCausalLM,
)

ROLES = {"subject": [0, 300], "verb": [300, 600], "object": [600, 900], "connector": [900, 1000]}

#: the decoder families of the public checkpoint suites, beside hierlab's own Llama
SUITE_KINDS = ("neox", "gpt2", "olmo2")


def tiny_model(kind: str = "llama", seed: int = 0, layers: int = 2, vocab: int = 1003,
               attn: str = "eager", parallel: bool = True) -> torch.nn.Module:
    """A 2-layer, d=32, 4-head random model of one HF family.

    ``neox``: GPT-NeoX as Pythia (fused qkv, rotary on a quarter of each head, parallel
    attention + MLP unless ``parallel=False``); ``gpt2``: GPT-2 with the Stanford CRFM
    runs' attention flags (its own upcast eager path); ``olmo2``: norms after each
    sublayer, q/k norms. Their weights are drawn wider than HF's default (std 0.2, so
    attention is far from uniform and ablations move the logits) and their biases and norm
    gains at random (HF initialises them to 0 and 1), so every term of a decomposition is
    exercised.
    """
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=256)
    ids = dict(pad_token_id=1002, eos_token_id=1000, bos_token_id=1000, initializer_range=0.2)
    if kind == "llama":
        m = LlamaForCausalLM(LlamaConfig(**common))
    elif kind == "olmo":
        m = OlmoForCausalLM(OlmoConfig(**common, pad_token_id=1002, eos_token_id=1000))
    elif kind == "olmo2":
        m = Olmo2ForCausalLM(Olmo2Config(**common, **ids))
    elif kind == "neox":
        m = GPTNeoXForCausalLM(GPTNeoXConfig(**common, **ids, rotary_pct=0.25,
                                             use_parallel_residual=parallel))
    elif kind == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=layers, n_head=4, n_inner=64,
            n_positions=256, reorder_and_upcast_attn=True, initializer_range=0.2,
            scale_attn_by_inverse_layer_idx=True, pad_token_id=1002, eos_token_id=1000,
            bos_token_id=1000))
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    if kind in SUITE_KINDS:
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                elif "norm" in name or ".ln_" in name:
                    p.add_(0.1 * torch.randn_like(p))
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
