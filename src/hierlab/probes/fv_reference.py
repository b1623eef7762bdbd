"""Function vectors, reference variant: our reconstruction of the study's "FV improvement".

Prompts exactly as the reference: 16 pairs from
``torch.Generator().manual_seed(42)``, drawing ``s1, v1, o1, s2, v2, o2`` in that order with
single ``randint`` calls from the subject/verb/object id ranges; source
``[s1, v1, o1, c, s1, v1]`` (answer ``o1``), target ``[s2, v2, o2, c, s2, v2]``. The ranges
and the connector ``c`` come from the corpus manifest ``roles`` (connector = range start
+ 50, i.e. 950 in the reference layout), falling back to the reference ranges
[0,300), [300,600), [600,900) and 950. The reference's scoring code is lost; **our
reconstruction** of "FV improvement" at layer ``l``: patch the *source* run's residual
stream after block ``l`` at the last position into the *target* run (same position) and
report the gain in the probability of the source answer,
``mean_pairs [P(o1 | target, patched at l) - P(o1 | target)]``. A layer whose last-position
state carries the source's task *and* answer transfers them; a layer that carries neither
scores ~0.

The literature's variant (Todd et al. 2023) is :mod:`hierlab.probes.function_vectors`.
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
    """(source ids, target ids, source answers, target answers), each with ``pairs`` rows."""
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
    hm: HookedModel,
    roles: Roles | None = None,
    pairs: int = 16,
    seed: int = 42,
    connector: int | None = None,
) -> list[Row]:
    """Rows ``fv_improvement`` per layer (our documented reconstruction, see module doc)."""
    src, tgt, a_src, _ = reference_prompts(roles, pairs, seed, connector)
    if int(max(src.max(), tgt.max())) >= hm.vocab_size:
        raise DataError(f"reference FV prompts use ids >= the model vocabulary ({hm.vocab_size})")
    nl, p = hm.n_layers, len(src)
    names = [f"blocks.{i}.hook_resid_post" for i in range(nl)]
    _, cache = hm.run_with_cache(src, names, logits_to_keep=1)
    src_last = torch.stack([cache[n][:, -1] for n in names], 1)  # [P, L, d]
    base = hm.forward(tgt, logits_to_keep=1)[:, -1].float().softmax(-1)
    dev = hm.device
    p_base = base[torch.arange(p), a_src.to(dev)]
    # copies: layer-major, copy (l, i) patches pair i at layer l
    ids = tgt.repeat(nl, 1)

    def make(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            out[layer * p : (layer + 1) * p, -1] = src_last[:, layer].to(act.dtype)
            return out

        return fn

    with hm.edit(*[(names[i], make(i)) for i in range(nl)]):
        probs = hm.forward(ids, logits_to_keep=1)[:, -1].float().softmax(-1)
    p_patch = probs[torch.arange(nl * p), a_src.to(dev).repeat(nl)].view(nl, p)
    gain = (p_patch - p_base[None]).mean(1)
    return [
        {"metric": "fv_improvement", "layer": i, "head": None, "k": None,
         "value": float(gain[i]), "n_samples": p, "seed": seed}
        for i in range(nl)
    ]


@register("fv", "reference")
def measure_reference(ctx: ProbeContext) -> list[Row]:
    """The reconstruction on the corpus's role ranges (the reference's without roles)."""
    c = ctx.cfg.fv
    roles = ctx.roles
    if roles is None and ctx.kind != "nl":
        log.info("%s: no corpus roles; reference FV uses the reference id ranges", ctx.ckpt.name)
    return fv_reference(ctx.hm, roles, c.reference_pairs, c.reference_seed,
                        c.reference_connector)
