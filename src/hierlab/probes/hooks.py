"""One hook layer over Hugging Face decoder models: read activations, intervene on them.

:class:`HookedModel` gives every probe TransformerLens's hook names over the unchanged HF
module tree with plain torch hooks, so a checkpoint is measured exactly as HF computes it,
and a hook that never fires is an error rather than a silent zero. The hook points and why
plain hooks: docs/design-probes.md#hooks.
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
    """A thin adapter: named hook points and interventions on an unchanged HF model.

    Args:
        model: a causal-LM whose class has an :data:`ARCHITECTURES` entry; it is used as
            is, never copied or re-implemented.

    Raises:
        ConfigError: the model's class has no entry (add one with
            :func:`register_architecture`).
    """

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
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's parameters."""
        return next(self.model.parameters()).dtype

    def attn(self, layer: int) -> nn.Module:
        """The attention module of one block.

        Args:
            layer: the block's index.

        Returns:
            The module whose forward returns the attention weights (``hook_pattern``).
        """
        return module_at(self.blocks[layer], self.arch.attn)

    def o_proj(self, layer: int) -> nn.Module:
        """Attention's output projection in one block.

        Args:
            layer: the block's index.

        Returns:
            The module whose input is ``hook_z`` (the heads' outputs, concatenated).
        """
        return module_at(self.blocks[layer], self.arch.o_proj)

    def mlp(self, layer: int) -> nn.Module:
        """The MLP of one block.

        Args:
            layer: the block's index.

        Returns:
            The MLP module.
        """
        return module_at(self.blocks[layer], self.arch.mlp)

    def attn_out(self, layer: int) -> nn.Module:
        """The module whose output attention adds to the residual (``hook_attn_out``).

        Args:
            layer: the block's index.

        Returns:
            The attention module itself, or the norm after it in a family that normalises
            the sublayer output (OLMo-2).
        """
        return module_at(self.blocks[layer], self.arch.attn_out or self.arch.attn)

    def mlp_out(self, layer: int) -> nn.Module:
        """The module whose output the MLP adds to the residual (``hook_mlp_out``).

        Args:
            layer: the block's index.

        Returns:
            The MLP itself, or the norm after it (OLMo-2).
        """
        return module_at(self.blocks[layer], self.arch.mlp_out or self.arch.mlp)

    def input_norm(self, layer: int) -> nn.Module | None:
        """The norm attention reads the residual through.

        Args:
            layer: the block's index.

        Returns:
            The norm module, or ``None`` when attention reads the raw residual (OLMo-2).
        """
        name = self.arch.input_norm
        return None if name is None else module_at(self.blocks[layer], name)

    def o_weight(self, layer: int) -> torch.Tensor:
        """``W_O`` of one block, whatever layout the module stores.

        Args:
            layer: the block's index.

        Returns:
            The output projection's weight as ``[d, H * dh]``.
        """
        return linear_weight(self.o_proj(layer), self.arch.conv1d)

    def o_bias(self, layer: int) -> torch.Tensor | None:
        """The output projection's bias, added once and not per head.

        Args:
            layer: the block's index.

        Returns:
            The bias ``[d]``, or ``None`` when the projection has none.
        """
        return getattr(self.o_proj(layer), "bias", None)

    def v_weight(self, layer: int) -> torch.Tensor:
        """``W_V`` of one block, unpacked from a fused projection where needed.

        GPT-NeoX's ``query_key_value`` holds per head ``[q; k; v]`` rows (HF views its
        output as ``[..., H, 3 * dh]`` and chunks), GPT-2's ``c_attn`` holds
        ``[Q | K | V]`` (HF splits its output in three of ``d``).

        Args:
            layer: the block's index.

        Returns:
            The value weight as ``[H_kv * dh, d]``, head ``h``'s rows at ``h * dh``.
        """
        w = linear_weight(module_at(self.blocks[layer], self.arch.v_proj), self.arch.conv1d)
        dh, hkv, d = self.d_head, self.n_kv_heads, w.shape[-1]
        if self.arch.qkv_layout == "per_head":
            return w.reshape(hkv, 3, dh, d)[:, 2].reshape(hkv * dh, d)
        if self.arch.qkv_layout == "blocks":
            return w[2 * hkv * dh : 3 * hkv * dh]
        return w

    def hook_names(self) -> list[str]:
        """Every hook point of this model, so a typo can be told from a missing point.

        Returns:
            The hook names, from ``hook_embed`` to ``unembed.hook_out``.
        """
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
        """Plain HF forward (no KV cache), through whatever hooks are registered.

        Args:
            input_ids: token ids ``[B, T]``; moved to the model's device.
            **kwargs: passed on to the HF model (e.g. ``logits_to_keep=1``).

        Returns:
            The logits ``[B, T, V]`` (``T`` = ``logits_to_keep`` when given).
        """
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
        """Register ``(hook name, edit)`` pairs for the duration of the block.

        The one primitive every read and intervention is built on, so the guard below
        covers them all.

        Args:
            *pairs: ``(hook name, edit)``; ``edit(activation)`` returns a replacement
                tensor or ``None`` (keep the activation).

        Yields:
            The registrations, each counting how often its hook fired.

        Raises:
            HookNotFiredError: on a clean exit, a hook that never fired (its module is
                not on the forward path, so it would have measured nothing).
            ConfigError: an unknown hook name.
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
        """Record activations while the block runs.

        Args:
            names: the hook points to record.

        Yields:
            A dict filled with ``{name: activation}`` (detached; the last call wins).
        """
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
        """Forward once, returning logits and the named activations.

        Args:
            input_ids: token ids ``[B, T]``.
            names: the hook points to record.
            **kwargs: passed on to :meth:`forward`.

        Returns:
            ``(logits, {name: activation})``.
        """
        with self.capture(names) as store:
            logits = self.forward(input_ids, **kwargs)
        return logits, store

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Temporarily switch to eager attention (needed for ``hook_pattern``).

        Through transformers' public ``set_attn_implementation``, which also reaches the
        sub-configs of composite models; the previous implementation is restored on exit.

        Yields:
            Nothing; the model runs eager attention inside the block.
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
    def head_out_proj(self, layer: int, activation: torch.Tensor, head: int) -> torch.Tensor:
        """One head's share of ``o_proj``'s output: ``W_O[:, head] @ activation``.

        The heads' shares plus :meth:`o_bias` sum to ``o_proj``'s output, which is what
        attention adds to the residual -- except in a family that normalises it first
        (OLMo-2), where the sum is the norm's input.

        Args:
            layer: the block's index.
            activation: the head's slice of ``hook_z``, ``[..., dh]``.
            head: the head's index in the block.

        Returns:
            The head's contribution ``[..., d]``.
        """
        w = self.o_weight(layer)  # [d, H*dh]
        lo = head * self.d_head
        return activation.to(w.dtype) @ w[:, lo : lo + self.d_head].T

    def norm_scale(self, residual: torch.Tensor) -> torch.Tensor:
        """The final norm's per-position divisor, to freeze for :meth:`norm_linear`.

        Args:
            residual: residual-stream vectors ``[..., d]``.

        Returns:
            Their ``rms`` (RMSNorm) or ``std`` (LayerNorm) with the norm's epsilon,
            ``[..., 1]``, in float32.
        """
        x = residual.float()
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

    def norm_linear(self, residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The final norm with a *frozen* divisor: linear in its input (no bias).

        Linear so that the Hydra decomposition can read each component through the norm
        separately: ``rms``: ``g * x / scale``; ``layer``: ``g * (x - mean(x)) / scale``.

        Args:
            residual: the vectors to normalise ``[..., d]`` (a residual stream or one
                component of it).
            scale: the frozen divisor, e.g. :meth:`norm_scale` of the clean residual.

        Returns:
            The normalised vectors ``[..., d]`` in float32, without the norm's bias.
        """
        x = residual.float()
        if self.arch.norm == "layer":
            x = x - x.mean(-1, keepdim=True)
        y = x / scale
        w = getattr(self.final_norm, "weight", None)
        return y * w.float() if w is not None else y

    def norm_bias(self) -> torch.Tensor | None:
        """The final norm's bias, the part :meth:`norm_linear` leaves out.

        Returns:
            The bias ``[d]`` in float32, or ``None`` (RMSNorm, parameter-free LayerNorm).
        """
        b = getattr(self.final_norm, "bias", None)
        return None if b is None else b.float()
