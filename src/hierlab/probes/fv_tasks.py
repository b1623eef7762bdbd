"""Function-vector tasks: what an ICL prompt is, and the tasks the probes draw from.

A :class:`Task` draws ``(x, y)`` demonstrations and a query; an :class:`Episode` holds a
latent shared by one prompt's demonstrations and query (the binding tasks, whose answer
can only be read from the prompt). The Todd et al. pipeline that runs them is
:mod:`hierlab.probes.function_vectors`. The tasks, the binding episodes and the prompt
format: docs/design-probes.md#function-vector-tasks.
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
    and its query (the binding tasks).

    Attributes:
        sample: ``sample(generator) -> (x ids, y id)`` draws a demonstration.
        after: ``after(y) -> ids``, the tokens between a demonstration's answer and the
            separator (``None``: none).
        query: ``query(generator, demonstrations) -> (x ids, y id)``, the query pair
            (``None``: a fresh ``sample``).
    """

    sample: Callable[[torch.Generator], tuple[list[int], int]]
    after: Callable[[int], list[int]] | None = None
    query: Callable[[torch.Generator, list[tuple[list[int], int]]],
                    tuple[list[int], int]] | None = None


@dataclass
class Task:
    """An ICL task: how to draw a demonstration, what separates them, and chance.

    Attributes:
        name: the task's name (metric names are suffixed ``:<name>``).
        sample: ``sample(generator) -> (x ids, y id)`` draws a demonstration or query.
        sep: the separator ids after each demonstration's answer.
        chance: the accuracy of a uniform guess over the answer space.
        episode: ``episode(generator) -> Episode``, drawn once per prompt, for tasks
            whose mapping is latent per prompt (the binding tasks); :meth:`prompt` then
            uses the episode's ``sample``, not this one.
    """

    name: str
    sample: Callable[[torch.Generator], tuple[list[int], int]]
    sep: list[int]
    chance: float
    episode: Callable[[torch.Generator], Episode] | None = None

    def prompt(
        self, generator: torch.Generator, n_shots: int, shuffle: bool = False
    ) -> tuple[list[int], int, list[int]]:
        """One ICL prompt and the zero-shot prompt of the same query.

        ICL prompt: ``x_1 y_1 sep ... x_n y_n sep x_q``. Zero-shot prompt: the same prompt
        with the demonstrations removed, ``sep x_q``, so the query sits after the same
        separator in both, as Todd et al. format it. With an ``episode`` the
        demonstrations and the query share one drawn :class:`Episode`, and a
        demonstration is ``x y after(y) sep``.

        Args:
            generator: the random source; every draw of the prompt comes from it.
            n_shots: the number of demonstrations.
            shuffle: permute the labels by :func:`derange_labels`, so no demonstration
                keeps its own label (with ``n_shots > 1``; ``after`` then sees the
                deranged label).

        Returns:
            ``(ICL prompt ids, answer id, zero-shot prompt ids)``.
        """
        ep = self.episode(generator) if self.episode is not None else None
        sample = ep.sample if ep is not None else self.sample
        demos = [sample(generator) for _ in range(n_shots)]
        xq, yq = ep.query(generator, demos) if ep is not None and ep.query else sample(generator)
        ys = [y for _, y in demos]
        if shuffle and n_shots > 1:
            ys = derange_labels(ys, generator)
        ids: list[int] = []
        for (x, _), y in zip(demos, ys, strict=True):
            tail = ep.after(y) if ep is not None and ep.after else []
            ids += x + [y] + tail + self.sep
        return ids + xq, yq, list(self.sep) + list(xq)


def derange_labels(
    labels: Sequence[int], generator: torch.Generator, tries: int = 100
) -> list[int]:
    """Permute labels so that no position keeps its label (a derangement).

    Uniform over position derangements (rejection sampling, ~e draws). Among them, one
    that also changes every label *value* is preferred (demonstrations with equal labels
    would otherwise keep a correct pair); if none turns up in ``tries`` draws (e.g. most
    labels equal) the last position derangement is used.

    Args:
        labels: the demonstrations' labels, in order.
        generator: the random source.
        tries: how many permutations to draw before settling.

    Returns:
        The permuted labels; a single label as is.
    """
    n = len(labels)
    if n < 2:
        return list(labels)
    fallback: list[int] | None = None
    for _ in range(tries):
        perm = torch.randperm(n, generator=generator).tolist()
        if any(perm[i] == i for i in range(n)):
            continue
        out = [labels[i] for i in perm]
        if all(a != b for a, b in zip(out, labels, strict=True)):
            return out
        fallback = out
    if fallback is None:  # no derangement in `tries` draws (p < 1e-19): a cyclic shift
        fallback = list(labels[1:]) + [labels[0]]
    return fallback


def _rng(roles: Roles, name: str) -> tuple[int, int]:
    if name not in roles:
        raise DataError(f"corpus roles lack {name!r} (have {', '.join(roles)})")
    lo, hi = roles[name]
    return int(lo), int(hi)


def grammar_task(name: str, roles: Roles, eos_id: int) -> Task:
    """A grammar task over the corpus's word classes.

    Args:
        name: one of :data:`GRAMMAR_TASKS` (``copy_object``, ``copy_verb``,
            ``restate_object``).
        roles: the corpus's ``{role: [lo, hi)}`` id ranges.
        eos_id: the end-of-sentence id, the separator.

    Returns:
        The task; chance is one over the answer's class size.

    Raises:
        ConfigError: an unknown task name.
        DataError: the roles lack a class the task needs.
    """
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
    """A word list shipped with hierlab, for natural-language models.

    Args:
        name: the list's name (``antonym``, ``country_capital``, ``english_french``).

    Returns:
        The ``(input, output)`` pairs of ``probes/data/<name>.json``.

    Raises:
        ConfigError: no such list.
    """
    res = resources.files("hierlab.probes") / "data" / f"{name}.json"
    if not res.is_file():
        raise ConfigError(f"unknown word-list task {name!r} (no probes/data/{name}.json)")
    data = json.loads(res.read_text())
    return [(str(a), str(b)) for a, b in data["pairs"]]


def nl_task(name: str, tokenizer: Any) -> Task:
    """A word-list task in Todd et al.'s prompt format, tokenised with the model's tokenizer.

    Args:
        name: the word list's name (:func:`load_word_list`).
        tokenizer: the model's HF tokenizer.

    Returns:
        The task: ``Q: x\\nA:`` then the first token of ``" y"``, separated by ``\\n\\n``;
        chance is one over the distinct answers.
    """
    pairs = load_word_list(name)

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    encoded = [(enc(f"Q: {x}\nA:"), enc(f" {y}")[0]) for x, y in pairs]
    sep = enc("\n\n")

    def sample(g: torch.Generator) -> tuple[list[int], int]:
        return encoded[_randint(g, 0, len(encoded))]

    return Task(name, sample, sep, 1.0 / len({y for _, y in encoded}))


def binding_task(name: str, sampler: Any) -> Task:
    """A binding task: answerable only from the prompt's own document.

    Args:
        name: ``bound_verb`` or ``bound_object``.
        sampler: the corpus's :class:`~hierlab.corpus.pcfg.PcfgSampler`, whose
            ``document_bindings`` draws each prompt's binding map.

    Returns:
        The task, one fresh episode per prompt; chance is one over the verbs or objects.

    Raises:
        ConfigError: an unknown task name.
    """
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
    """The grammar and binding tasks that apply to a corpus.

    Binding tasks apply only when the corpus has bindings (β > 0); otherwise they are
    skipped with an info log, once per run rather than at every checkpoint.

    Args:
        names: the task names (``probes.fv.tasks``).
        manifest: the corpus manifest (roles, EOS id and the corpus config).
        run: a key naming the run and corpus: the skip is logged at info level once per
            key, later at debug level; ``None`` logs it at every call.

    Returns:
        The tasks that apply, in the order named.

    Raises:
        ConfigError: an unknown task name.
        DataError: the manifest's corpus config is not a valid pcfg config.
    """
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
