"""Structure scores: how much next-token mass the model puts on the grammatical class.

Whether a grammar model has learned which class comes next (a verb after a subject, ...),
measured as the reference study does; its reference and standard variants are one
definition. Prompts and classes: docs/design-probes.md#structure-scores.
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
    model: HookedModel, roles: dict[str, Sequence[int]], samples: int = 100, seed: int = 0
) -> list[Row]:
    """Mean next-token mass on the grammatical class after random grammar prefixes.

    Args:
        model: the hooked model.
        roles: the corpus's ``{role: [lo, hi)}`` id ranges (subject, verb, object,
            connector).
        samples: prompts per prefix.
        seed: seed of the prompts (the reference's were unseeded).

    Returns:
        Rows ``subject_to_verb`` (after ``[S]``), ``verb_to_object`` (after ``[S, V]``)
        and ``connector_to_subject`` (after ``[S, V, O, C]``).

    Raises:
        DataError: the roles lack one of the four classes (not a pcfg corpus).
    """
    for name in ("subject", "verb", "object", "connector"):
        if name not in roles:
            raise DataError(f"corpus roles lack {name!r}; structure scores need a pcfg corpus")
    g = torch.Generator().manual_seed(seed)
    rows: list[Row] = []
    for metric, prefix, target in _SCORES:
        cols = [torch.randint(int(roles[r][0]), int(roles[r][1]), (samples,), generator=g)
                for r in prefix]
        ids = torch.stack(cols, 1)
        probs = model.forward(ids, logits_to_keep=1)[:, -1].float().softmax(-1)
        lo, hi = int(roles[target][0]), int(roles[target][1])
        mass = probs[:, lo:hi].sum(-1).mean().item()
        rows.append({"metric": metric, "layer": None, "head": None, "k": None,
                     "value": float(mass), "n_samples": samples, "seed": seed})
    return rows


def measure(context: ProbeContext) -> list[Row]:
    """The registered unit for both variants.

    Args:
        context: the checkpoint's probe context.

    Returns:
        The structure-score rows; ``[]`` (logged) for a model without corpus roles.
    """
    if context.roles is None:
        log.info("%s: structure scores need a pcfg corpus; skipped", context.ckpt.name)
        return []
    settings = context.cfg.structure
    return structure_scores(context.hm, context.roles, settings.samples, settings.seed)


# one definition: the reference study's scores are also the standard ones
for _variant in VARIANTS:
    register("structure", _variant)(measure)
