"""Function-vector tasks whose demonstrations matter: the per-document binding maps.

The grammar tasks of :mod:`hierlab.probes.function_vectors` are solved zero-shot (the
query contains the answer), so the Todd et al. FV gain is 0 by construction. With
bindings (``PcfgConfig.binding_probability`` β > 0) a document fixes a random map
subject→verb and verb→object; "the word bound to x in this document" can only be read
from the document itself.

**Episodes.** Each prompt is one episode: a fresh document latent, i.e. a base id drawn
from ``[EPISODE_BASE, EPISODE_BASE + 2^40)`` by the prompt's generator (itself seeded from
``fv.seed``), far beyond every train/test base and the loss-floor stream (``1 << 40``),
and its binding map from :meth:`PcfgSampler.document_bindings` (section 0, paragraph 0)
serves all demonstrations and the query.

**Format** (what a model trained on the grammar reads): every demonstration is a whole
SVO sentence of that document in the corpus's own form, ``s v o EOS``, EOS being the
separator every training sentence follows:

* ``bound_verb``: ``x = s`` (uniform subject), ``y = v = subject_verb[s]``, followed by
  ``o = verb_object[v]`` (the bound object, the sentence's most likely continuation under
  β) and EOS. Query: ``EOS s_j`` with ``s_j`` the subject of a uniformly chosen
  demonstration ``j``; answer its bound verb.
* ``bound_object``: ``x = s v`` (uniform subject and verb), ``y = verb_object[v]``, then
  EOS. Query: ``EOS s' v_j`` with a fresh subject ``s'`` and the verb of demonstration
  ``j``; answer its bound object.

The query re-uses a demonstration's source word because the map is a lookup table, not
a general function: few-shot accuracy measures retrieval of the bound word from context
(an induction-type mechanism), while the zero-shot prompt (``EOS x_q``) holds no trace of
the fresh map, so its accuracy is at chance (``1/|verbs|``, ``1/|objects|``) by
construction. A function vector averaged over episodes can carry "answer with the bound
role" but not an episode's map, so FV-injected accuracy above chance would itself be a
finding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from hierlab.errors import ConfigError, DataError
from hierlab.probes.function_vectors import GRAMMAR_TASKS, Episode, Task, grammar_task

log = logging.getLogger(__name__)

BINDING_TASKS = ("bound_verb", "bound_object")
EPISODE_BASE = 1 << 42

__all__ = ["BINDING_TASKS", "EPISODE_BASE", "binding_task", "corpus_tasks"]


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi, (1,), generator=g).item())


def binding_task(name: str, sampler: Any) -> Task:
    """``bound_verb`` or ``bound_object`` over ``sampler`` (a :class:`PcfgSampler`)."""
    cfg = sampler.cfg
    lx = cfg.lexicon
    _, off_v, off_o, _ = cfg.role_offsets
    eos = int(cfg.eos_id)

    def maps(g: torch.Generator) -> dict[str, Any]:
        return sampler.document_bindings(EPISODE_BASE + _randint(g, 0, 1 << 40))

    if name == "bound_verb":

        def episode(g: torch.Generator) -> Episode:
            m = maps(g)
            sv, vo = m["subject_verb"], m["verb_object"]

            def sample(g: torch.Generator) -> tuple[list[int], int]:
                s = _randint(g, 0, lx.subjects)
                return [s], int(sv[s])

            def query(g: torch.Generator, demos: list) -> tuple[list[int], int]:
                x, y = demos[_randint(g, 0, len(demos))]
                return list(x), y

            return Episode(sample, after=lambda v: [int(vo[v - off_v])], query=query)

        chance = 1.0 / lx.verbs
    elif name == "bound_object":

        def episode(g: torch.Generator) -> Episode:
            vo = maps(g)["verb_object"]

            def sample(g: torch.Generator) -> tuple[list[int], int]:
                s, v = _randint(g, 0, lx.subjects), _randint(g, off_v, off_o)
                return [s, v], int(vo[v - off_v])

            def query(g: torch.Generator, demos: list) -> tuple[list[int], int]:
                (_, v), y = demos[_randint(g, 0, len(demos))]
                return [_randint(g, 0, lx.subjects), v], y

            return Episode(sample, query=query)

        chance = 1.0 / lx.objects
    else:
        raise ConfigError(f"unknown binding task {name!r} (known: {', '.join(BINDING_TASKS)})")

    def one(g: torch.Generator) -> tuple[list[int], int]:
        return episode(g).sample(g)

    return Task(name, one, [eos], chance, episode=episode)


def corpus_tasks(names: Sequence[str], manifest: dict[str, Any]) -> list[Task]:
    """The pcfg tasks ``names`` for a corpus manifest; binding tasks only when the corpus
    has bindings (β > 0), otherwise skipped with an info log."""
    roles, eos = manifest["roles"], int(manifest["eos_id"])
    tasks: list[Task] = []
    sampler: Any = ...
    for name in names:
        if name not in BINDING_TASKS:
            if name not in GRAMMAR_TASKS:
                raise ConfigError(f"unknown fv task {name!r} (known: "
                                  f"{', '.join(GRAMMAR_TASKS + BINDING_TASKS)})")
            tasks.append(grammar_task(name, roles, eos))
            continue
        if sampler is ...:
            sampler = _sampler(manifest)
        if sampler is None:
            log.info("fv task %s skipped: the corpus has no bindings (binding_probability "
                     "0 or no corpus config in the manifest)", name)
            continue
        tasks.append(binding_task(name, sampler))
    return tasks


def _sampler(manifest: dict[str, Any]) -> Any:
    """The corpus's :class:`PcfgSampler` when it has bindings, else None."""
    conf = manifest.get("config")
    if not conf or conf.get("kind", "pcfg") != "pcfg":
        return None
    if float(conf.get("binding_probability", 0.0) or 0.0) <= 0.0:
        return None
    from hierlab.corpus.config import PcfgConfig
    from hierlab.corpus.pcfg import PcfgSampler

    try:
        return PcfgSampler(PcfgConfig.model_validate(conf))
    except ValueError as err:
        raise DataError(f"corpus manifest config is not a valid pcfg config ({err})") from None
