"""Where the parts of each Hugging Face decoder family live, for the hook layer.

A new HF decoder family is one :class:`Architecture` entry (:func:`register_architecture`):
where the blocks, attention, ``o_proj``, MLP, final norm and unembedding live. The hook
layer (:mod:`hierlab.probes.hooks`) reads this table and never names a family itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["ARCHITECTURES", "Architecture", "module_at", "register_architecture"]


def module_at(root: nn.Module, dotted: str) -> nn.Module:
    """The submodule at a dotted attribute path of an :class:`Architecture` entry."""
    mod = root
    for part in dotted.split("."):
        mod = getattr(mod, part)
    return mod


@dataclass(frozen=True)
class Architecture:
    """Where the parts of one HF decoder family live (dotted attribute paths).

    ``layers``, ``final_norm``, ``lm_head`` and ``embed`` are relative to the causal-LM
    model; ``attn``, ``o_proj`` and ``mlp`` relative to one decoder block. ``norm`` is the
    final norm's kind: ``rms`` (``x / rms(x) * g``) or ``layer`` (``(x - mean) / std * g + b``,
    with ``g``, ``b`` optional as in OLMo's parameter-free LayerNorm).
    """

    layers: str = "model.layers"
    attn: str = "self_attn"
    o_proj: str = "self_attn.o_proj"
    mlp: str = "mlp"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    embed: str = "model.embed_tokens"
    norm: Literal["rms", "layer"] = "rms"


ARCHITECTURES: dict[str, Architecture] = {
    "LlamaForCausalLM": Architecture(norm="rms"),
    "OlmoForCausalLM": Architecture(norm="layer"),
}


def register_architecture(class_name: str, arch: Architecture) -> None:
    """Teach the hook layer a new HF decoder class (e.g. ``Qwen2ForCausalLM``)."""
    ARCHITECTURES[class_name] = arch
