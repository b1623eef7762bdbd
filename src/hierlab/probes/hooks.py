"""One hook layer over Hugging Face decoder models: read activations, intervene on them.

Why plain ``torch`` hooks (``register_forward_hook`` / ``register_forward_pre_hook``) and
not TransformerLens or nnsight: no extra dependency; no tracing or re-implementation
overhead, which dominates on the tiny models this toolkit trains; and they run on the
*unchanged* HF module tree, so any checkpoint that ``from_pretrained`` loads is measured
exactly as HF computes it (TransformerLens re-implements each architecture).

Hook points use TransformerLens's names, so every probe speaks one vocabulary and a
TransformerLens cache reads the same keys (tested against ``TransformerBridge``):

=================================  ==========================================================
``hook_embed``                     token embeddings ``[B, T, d]``
``blocks.{l}.hook_resid_pre``      residual stream entering block ``l`` ``[B, T, d]``
``blocks.{l}.hook_resid_post``     residual stream after block ``l`` (the block output)
``blocks.{l}.attn.hook_z``         per-head attention output *before* ``o_proj`` ``[B, T, H, dh]``
``blocks.{l}.attn.hook_pattern``   attention probabilities ``[B, H, Tq, Tk]`` (eager attention)
``blocks.{l}.hook_attn_out``       what attention adds to the residual ``[B, T, d]``: its output
                                   after ``o_proj`` (after the post-attention norm in OLMo-2)
``blocks.{l}.hook_mlp_out``        what the MLP adds to the residual ``[B, T, d]`` (OLMo-2:
                                   after the post-feedforward norm)
``ln_final.hook_out``              final-norm output ``[B, T, d]``
``unembed.hook_out``               logits ``[B, T, V]``
=================================  ==========================================================

An *edit* is a function ``act -> new_act | None`` (``None`` keeps the activation); the
interventions (:meth:`HookedModel.ablate`, :meth:`~HookedModel.overwrite`,
:meth:`~HookedModel.add_vector`, :meth:`~HookedModel.patch`) are context managers built on
:meth:`HookedModel.edit`. Guard: every hook registered by a context must fire at least
once before the context exits, else :class:`HookNotFiredError` is raised -- a hook on a
module the forward never reaches would otherwise silently measure nothing.

A new HF decoder family is one :class:`~hierlab.probes.architectures.Architecture` entry
(:func:`~hierlab.probes.architectures.register_architecture`); the interventions live in
:mod:`hierlab.probes.interventions`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from hierlab.errors import ConfigError
from hierlab.probes.architectures import (
    ARCHITECTURES,
    Architecture,
    linear_weight,
    module_at,
    register_architecture,
)
from hierlab.probes.interventions import Interventions

Edit = Callable[[torch.Tensor], "torch.Tensor | None"]

# ARCHITECTURES, Architecture and register_architecture are re-exported: error messages
# and the docs name them here, beside the hook layer that reads them
__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "HookNotFiredError",
    "HookedModel",
    "register_architecture",
]


#: hook names before they took TransformerLens's names (a clear error, not "unknown")
_RENAMED = {"attn.hook_out": "hook_attn_out", "mlp.hook_out": "hook_mlp_out"}


class HookNotFiredError(RuntimeError):
    """A registered hook never ran: the hook point is not on the forward path."""


class _Registration:
    """One torch hook plus its fire counter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.handle: Any = None


class HookedModel(Interventions):
    """A thin adapter: named hook points and interventions on an unchanged HF model."""

    def __init__(self, model: nn.Module) -> None:
        cls = type(model).__name__
        if cls not in ARCHITECTURES:
            raise ConfigError(
                f"model class {cls} has no hook mapping "
                f"(known: {', '.join(sorted(ARCHITECTURES))}); "
                "add one with hierlab.probes.hooks.register_architecture"
            )
        self.model = model
        self.arch = ARCHITECTURES[cls]
        cfg = model.config
        self.config = cfg
        self.blocks: nn.ModuleList = module_at(model, self.arch.layers)  # type: ignore[assignment]
        self.n_layers = len(self.blocks)
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.d_model = int(cfg.hidden_size)
        self.d_head = int(getattr(cfg, "head_dim", None) or self.d_model // self.n_heads)
        self.final_norm = module_at(model, self.arch.final_norm)
        self.lm_head = module_at(model, self.arch.lm_head)
        self.embed = module_at(model, self.arch.embed)
        self.vocab_size = int(self.lm_head.weight.shape[0])

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def attn(self, layer: int) -> nn.Module:
        return module_at(self.blocks[layer], self.arch.attn)

    def o_proj(self, layer: int) -> nn.Module:
        return module_at(self.blocks[layer], self.arch.o_proj)

    def mlp(self, layer: int) -> nn.Module:
        return module_at(self.blocks[layer], self.arch.mlp)

    def attn_out(self, layer: int) -> nn.Module:
        """The module whose output attention adds to the residual (``hook_attn_out``)."""
        return module_at(self.blocks[layer], self.arch.attn_out or self.arch.attn)

    def mlp_out(self, layer: int) -> nn.Module:
        """The module whose output the MLP adds to the residual (``hook_mlp_out``)."""
        return module_at(self.blocks[layer], self.arch.mlp_out or self.arch.mlp)

    def input_norm(self, layer: int) -> nn.Module | None:
        """The norm attention reads the residual through (``None``: the raw residual)."""
        name = self.arch.input_norm
        return None if name is None else module_at(self.blocks[layer], name)

    def o_weight(self, layer: int) -> torch.Tensor:
        """``W_O`` of ``layer`` as ``[d, H * dh]``, whatever the module stores."""
        return linear_weight(self.o_proj(layer), self.arch.conv1d)

    def o_bias(self, layer: int) -> torch.Tensor | None:
        """``o_proj``'s bias ``[d]`` (added once, not per head), or ``None``."""
        return getattr(self.o_proj(layer), "bias", None)

    def v_weight(self, layer: int) -> torch.Tensor:
        """``W_V`` of ``layer`` as ``[H_kv * dh, d]``, head ``h``'s rows at ``h * dh``.

        Unpacks the fused projections: GPT-NeoX's ``query_key_value`` holds per head
        ``[q; k; v]`` rows (HF views its output as ``[..., H, 3 * dh]`` and chunks), GPT-2's
        ``c_attn`` holds ``[Q | K | V]`` (HF splits its output in three of ``d``).
        """
        w = linear_weight(module_at(self.blocks[layer], self.arch.v_proj), self.arch.conv1d)
        dh, hkv, d = self.d_head, self.n_kv_heads, w.shape[-1]
        if self.arch.qkv_layout == "per_head":
            return w.reshape(hkv, 3, dh, d)[:, 2].reshape(hkv * dh, d)
        if self.arch.qkv_layout == "blocks":
            return w[2 * hkv * dh : 3 * hkv * dh]
        return w

    def hook_names(self) -> list[str]:
        """Every hook point of this model."""
        names = ["hook_embed"]
        for i in range(self.n_layers):
            names += [
                f"blocks.{i}.hook_resid_pre",
                f"blocks.{i}.attn.hook_z",
                f"blocks.{i}.attn.hook_pattern",
                f"blocks.{i}.hook_attn_out",
                f"blocks.{i}.hook_mlp_out",
                f"blocks.{i}.hook_resid_post",
            ]
        return names + ["ln_final.hook_out", "unembed.hook_out"]

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Plain HF forward (no KV cache) returning logits ``[B, T, V]``."""
        kwargs.setdefault("use_cache", False)
        return self.model(input_ids=input_ids.to(self.device), **kwargs).logits

    # --------------------------------------------------------------- resolution
    def _site(self, name: str) -> tuple[nn.Module, str]:
        """(module, kind) for a hook name; kind in out|pattern|z|pre."""
        parts = name.split(".")
        if name == "hook_embed":
            return self.embed, "out"
        if name == "ln_final.hook_out":
            return self.final_norm, "out"
        if name == "unembed.hook_out":
            return self.lm_head, "out"
        if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit():
            layer = int(parts[1])
            if not 0 <= layer < self.n_layers:
                raise ConfigError(f"hook {name}: layer {layer} not in 0..{self.n_layers - 1}")
            rest = ".".join(parts[2:])
            table = {
                "hook_resid_pre": (self.blocks[layer], "pre"),
                "hook_resid_post": (self.blocks[layer], "out"),
                "attn.hook_z": (self.o_proj(layer), "z"),
                "attn.hook_pattern": (self.attn(layer), "pattern"),
                "hook_attn_out": (self.attn_out(layer), "out"),
                "hook_mlp_out": (self.mlp_out(layer), "out"),
            }
            if rest in table:
                return table[rest]
            if rest in _RENAMED:
                raise ConfigError(f"hook {name}: renamed to blocks.{layer}.{_RENAMED[rest]} "
                                  "(TransformerLens's name)")
        if name == "embed.hook_out":
            raise ConfigError("hook embed.hook_out: renamed to hook_embed (TransformerLens's name)")
        raise ConfigError(f"unknown hook point {name!r} (see HookedModel.hook_names())")

    def _register(self, name: str, fn: Edit) -> _Registration:
        module, kind = self._site(name)
        reg = _Registration(name)
        n_heads, d_head = self.n_heads, self.d_head

        if kind == "pre":

            def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
                reg.calls += 1
                if args:
                    new = fn(args[0])
                    return None if new is None else ((new, *args[1:]), kwargs)
                new = fn(kwargs["hidden_states"])
                return None if new is None else (args, {**kwargs, "hidden_states": new})

            reg.handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        elif kind == "z":

            def z_hook(mod: nn.Module, args: tuple) -> Any:
                reg.calls += 1
                x = args[0]
                new = fn(x.view(*x.shape[:-1], n_heads, d_head))
                return None if new is None else (new.reshape(x.shape), *args[1:])

            reg.handle = module.register_forward_pre_hook(z_hook)
        elif kind == "pattern":

            def pattern_hook(mod: nn.Module, args: tuple, output: Any) -> Any:
                reg.calls += 1
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise ConfigError(
                        f"{name}: attention weights are not returned; load the model with "
                        "attn_implementation='eager' (or use HookedModel.eager())"
                    )
                if fn(weights) is not None:
                    raise ConfigError(f"{name}: attention patterns are read-only")
                return None

            reg.handle = module.register_forward_hook(pattern_hook)
        else:

            def out_hook(mod: nn.Module, args: tuple, output: Any) -> Any:
                reg.calls += 1
                if isinstance(output, tuple):
                    new = fn(output[0])
                    return None if new is None else (new, *output[1:])
                new = fn(output)
                return new

            reg.handle = module.register_forward_hook(out_hook)
        return reg

    # ----------------------------------------------------------- core contexts
    @contextlib.contextmanager
    def edit(self, *pairs: tuple[str, Edit]) -> Iterator[list[_Registration]]:
        """Register ``(hook name, fn)`` pairs for the duration of the block.

        ``fn(act)`` returns a replacement tensor or ``None``. On a clean exit every hook
        must have fired at least once (:class:`HookNotFiredError` otherwise).
        """
        regs: list[_Registration] = []
        try:
            for name, fn in pairs:
                regs.append(self._register(name, fn))
            yield regs
        except BaseException:
            for r in regs:
                r.handle.remove()
            raise
        for r in regs:
            r.handle.remove()
        silent = [r.name for r in regs if r.calls == 0]
        if silent:
            raise HookNotFiredError(f"hooks never fired: {', '.join(silent)}")

    @contextlib.contextmanager
    def capture(self, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Record activations (detached, last call wins) into the yielded dict."""
        store: dict[str, torch.Tensor] = {}

        def make(n: str) -> Edit:
            def fn(act: torch.Tensor) -> None:
                store[n] = act.detach()
                return None

            return fn

        with self.edit(*[(n, make(n)) for n in names]):
            yield store

    def run_with_cache(
        self, input_ids: torch.Tensor, names: Sequence[str], **kwargs: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward once, returning logits and the named activations."""
        with self.capture(names) as store:
            logits = self.forward(input_ids, **kwargs)
        return logits, store

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Temporarily switch to eager attention (needed for ``hook_pattern``).

        Through transformers' public ``set_attn_implementation``, which also reaches the
        sub-configs of composite models; the previous implementation is restored on exit.
        """
        old = getattr(self.model.config, "_attn_implementation", None)
        if old in (None, "eager"):
            yield
            return
        self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.model.set_attn_implementation(old)

    # ------------------------------------------------------ weights and the norm
    def head_out_proj(self, layer: int, z: torch.Tensor, head: int) -> torch.Tensor:
        """One head's share of ``o_proj``'s output: ``W_O[:, head] @ z`` (``[..., d]``).

        The heads' shares plus :meth:`o_bias` sum to ``o_proj``'s output, which is what
        attention adds to the residual -- except in a family that normalises it first
        (OLMo-2), where the sum is the norm's input.
        """
        w = self.o_weight(layer)  # [d, H*dh]
        lo = head * self.d_head
        return z.to(w.dtype) @ w[:, lo : lo + self.d_head].T

    def norm_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm's per-position divisor (``rms`` or ``std``) of ``x``, ``[..., 1]``."""
        x = x.float()
        eps = self._norm_eps()
        if self.arch.norm == "rms":
            return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)

    def _norm_eps(self) -> float:
        n = self.final_norm
        for attr in ("variance_epsilon", "eps"):
            if hasattr(n, attr):
                return float(getattr(n, attr))
        return 1e-5  # OlmoLayerNorm hard-codes eps=1e-5

    def norm_linear(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The final norm with a *frozen* divisor ``scale``: linear in ``x`` (no bias).

        ``rms``: ``g * x / scale``; ``layer``: ``g * (x - mean(x)) / scale``.
        """
        x = x.float()
        if self.arch.norm == "layer":
            x = x - x.mean(-1, keepdim=True)
        y = x / scale
        w = getattr(self.final_norm, "weight", None)
        return y * w.float() if w is not None else y

    def norm_bias(self) -> torch.Tensor | None:
        b = getattr(self.final_norm, "bias", None)
        return None if b is None else b.float()
