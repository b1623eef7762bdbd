"""Structure scores: how much next-token mass the model puts on the grammatical class.

The reference's score (docs/reference-study.md#structure-scores): the mean softmax mass over
the verb class after ``[S]``, over the object class after ``[S, V]`` and over the subject
class after ``[S, V, O, C]``, with S, V, O, C drawn independently and uniformly from their
classes (no BOS, no mask). The classes are the corpus manifest's ``roles`` ranges (``[lo,
hi)``); prompts come from a seeded generator (the reference was unseeded). Reference and
standard variants are the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hierlab.contracts import VARIANTS
from hierlab.errors import DataError
from hierlab.probes.hooks import HookedModel
from hierlab.probes.registry import register

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]

__all__ = ["measure", "structure_scores"]

_SCORES = (
    ("subject_to_verb", ("subject",), "verb"),
    ("verb_to_object", ("subject", "verb"), "object"),
    ("connector_to_subject", ("subject", "verb", "object", "connector"), "subject"),
)


@torch.no_grad()
def structure_scores(
    hm: HookedModel, roles: dict[str, Sequence[int]], samples: int = 100, seed: int = 0
) -> list[Row]:
    """Rows ``subject_to_verb``, ``verb_to_object``, ``connector_to_subject``."""
    for name in ("subject", "verb", "object", "connector"):
        if name not in roles:
            raise DataError(f"corpus roles lack {name!r}; structure scores need a pcfg corpus")
    g = torch.Generator().manual_seed(seed)
    rows: list[Row] = []
    for metric, prefix, target in _SCORES:
        cols = [torch.randint(int(roles[r][0]), int(roles[r][1]), (samples,), generator=g)
                for r in prefix]
        ids = torch.stack(cols, 1)
        probs = hm.forward(ids, logits_to_keep=1)[:, -1].float().softmax(-1)
        lo, hi = int(roles[target][0]), int(roles[target][1])
        mass = probs[:, lo:hi].sum(-1).mean().item()
        rows.append({"metric": metric, "layer": None, "head": None, "k": None,
                     "value": float(mass), "n_samples": samples, "seed": seed})
    return rows


def measure(ctx: ProbeContext) -> list[Row]:
    """Structure scores of a pcfg model; [] (logged) for a model without corpus roles."""
    if ctx.roles is None:
        log.info("%s: structure scores need a pcfg corpus; skipped", ctx.ckpt.name)
        return []
    c = ctx.cfg.structure
    return structure_scores(ctx.hm, ctx.roles, c.samples, c.seed)


# one definition: the reference study's scores are also the standard ones
for _variant in VARIANTS:
    register("structure", _variant)(measure)
