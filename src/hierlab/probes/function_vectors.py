"""Function vectors: the reconstructed reference metric and Todd et al. (2023).

**reference** (SPEC §5.4). Prompts exactly as the reference: 16 pairs from
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

**standard** (Todd et al. 2023, "Function Vectors in Large Language Models"):

1. mean activation ``a_bar[l, h]`` of every head (its output before ``o_proj``) at the last
   position over ``mean_prompts`` clean ``n_shots``-shot prompts;
2. causal indirect effect ``CIE[l, h] = mean_prompts [P(y | shuffled, a[l,h] := a_bar[l,h]) -
   P(y | shuffled)]`` on ``cie_prompts`` prompts per task whose demonstration labels are
   deranged (no demonstration keeps its own label);
3. one head set per checkpoint: the top-k heads by the CIE *averaged over the tasks*
   (Todd et al.'s mean indirect effect across tasks), and per task the function vector
   ``v_t = sum_{shared top-k heads} W_O^h a_bar_t[l, h]``;
4. zero-shot accuracy with ``v_t`` added to the residual stream after block ``l`` at the
   last position, for every ``l``, against the unpatched zero-shot accuracy, the
   ``n_shots``-shot accuracy and chance. A zero-shot prompt is the ICL prompt without its
   demonstrations, ``sep x_q``: the query follows the same separator as in the ICL prompt.

The CIE is batched: the shuffled prompt's prefix runs once with a KV cache, then its last
token runs as one batch of ``n_heads`` copies per layer, copy ``h`` patching head ``h`` (the
patch is at the last position, so the prefix is unaffected). Injection runs all layers
as one batch of copies.

**Tasks.** Grammar tasks (for models trained on a pcfg corpus) use only sentences the
grammar can produce, so a model can learn the mapping from its training data: a
demonstration is ``x y EOS``.

* ``copy_object``: ``x = s v o c s v``, ``y = o`` (a two-clause SVO sentence whose second
  clause repeats the first -- the reference's FV prompt);
* ``copy_verb``: ``x = s v o c s``, ``y = v``;
* ``restate_object``: ``x = v s o EOS s v``, ``y = o`` (a VSO sentence restated as SVO:
  a role mapping across the two word orders).
* ``bound_verb``, ``bound_object`` (corpora with bindings, :mod:`hierlab.probes.fv_tasks`):
  each prompt one fresh document's binding map, zero-shot at chance by construction.

Natural-language tasks (models with a real tokenizer, e.g. OLMo) read small word lists
shipped in ``probes/data/<task>.json``: ``Q: x\\nA: y\\n\\n`` per demonstration, answer =
first token of ``" y"``, tokenised piecewise with the model's own tokenizer. Chance is
``1 / |answer space|`` (the role class for grammar tasks, the distinct answers of the list
otherwise).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from hierlab.errors import ConfigError, DataError
from hierlab.probes.hooks import HookedModel

Row = dict[str, Any]
Roles = dict[str, Sequence[int]]

REFERENCE_ROLES: dict[str, tuple[int, int]] = {
    "subject": (0, 300),
    "verb": (300, 600),
    "object": (600, 900),
    "connector": (900, 1000),
}
GRAMMAR_TASKS = ("copy_object", "copy_verb", "restate_object")

__all__ = [
    "GRAMMAR_TASKS",
    "REFERENCE_ROLES",
    "Episode",
    "Task",
    "fv_reference",
    "fv_standard",
    "grammar_task",
    "nl_task",
    "reference_prompts",
]


# ---------------------------------------------------------------- reference (§5.4)
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


# ---------------------------------------------------------------- tasks
@dataclass
class Episode:
    """One prompt's latent (e.g. a document's binding map), shared by its demonstrations
    and its query (:mod:`hierlab.probes.fv_tasks`): ``sample`` draws a demonstration,
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

    def rnd(g: torch.Generator, r: tuple[int, int]) -> int:
        return int(torch.randint(r[0], r[1], (1,), generator=g).item())

    if name == "copy_object":

        def sample(g: torch.Generator) -> tuple[list[int], int]:
            s, v, o, c = rnd(g, s_r), rnd(g, v_r), rnd(g, o_r), rnd(g, c_r)
            return [s, v, o, c, s, v], o

        return Task(name, sample, [eos_id], 1.0 / (o_r[1] - o_r[0]))
    if name == "copy_verb":

        def sample(g: torch.Generator) -> tuple[list[int], int]:
            s, v, o, c = rnd(g, s_r), rnd(g, v_r), rnd(g, o_r), rnd(g, c_r)
            return [s, v, o, c, s], v

        return Task(name, sample, [eos_id], 1.0 / (v_r[1] - v_r[0]))
    if name == "restate_object":

        def sample(g: torch.Generator) -> tuple[list[int], int]:
            s, v, o = rnd(g, s_r), rnd(g, v_r), rnd(g, o_r)
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
        return encoded[int(torch.randint(0, len(encoded), (1,), generator=g).item())]

    return Task(name, sample, sep, 1.0 / len({y for _, y in encoded}))


# ---------------------------------------------------------------- standard (Todd et al.)
def _by_length(seqs: Sequence[list[int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(len(s), []).append(i)
    return groups


def _cache_kwarg(model: torch.nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def _last_logits(
    hm: HookedModel, seqs: Sequence[list[int]], batch_size: int
) -> torch.Tensor:
    """Last-position logits ``[N, V]`` (equal-length batches, no padding)."""
    out = torch.zeros(len(seqs), hm.vocab_size)
    for _, idx in _by_length(seqs).items():
        for b in range(0, len(idx), batch_size):
            sel = idx[b : b + batch_size]
            ids = torch.tensor([seqs[i] for i in sel])
            out[sel] = hm.forward(ids, logits_to_keep=1)[:, -1].float().cpu()
    return out


@torch.no_grad()
def mean_head_activations(
    hm: HookedModel, prompts: Sequence[list[int]], batch_size: int
) -> torch.Tensor:
    """``[L, H, dh]`` mean of every head's output (before ``o_proj``) at the last position."""
    names = [f"blocks.{i}.attn.hook_z" for i in range(hm.n_layers)]
    total = torch.zeros(hm.n_layers, hm.n_heads, hm.d_head, dtype=torch.float64)
    for _, idx in _by_length(prompts).items():
        for b in range(0, len(idx), batch_size):
            ids = torch.tensor([prompts[i] for i in idx[b : b + batch_size]])
            _, cache = hm.run_with_cache(ids, names, logits_to_keep=1)
            for li, n in enumerate(names):
                total[li] += cache[n][:, -1].double().sum(0).cpu()
    return (total / len(prompts)).float()


@torch.no_grad()
def causal_indirect_effect(
    hm: HookedModel,
    prompts: Sequence[list[int]],
    answers: Sequence[int],
    mean_z: torch.Tensor,
    max_copies: int = 256,
) -> torch.Tensor:
    """``[L, H]`` CIE: gain in P(answer) when a head's last-position output := its mean.

    Prompts of equal length share a batch: their prefixes run once (KV cache), then the
    last token runs as ``L * H`` copies per prompt, copy ``(l, h)`` patching head ``h`` of
    layer ``l`` (at most ``max_copies`` copies per forward).
    """
    nl, nh = hm.n_layers, hm.n_heads
    dev = hm.device
    kw = _cache_kwarg(hm.model)
    per = nl * nh
    cie = torch.zeros(nl, nh, dtype=torch.float64)
    mz = mean_z.to(dev)
    ans_all = torch.tensor(list(answers), device=dev)
    chunk = max(1, max_copies // per)
    heads = torch.arange(nh, device=dev)
    for _, idx in _by_length(prompts).items():
        for b in range(0, len(idx), chunk):
            sel = idx[b : b + chunk]
            p = len(sel)
            ids = torch.tensor([prompts[i] for i in sel], device=dev)
            ans = ans_all[sel]
            out = hm.model(input_ids=ids[:, :-1], use_cache=True)
            prefix = getattr(out, "cache", None) or out.past_key_values
            base = hm.model(input_ids=ids[:, -1:], use_cache=True, **{kw: copy.deepcopy(prefix)})
            p0 = base.logits[:, -1].float().softmax(-1)[torch.arange(p, device=dev), ans]
            prefix.batch_repeat_interleave(per)
            last = ids[:, -1:].repeat_interleave(per, 0)  # copy = i * L*H + l * H + h

            def make(layer: int, p=p) -> Callable[[torch.Tensor], torch.Tensor]:
                rows = (torch.arange(p, device=dev)[:, None] * per + layer * nh + heads).flatten()
                cols = heads.repeat(p)

                def fn(z: torch.Tensor) -> torch.Tensor:
                    out_z = z.clone()
                    out_z[rows, -1, cols] = mz[layer][cols].to(z.dtype)
                    return out_z

                return fn

            names = [f"blocks.{i}.attn.hook_z" for i in range(nl)]
            with hm.edit(*[(names[i], make(i)) for i in range(nl)]):
                lg = hm.model(input_ids=last, use_cache=True, **{kw: prefix}).logits[:, -1]
            pp = lg.float().softmax(-1)[torch.arange(p * per, device=dev),
                                        ans.repeat_interleave(per)].view(p, nl, nh)
            cie += (pp - p0[:, None, None]).sum(0).double().cpu()
    return (cie / len(prompts)).float()


def function_vector(hm: HookedModel, mean_z: torch.Tensor, cie: torch.Tensor, top_k: int
                    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``sum_{top-k (l,h) by CIE} W_O^h mean_z[l,h]`` and the chosen heads."""
    k = min(top_k, cie.numel())
    flat = torch.topk(cie.flatten(), k).indices.tolist()
    heads = [(i // hm.n_heads, i % hm.n_heads) for i in flat]
    v = torch.zeros(hm.d_model, device=hm.device)
    for layer, h in heads:
        v += hm.head_out_proj(layer, mean_z[layer, h].to(hm.device), h).float()
    return v, heads


@torch.no_grad()
def injection_accuracy(
    hm: HookedModel,
    prompts: Sequence[list[int]],
    answers: Sequence[int],
    vector: torch.Tensor,
    batch_size: int = 32,
) -> torch.Tensor:
    """``[L]`` accuracy (argmax == answer) with ``vector`` added after block ``l`` at the
    last position; all layers as one batch of copies per prompt group."""
    nl = hm.n_layers
    names = [f"blocks.{i}.hook_resid_post" for i in range(nl)]
    correct = torch.zeros(nl)
    ans_all = torch.tensor(list(answers))
    per = max(1, batch_size // nl) if batch_size >= nl else 1
    for _, idx in _by_length(prompts).items():
        for b in range(0, len(idx), per):
            sel = idx[b : b + per]
            p = len(sel)
            ids = torch.tensor([prompts[i] for i in sel]).repeat(nl, 1)  # layer-major

            def make(layer: int, p=p) -> Callable[[torch.Tensor], torch.Tensor]:
                def fn(act: torch.Tensor) -> torch.Tensor:
                    out = act.clone()
                    out[layer * p : (layer + 1) * p, -1] += vector.to(act.dtype)
                    return out

                return fn

            with hm.edit(*[(names[i], make(i)) for i in range(nl)]):
                pred = hm.forward(ids, logits_to_keep=1)[:, -1].argmax(-1).cpu().view(nl, p)
            correct += (pred == ans_all[sel][None]).float().sum(1)
    return correct / len(prompts)


def _acc(logits: torch.Tensor, answers: Sequence[int]) -> float:
    return float((logits.argmax(-1) == torch.tensor(list(answers))).float().mean())


def fv_standard(
    hm: HookedModel,
    tasks: Task | Sequence[Task],
    *,
    n_shots: int = 10,
    mean_prompts: int = 100,
    cie_prompts: int = 25,
    eval_prompts: int = 50,
    top_k: int = 10,
    batch_size: int = 32,
    seed: int = 0,
) -> list[Row]:
    """Todd et al. 2023 on one checkpoint over ``tasks`` (one head set for all of them).

    Per task ``t`` (prompts drawn from seed ``seed + i`` for the i-th task): mean head
    activations and the CIE on ``cie_prompts`` shuffled-label prompts. The heads are then
    ranked once by the CIE averaged over the tasks (Todd et al. rank by the mean indirect
    effect across tasks, so the choice rests on ``len(tasks) * cie_prompts`` prompts), and
    each task's function vector sums *its own* mean activations over those shared heads.

    Rows per task (metric names suffixed ``:<task>``): ``zero_shot_accuracy``,
    ``icl_accuracy``, ``chance``, ``fv_accuracy`` (per layer), ``cie`` (per head). Shared
    rows: ``cie_mean`` (per head, the ranking score) and ``fv_head`` (the chosen heads;
    ``k`` = rank 1..top_k, value = their mean CIE).
    """
    task_list = [tasks] if isinstance(tasks, Task) else list(tasks)
    if not task_list:
        return []
    nl, nh = hm.n_layers, hm.n_heads
    per_task = []
    for i, task in enumerate(task_list):
        g = torch.Generator().manual_seed(seed + i)
        clean = [task.prompt(g, n_shots)[0] for _ in range(mean_prompts)]
        shuffled = [task.prompt(g, n_shots, shuffle=True) for _ in range(cie_prompts)]
        evals = [task.prompt(g, n_shots) for _ in range(eval_prompts)]
        for seq in clean[:1] + [s[0] for s in shuffled[:1]]:
            if max(seq) >= hm.vocab_size:
                raise DataError(
                    f"task {task.name}: ids exceed the model vocabulary ({hm.vocab_size})"
                )
        mean_z = mean_head_activations(hm, clean, batch_size)
        cie = causal_indirect_effect(
            hm, [s[0] for s in shuffled], [s[1] for s in shuffled], mean_z
        )
        per_task.append((task, seed + i, mean_z, cie, evals))
    cie_mean = torch.stack([t[3] for t in per_task]).mean(0)
    k = min(top_k, cie_mean.numel())
    chosen = torch.topk(cie_mean.flatten(), k).indices.tolist()

    def row(metric: str, value: float, n: int, task_seed: int, layer=None, head=None,
            k=None) -> Row:
        return {"metric": metric, "layer": layer, "head": head, "k": k,
                "value": float(value), "n_samples": n, "seed": task_seed}

    rows: list[Row] = []
    for task, tseed, mean_z, cie, evals in per_task:
        # the shared ranking picks the heads; this task's mean activations fill them
        vec, _ = function_vector(hm, mean_z, cie_mean, top_k)
        zs = [e[2] for e in evals]
        ans = [e[1] for e in evals]
        fv_acc = injection_accuracy(hm, zs, ans, vec, batch_size)
        zero = _acc(_last_logits(hm, zs, batch_size), ans)
        icl = _acc(_last_logits(hm, [e[0] for e in evals], batch_size), ans)
        t = task.name
        rows += [
            row(f"zero_shot_accuracy:{t}", zero, eval_prompts, tseed),
            row(f"icl_accuracy:{t}", icl, eval_prompts, tseed),
            row(f"chance:{t}", task.chance, 0, tseed),
        ]
        rows += [row(f"fv_accuracy:{t}", fv_acc[i], eval_prompts, tseed, layer=i)
                 for i in range(nl)]
        rows += [row(f"cie:{t}", cie[layer, h], cie_prompts, tseed, layer=layer, head=h)
                 for layer in range(nl) for h in range(nh)]
    n_all = cie_prompts * len(per_task)
    rows += [row("cie_mean", cie_mean[layer, h], n_all, seed, layer=layer, head=h)
             for layer in range(nl) for h in range(nh)]
    rows += [row("fv_head", cie_mean.flatten()[i], n_all, seed, layer=i // nh, head=i % nh,
                 k=rank + 1) for rank, i in enumerate(chosen)]
    return rows
