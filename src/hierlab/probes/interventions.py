"""Interventions on a hooked model: ablate, overwrite, add a vector, patch.

Each is a context manager built on :meth:`HookedModel.edit <hierlab.probes.hooks.HookedModel.edit>`
(so the hook-not-fired guard covers them); :class:`Interventions` is the mixin that gives
:class:`~hierlab.probes.hooks.HookedModel` these methods, kept apart from the hook
registration they rely on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from hierlab.errors import ConfigError

__all__ = ["Interventions"]


class Interventions:
    """Mixin for :class:`~hierlab.probes.hooks.HookedModel`: needs its ``edit``."""

    edit: Callable[..., contextlib.AbstractContextManager]

    def _component_hook(self, layer: int, head: int | None, component: str) -> str:
        if component == "attn":
            if head is not None:
                return f"blocks.{layer}.attn.hook_z"
            return f"blocks.{layer}.hook_attn_out"
        if head is not None:
            raise ConfigError(f"a head can only be ablated in 'attn', not in {component!r}")
        if component == "mlp":
            return f"blocks.{layer}.hook_mlp_out"
        if component == "block":
            return f"blocks.{layer}.hook_resid_post"
        raise ConfigError(f"component must be attn, mlp or block, got {component!r}")

    def ablate(
        self,
        layer: int,
        head: int | None = None,
        *,
        component: str = "attn",
        method: Literal["zero", "mean", "resample"] = "zero",
        reference: torch.Tensor | None = None,
        positions: Sequence[int] | slice | None = None,
    ) -> contextlib.AbstractContextManager:
        """Ablate the output of a layer component (``attn``, ``mlp``, ``block``) or one head.

        ``zero`` writes zeros. ``mean`` writes ``reference`` (broadcast; e.g. a mean over a
        reference batch) or, if ``None``, the mean of the current activation over the batch
        dimension. ``resample`` writes ``reference`` (the activation from another prompt) or,
        if ``None``, the activation of the next prompt in the batch (batch rolled by one).
        A head's output is its slice of ``hook_z`` (before ``o_proj``).
        """
        name = self._component_hook(layer, head, component)
        pos = slice(None) if positions is None else positions

        def fn(act: torch.Tensor) -> torch.Tensor:
            sel = act[..., head, :] if head is not None else act
            if method == "zero":
                new_val = torch.zeros_like(sel)
            elif method == "mean":
                new_val = sel.mean(0, keepdim=True) if reference is None else reference
            elif method == "resample":
                if reference is None:
                    if sel.shape[0] < 2:
                        raise ConfigError("resample ablation needs a batch of >= 2 prompts")
                    new_val = sel.roll(1, dims=0)
                else:
                    new_val = reference
            else:
                raise ConfigError(f"ablation method must be zero, mean or resample, got {method!r}")
            out = act.clone()
            target = out[..., head, :] if head is not None else out
            target[:, pos] = new_val.to(act.dtype).expand_as(sel)[:, pos]
            return out

        return self.edit((name, fn))

    def overwrite(
        self, layer: int, value: torch.Tensor, positions: Sequence[int] | slice | None = None
    ) -> contextlib.AbstractContextManager:
        """Overwrite the output of block ``layer`` (the residual stream) with ``value``."""
        pos = slice(None) if positions is None else positions

        def fn(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            out[:, pos] = value.to(act.dtype).expand_as(act)[:, pos]
            return out

        return self.edit((f"blocks.{layer}.hook_resid_post", fn))

    def add_vector(
        self,
        layer: int,
        vector: torch.Tensor,
        position: int | Sequence[int] | slice = -1,
        *,
        where: Literal["resid_post", "resid_pre"] = "resid_post",
    ) -> contextlib.AbstractContextManager:
        """Add ``vector`` (``[d]`` or ``[B, d]``) to the residual stream at (layer, position)."""

        def fn(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            v = vector.to(act.dtype).to(act.device)
            if v.dim() == 2:
                v = v[:, None, :] if not isinstance(position, int) else v
            out[:, position] += v
            return out

        return self.edit((f"blocks.{layer}.hook_{where}", fn))

    def patch(
        self,
        name: str,
        source: torch.Tensor,
        positions: Sequence[int] | slice | None = None,
        heads: Sequence[int] | None = None,
    ) -> contextlib.AbstractContextManager:
        """Replace an activation by ``source`` (the same hook from another run).

        ``positions`` and (for ``hook_z``) ``heads`` restrict the patch; ``source`` must
        broadcast to the activation.
        """
        pos = slice(None) if positions is None else positions

        def fn(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            src = source.to(act.dtype).to(act.device).expand_as(act)
            if heads is None:
                out[:, pos] = src[:, pos]
            else:
                idx = list(heads)
                out[:, pos, idx] = src[:, pos, idx]
            return out

        return self.edit((name, fn))
