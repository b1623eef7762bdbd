"""Function-vector tasks: what an ICL prompt is, and the tasks the probes draw from.

A :class:`Task` draws ``(x, y)`` demonstrations and a query; an :class:`Episode` holds a
latent shared by one prompt's demonstrations and query (the binding tasks). The Todd et
al. pipeline that runs them is :mod:`hierlab.probes.function_vectors`.

**Tasks.** Grammar tasks (for models trained on a pcfg corpus) use only sentences the
grammar can produce, so a model can learn the mapping from its training data: a
demonstration is ``x y EOS``.

* ``copy_object``: ``x = s v o c s v``, ``y = o`` (a two-clause SVO sentence whose second
  clause repeats the first -- the reference's FV prompt);
* ``copy_verb``: ``x = s v o c s``, ``y = v``;
* ``restate_object``: ``x = v s o EOS s v``, ``y = o`` (a VSO sentence restated as SVO:
  a role mapping across the two word orders).
* ``bound_verb``, ``bound_object`` (corpora with bindings, below):
  each prompt one fresh document's binding map, zero-shot at chance by construction.

Natural-language tasks (models with a real tokenizer, e.g. OLMo) read small word lists
shipped in ``probes/data/<task>.json``: ``Q: x\\nA: y\\n\\n`` per demonstration, answer =
first token of ``" y"``, tokenised piecewise with the model's own tokenizer. Chance is
``1 / |answer space|`` (the role class for grammar tasks, the distinct answers of the list
otherwise).

**Binding tasks.** The grammar tasks are solved zero-shot (the query contains the
answer), so the Todd et al. FV gain is 0 by construction. With
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

import json
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from hierlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Roles = dict[str, Sequence[int]]

GRAMMAR_TASKS = ("copy_object", "copy_verb", "restate_object")
BINDING_TASKS = ("bound_verb", "bound_object")
EPISODE_BASE = 1 << 42

__all__ = [
    "BINDING_TASKS",
    "EPISODE_BASE",
    "GRAMMAR_TASKS",
    "Episode",
    "Task",
    "binding_task",
    "corpus_tasks",
    "derange_labels",
    "grammar_task",
    "load_word_list",
    "nl_task",
]


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi, (1,), generator=g).item())


@dataclass
class Episode:
    """One prompt's latent (e.g. a document's binding map), shared by its demonstrations
    and its query (the binding tasks below): ``sample`` draws a demonstration,
    ``after(y)`` the tokens between a demonstration's answer and the separator, and
    ``query(g, demos)`` the query pair (default: a fresh ``sample``)."""

    sample: Callable[[torch.Generator], tuple[list[int], int]]
    after: Callable[[int], list[int]] | None = None
    query: Callable[[torch.Generator, list[tuple[list[int], int]]],
                    tuple[list[int], int]] | None = None


@dataclass
class Task:
    """An ICL task: ``sample(g) -> (x ids, y id)``, a separator after each answer, chance.

    ``episode`` (optional): ``episode(g) -> Episode``, drawn once per prompt, for tasks
    whose mapping is latent per prompt (the binding tasks); ``sample`` then is unused by
    :meth:`prompt`."""

    name: str
    sample: Callable[[torch.Generator], tuple[list[int], int]]
    sep: list[int]
    chance: float
    episode: Callable[[torch.Generator], Episode] | None = None

    def prompt(
        self, g: torch.Generator, n_shots: int, shuffle: bool = False
    ) -> tuple[list[int], int, list[int]]:
        """(ICL prompt ids, answer, zero-shot ids of the same query).

        ICL prompt: ``x_1 y_1 sep ... x_n y_n sep x_q``. Zero-shot prompt: the same prompt
        with the demonstrations removed, ``sep x_q`` -- its last ``len(sep) + len(x_q)``
        tokens equal the ICL prompt's, so the query sits after the same separator in both
        (Todd et al. format the zero-shot query exactly like the ICL query; for the
        grammar tasks ``sep`` is EOS, the sentence boundary every training sentence
        follows, as GPT's ``<|endoftext|>`` BOS precedes their zero-shot query).
        ``shuffle``: the labels are permuted by :func:`derange_labels`, so no
        demonstration keeps its own label (n_shots > 1). With an ``episode`` the
        demonstrations and the query share one drawn :class:`Episode`; a demonstration
        is ``x y after(y) sep`` (``after`` sees the deranged label when shuffled).
        """
        ep = self.episode(g) if self.episode is not None else None
        sample = ep.sample if ep is not None else self.sample
        demos = [sample(g) for _ in range(n_shots)]
        xq, yq = ep.query(g, demos) if ep is not None and ep.query else sample(g)
        ys = [y for _, y in demos]
        if shuffle and n_shots > 1:
            ys = derange_labels(ys, g)
        ids: list[int] = []
        for (x, _), y in zip(demos, ys, strict=True):
            tail = ep.after(y) if ep is not None and ep.after else []
            ids += x + [y] + tail + self.sep
        return ids + xq, yq, list(self.sep) + list(xq)


def derange_labels(ys: Sequence[int], g: torch.Generator, tries: int = 100) -> list[int]:
    """``ys`` permuted so that no position keeps its label (a derangement).

    Uniform over position derangements (rejection sampling, ~e draws). Among them, one
    that also changes every label *value* is preferred (demonstrations with equal labels
    would otherwise keep a correct pair); if none turns up in ``tries`` draws (e.g. most
    labels equal) the last position derangement is used. A single label is returned as is.
    """
    n = len(ys)
    if n < 2:
        return list(ys)
    fallback: list[int] | None = None
    for _ in range(tries):
        perm = torch.randperm(n, generator=g).tolist()
        if any(perm[i] == i for i in range(n)):
            continue
        out = [ys[i] for i in perm]
        if all(a != b for a, b in zip(out, ys, strict=True)):
            return out
        fallback = out
    if fallback is None:  # no derangement in `tries` draws (p < 1e-19): a cyclic shift
        fallback = list(ys[1:]) + [ys[0]]
    return fallback


def _rng(roles: Roles, name: str) -> tuple[int, int]:
    if name not in roles:
        raise DataError(f"corpus roles lack {name!r} (have {', '.join(roles)})")
    lo, hi = roles[name]
    return int(lo), int(hi)


def grammar_task(name: str, roles: Roles, eos_id: int) -> Task:
    """One of :data:`GRAMMAR_TASKS` over the corpus' word classes (see module doc)."""
    s_r, v_r, o_r, c_r = (_rng(roles, k) for k in ("subject", "verb", "object", "connector"))

    if name == "copy_object":

        def sample(g: torch.Generator) -> tuple[list[int], int]:
            s, v, o, c = _randint(g, *s_r), _randint(g, *v_r), _randint(g, *o_r), _randint(g, *c_r)
            return [s, v, o, c, s, v], o

        return Task(name, sample, [eos_id], 1.0 / (o_r[1] - o_r[0]))
    if name == "copy_verb":

        def sample(g: torch.Generator) -> tuple[list[int], int]:
            s, v, o, c = _randint(g, *s_r), _randint(g, *v_r), _randint(g, *o_r), _randint(g, *c_r)
            return [s, v, o, c, s], v

        return Task(name, sample, [eos_id], 1.0 / (v_r[1] - v_r[0]))
    if name == "restate_object":

        def sample(g: torch.Generator) -> tuple[list[int], int]:
            s, v, o = _randint(g, *s_r), _randint(g, *v_r), _randint(g, *o_r)
            return [v, s, o, eos_id, s, v], o

        return Task(name, sample, [eos_id], 1.0 / (o_r[1] - o_r[0]))
    raise ConfigError(f"unknown grammar task {name!r} (known: {', '.join(GRAMMAR_TASKS)})")


def load_word_list(name: str) -> list[tuple[str, str]]:
    """The ``(input, output)`` pairs of ``probes/data/<name>.json``."""
    res = resources.files("hierlab.probes") / "data" / f"{name}.json"
    if not res.is_file():
        raise ConfigError(f"unknown word-list task {name!r} (no probes/data/{name}.json)")
    data = json.loads(res.read_text())
    return [(str(a), str(b)) for a, b in data["pairs"]]


def nl_task(name: str, tokenizer: Any) -> Task:
    """A word-list task tokenised with the model's tokenizer (Todd et al. prompt format)."""
    pairs = load_word_list(name)

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    encoded = [(enc(f"Q: {x}\nA:"), enc(f" {y}")[0]) for x, y in pairs]
    sep = enc("\n\n")

    def sample(g: torch.Generator) -> tuple[list[int], int]:
        return encoded[_randint(g, 0, len(encoded))]

    return Task(name, sample, sep, 1.0 / len({y for _, y in encoded}))


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


#: (run, task) pairs whose skip was logged at INFO; later checkpoints log it at DEBUG
_SKIPS_NOTED: set[tuple[Hashable, str]] = set()


def corpus_tasks(names: Sequence[str], manifest: dict[str, Any],
                 run: Hashable = None) -> list[Task]:
    """The pcfg tasks ``names`` for a corpus manifest; binding tasks only when the corpus
    has bindings (β > 0), otherwise skipped with an info log: once per ``run`` (a key naming
    the run and corpus, whose every checkpoint asks again; later ones log at debug level),
    or at every call without one."""
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
            level = logging.DEBUG if (run, name) in _SKIPS_NOTED else logging.INFO
            if run is not None:
                _SKIPS_NOTED.add((run, name))
            log.log(level, "fv task %s skipped: the corpus has no bindings "
                    "(binding_probability 0 or no corpus config in the manifest)", name)
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
