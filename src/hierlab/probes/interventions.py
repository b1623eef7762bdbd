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

        A head's output is its slice of ``hook_z`` (before ``o_proj``), the only place a
        single head's contribution exists on its own.

        Args:
            layer: the block's index.
            head: one attention head to ablate; ``None`` ablates the whole component.
            component: ``attn`` (``hook_attn_out``, or ``hook_z`` for a head), ``mlp``
                (``hook_mlp_out``) or ``block`` (``hook_resid_post``).
            method: ``zero`` writes zeros; ``mean`` writes ``reference`` (broadcast, e.g. a
                mean over a reference batch) or, if ``None``, the mean of the current
                activation over the batch; ``resample`` writes ``reference`` (the
                activation from another prompt) or, if ``None``, the activation of the
                next prompt in the batch (batch rolled by one).
            reference: the replacement for ``mean`` and ``resample``; ignored by ``zero``.
            positions: the sequence positions to ablate; ``None`` ablates all.

        Returns:
            A context manager; the forwards run inside it are ablated.

        Raises:
            ConfigError: a head outside ``attn``, an unknown component or method, or a
                ``resample`` without ``reference`` on a batch of one.
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
        """Overwrite the output of one block (the residual stream) with ``value``.

        Args:
            layer: the block's index.
            value: the replacement, broadcast to ``[B, T, d]`` (e.g. ``[d]`` zeros).
            positions: the sequence positions to overwrite; ``None`` overwrites all.

        Returns:
            A context manager; the forwards run inside it see the overwritten stream.
        """
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
        """Add a vector to the residual stream at one layer and position (steering).

        Args:
            layer: the block's index.
            vector: ``[d]`` (every prompt) or ``[B, d]`` (one per prompt).
            position: the sequence position(s) to add it at; default the last.
            where: after the block (``resid_post``) or before it (``resid_pre``).

        Returns:
            A context manager; the forwards run inside it carry the added vector.
        """

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

        Args:
            name: the hook point to patch.
            source: the activation to write; must broadcast to the activation.
            positions: the sequence positions to patch; ``None`` patches all.
            heads: for ``hook_z``, the heads to patch; ``None`` patches all.

        Returns:
            A context manager; the forwards run inside it are patched.
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
