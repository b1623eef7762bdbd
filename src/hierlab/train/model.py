"""Build the HF Llama model from the config.

A stock ``LlamaForCausalLM`` (not a re-implementation) so every checkpoint loads with
``AutoModelForCausalLM.from_pretrained`` and in TransformerLens / nnsight unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hierlab.errors import ConfigError
from hierlab.train.config import ModelConfig

__all__ = ["build_model", "llama_config", "resolve_vocab_size"]


def resolve_vocab_size(cfg: ModelConfig, manifest: dict[str, Any], source: str) -> int:
    """The embedding size: the corpus manifest's ``vocab_size``.

    An explicit config value must equal it: a silent resize would make token ids and
    embeddings disagree.

    Args:
        cfg: the model section (its optional ``vocab_size``).
        manifest: the train split's manifest.
        source: the manifest's path, named in errors.

    Returns:
        The vocabulary size; a missing or conflicting one is a
        :class:`~hierlab.errors.ConfigError`.
    """
    corpus_vocab = manifest.get("vocab_size")
    if not isinstance(corpus_vocab, int) or corpus_vocab < 2:
        raise ConfigError(f"{source}: manifest has no valid vocab_size (got {corpus_vocab!r})")
    if cfg.vocab_size is not None and cfg.vocab_size != corpus_vocab:
        raise ConfigError(
            f"model.vocab_size: {cfg.vocab_size} does not match the corpus vocab_size "
            f"{corpus_vocab} ({source}); remove model.vocab_size or set it to {corpus_vocab}"
        )
    return corpus_vocab


def llama_config(
    cfg: ModelConfig,
    vocab_size: int,
    *,
    eos_id: int | None = None,
    pad_id: int | None = None,
    bos_id: int | None = None,
) -> LlamaConfig:
    """The HF config of the reference architecture with our vocabulary.

    See docs/reference-study.md#model-and-training for the architecture.

    Args:
        cfg: the model section.
        vocab_size: the corpus's vocabulary size.
        eos_id: the end-of-sentence id, so HF generation stops there.
        pad_id: the padding id.
        bos_id: the document boundary id, when the corpus has one.

    Returns:
        The ``LlamaConfig``.
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.context_length,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        initializer_range=cfg.initializer_range,
        tie_word_embeddings=cfg.tie_word_embeddings,
        attention_dropout=cfg.attention_dropout,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_model(
    cfg: ModelConfig, vocab_size: int, seed: int, **token_ids: int | None
) -> LlamaForCausalLM:
    """A freshly initialised model; the same (config, vocab, seed) gives the same weights.

    The global torch RNG is forked, so building a model does not disturb the caller's RNG.

    Args:
        cfg: the model section.
        vocab_size: the corpus's vocabulary size.
        seed: the initialisation seed.
        **token_ids: ``eos_id``, ``pad_id`` and ``bos_id`` for :func:`llama_config`.

    Returns:
        The ``LlamaForCausalLM``, on the CPU.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config(cfg, vocab_size, **token_ids))
    return model
