"""Function vectors, reference variant: our reconstruction of the study's "FV improvement".

The study's prompts survive but not its scoring; this module draws the prompts exactly as
the study does and scores the gain in the source answer's probability when a layer's
last-position state is patched from the source prompt into the target one. What is the
study's and what ours: docs/design-probes.md#function-vectors-reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hierlab.errors import DataError
from hierlab.probes.hooks import HookedModel
from hierlab.probes.registry import register

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]
Roles = dict[str, Sequence[int]]

#: the reference study's id layout, used when a corpus manifest has no ``roles``
REFERENCE_ROLES: dict[str, tuple[int, int]] = {
    "subject": (0, 300),
    "verb": (300, 600),
    "object": (600, 900),
    "connector": (900, 1000),
}

__all__ = ["REFERENCE_ROLES", "fv_reference", "measure_reference", "reference_prompts"]


def reference_prompts(
    roles: Roles | None = None, pairs: int = 16, seed: int = 42, connector: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's prompt pairs, drawn in the reference's order.

    Args:
        roles: the corpus's ``{role: [lo, hi)}`` id ranges; ``None``: the reference's
            (:data:`REFERENCE_ROLES`).
        pairs: how many source/target pairs.
        seed: the ``torch.Generator`` seed (the reference's: 42).
        connector: the connector id; ``None``: the connector range's start + 50 (950 in
            the reference layout), its midpoint if that falls outside the range.

    Returns:
        ``(source ids, target ids, source answers, target answers)``, each with ``pairs``
        rows; a prompt is ``[s, v, o, c, s, v]`` and its answer ``o``.
    """
    r = {k: tuple(v) for k, v in (roles or REFERENCE_ROLES).items()}
    c = connector if connector is not None else r["connector"][0] + 50
    if not r["connector"][0] <= c < r["connector"][1]:
        c = (r["connector"][0] + r["connector"][1]) // 2
    g = torch.Generator().manual_seed(seed)

    def draw(role: str) -> int:
        lo, hi = r[role]
        return int(torch.randint(lo, hi, (1,), generator=g).item())

    src, tgt, a_src, a_tgt = [], [], [], []
    for _ in range(pairs):
        s1, v1, o1 = draw("subject"), draw("verb"), draw("object")
        s2, v2, o2 = draw("subject"), draw("verb"), draw("object")
        src.append([s1, v1, o1, c, s1, v1])
        tgt.append([s2, v2, o2, c, s2, v2])
        a_src.append(o1)
        a_tgt.append(o2)
    return torch.tensor(src), torch.tensor(tgt), torch.tensor(a_src), torch.tensor(a_tgt)


@torch.no_grad()
def fv_reference(
    model: HookedModel,
    roles: Roles | None = None,
    pairs: int = 16,
    seed: int = 42,
    connector: int | None = None,
) -> list[Row]:
    """Our reconstruction of the study's "FV improvement", per layer.

    Args:
        model: the hooked model.
        roles: the corpus's id ranges (``None``: the reference's).
        pairs: how many prompt pairs.
        seed: the prompts' seed.
        connector: the connector id (``None``: see :func:`reference_prompts`).

    Returns:
        Rows ``fv_improvement`` per layer: the mean over pairs of the gain in the source
        answer's probability when the source's residual stream after that block, at the
        last position, replaces the target's.

    Raises:
        DataError: the prompts use ids beyond the model's vocabulary.
    """
    src, tgt, a_src, _ = reference_prompts(roles, pairs, seed, connector)
    if int(max(src.max(), tgt.max())) >= model.vocab_size:
        raise DataError(
            f"reference FV prompts use ids >= the model vocabulary ({model.vocab_size})"
        )
    nl, p = model.n_layers, len(src)
    names = [f"blocks.{i}.hook_resid_post" for i in range(nl)]
    _, cache = model.run_with_cache(src, names, logits_to_keep=1)
    src_last = torch.stack([cache[n][:, -1] for n in names], 1)  # [P, L, d]
    base = model.forward(tgt, logits_to_keep=1)[:, -1].float().softmax(-1)
    dev = model.device
    p_base = base[torch.arange(p), a_src.to(dev)]
    # copies: layer-major, copy (l, i) patches pair i at layer l
    ids = tgt.repeat(nl, 1)

    def make(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            out[layer * p : (layer + 1) * p, -1] = src_last[:, layer].to(act.dtype)
            return out

        return fn

    with model.edit(*[(names[i], make(i)) for i in range(nl)]):
        probs = model.forward(ids, logits_to_keep=1)[:, -1].float().softmax(-1)
    p_patch = probs[torch.arange(nl * p), a_src.to(dev).repeat(nl)].view(nl, p)
    gain = (p_patch - p_base[None]).mean(1)
    return [
        {"metric": "fv_improvement", "layer": i, "head": None, "k": None,
         "value": float(gain[i]), "n_samples": p, "seed": seed}
        for i in range(nl)
    ]


@register("fv", "reference")
def measure_reference(context: ProbeContext) -> list[Row]:
    """The registered reference unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        The reconstruction on the corpus's role ranges (the reference's without roles).
    """
    c = context.cfg.fv
    roles = context.roles
    if roles is None and context.kind != "nl":
        log.info("%s: no corpus roles; reference FV uses the reference id ranges",
                 context.ckpt.name)
    return fv_reference(context.hm, roles, c.reference_pairs, c.reference_seed,
                        c.reference_connector)
