"""Where the parts of each Hugging Face decoder family live, for the hook layer.

A new HF decoder family is one :class:`Architecture` entry (:func:`register_architecture`):
where the blocks, attention, ``o_proj``, MLP, final norm and unembedding live, how the value
projection is laid out, and which module's output each sublayer adds to the residual
stream. The hook layer (:mod:`hierlab.probes.hooks`) reads this table and never names a
family itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "Architecture", "linear_weight", "module_at",
           "register_architecture"]


def module_at(root: nn.Module, dotted: str) -> nn.Module:
    """The submodule at a dotted attribute path of an :class:`Architecture` entry.

    Args:
        root: the module the path starts from (the causal-LM model or one block).
        dotted: attribute names joined by dots, e.g. ``"self_attn.o_proj"``.

    Returns:
        The module at the end of the path.
    """
    mod = root
    for part in dotted.split("."):
        mod = getattr(mod, part)
    return mod


def linear_weight(module: nn.Module, conv1d: bool) -> torch.Tensor:
    """A projection's weight as ``[out, in]`` (``nn.Linear``'s layout).

    GPT-2's ``Conv1D`` stores ``[in, out]`` (``y = x @ W + b``), so it is transposed; the
    view shares storage with the parameter.

    Args:
        module: the projection (``nn.Linear`` or GPT-2's ``Conv1D``).
        conv1d: whether it stores its weight as ``[in, out]``.

    Returns:
        The weight as ``[out, in]``, a view of the parameter.
    """
    w = module.weight
    return w.T if conv1d else w


@dataclass(frozen=True)
class Architecture:
    """Where the parts of one HF decoder family live (dotted attribute paths).

    The hook layer reads only this record, so a family's quirks (fused projections,
    post-sublayer norms) are stated once, here, and never tested for by name.

    Attributes:
        layers: the list of decoder blocks, relative to the causal-LM model.
        attn: the attention module, relative to one block.
        o_proj: attention's output projection, relative to one block.
        mlp: the MLP, relative to one block.
        final_norm: the norm before the unembedding, relative to the model.
        lm_head: the unembedding, relative to the model.
        embed: the token embedding, relative to the model.
        norm: the final norm's kind: ``rms`` (``x / rms(x) * g``) or ``layer``
            (``(x - mean) / std * g + b``, with ``g``, ``b`` optional as in OLMo's
            parameter-free LayerNorm).
        attn_out: the module whose output attention adds to the residual stream when
            that is not ``attn`` itself (OLMo-2 normalises each sublayer's output:
            ``post_attention_layernorm``); ``None`` means ``attn``.
        mlp_out: the same for the MLP (OLMo-2: ``post_feedforward_layernorm``); ``None``
            means ``mlp``.
        input_norm: the norm the attention reads through (``None``: the raw residual, as
            in OLMo-2).
        v_proj: the module holding the value projection, laid out as ``qkv_layout``.
        qkv_layout: ``split`` (its own ``[H_kv * dh, d]`` matrix), ``per_head``
            (GPT-NeoX's fused ``query_key_value``: per head ``[q; k; v]`` rows of ``dh``
            each) or ``blocks`` (GPT-2's fused ``c_attn``: ``[Q | K | V]`` of ``d`` each).
        conv1d: projections store their weight as ``[in, out]`` (GPT-2's ``Conv1D``).
    """

    layers: str = "model.layers"
    attn: str = "self_attn"
    o_proj: str = "self_attn.o_proj"
    mlp: str = "mlp"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    embed: str = "model.embed_tokens"
    norm: Literal["rms", "layer"] = "rms"
    attn_out: str | None = None
    mlp_out: str | None = None
    input_norm: str | None = "input_layernorm"
    v_proj: str = "self_attn.v_proj"
    qkv_layout: Literal["split", "per_head", "blocks"] = "split"
    conv1d: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    "LlamaForCausalLM": Architecture(norm="rms"),
    "OlmoForCausalLM": Architecture(norm="layer"),
    # OLMo-2: RMSNorm after each sublayer (its output is what the residual receives), no
    # norm before attention, q_norm/k_norm inside attention (read from HF's own forward)
    "Olmo2ForCausalLM": Architecture(
        norm="rms", attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm",
        input_norm=None,
    ),
    # GPT-NeoX (Pythia): with use_parallel_residual the MLP reads the block input, beside
    # attention; both add to the residual. Partial rotary is inside HF's attention.
    # (transformers 5 loads the checkpoints' embed_out as lm_head)
    "GPTNeoXForCausalLM": Architecture(
        layers="gpt_neox.layers", attn="attention", o_proj="attention.dense",
        final_norm="gpt_neox.final_layer_norm", embed="gpt_neox.embed_in",
        norm="layer", v_proj="attention.query_key_value", qkv_layout="per_head",
    ),
    # GPT-2 (and the Stanford CRFM Mistral runs): Conv1D projections, fused c_attn,
    # learned positions added to the token embedding before block 0
    "GPT2LMHeadModel": Architecture(
        layers="transformer.h", attn="attn", o_proj="attn.c_proj",
        final_norm="transformer.ln_f", embed="transformer.wte", norm="layer",
        input_norm="ln_1", v_proj="attn.c_attn", qkv_layout="blocks", conv1d=True,
    ),
}


def register_architecture(class_name: str, architecture: Architecture) -> None:
    """Teach the hook layer a new HF decoder class (e.g. ``Qwen2ForCausalLM``).

    Args:
        class_name: the model class's ``__name__``, as ``from_pretrained`` builds it.
        architecture: where that family's parts live; replaces an earlier entry.
    """
    ARCHITECTURES[class_name] = architecture
