"""Function vectors, standard variant: the Todd et al. (2023) pipeline.

Mean head activations, their causal indirect effect on shuffled-label prompts, one head
set per checkpoint, and the zero-shot accuracy of each task's function vector injected at
every layer. The tasks are in :mod:`hierlab.probes.fv_tasks`; the steps and how they are
batched: docs/design-probes.md#function-vectors-standard.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hierlab.errors import DataError
from hierlab.probes.fv_tasks import Task, corpus_tasks, nl_task
from hierlab.probes.hooks import HookedModel
from hierlab.probes.registry import register

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]

__all__ = [
    "causal_indirect_effect",
    "function_vector",
    "fv_standard",
    "injection_accuracy",
    "mean_head_activations",
    "measure_standard",
]


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
    model: HookedModel, prompts: Sequence[list[int]], batch_size: int
) -> torch.Tensor:
    """Every head's mean output at the last position: what a function vector is made of.

    Args:
        model: the hooked model.
        prompts: clean ICL prompts (token id lists; equal lengths share a batch).
        batch_size: prompts per forward.

    Returns:
        ``[L, H, dh]``: the mean of each head's output before ``o_proj`` (``hook_z``).
    """
    names = [f"blocks.{i}.attn.hook_z" for i in range(model.n_layers)]
    total = torch.zeros(model.n_layers, model.n_heads, model.d_head, dtype=torch.float64)
    for _, idx in _by_length(prompts).items():
        for b in range(0, len(idx), batch_size):
            ids = torch.tensor([prompts[i] for i in idx[b : b + batch_size]])
            _, cache = model.run_with_cache(ids, names, logits_to_keep=1)
            for li, n in enumerate(names):
                total[li] += cache[n][:, -1].double().sum(0).cpu()
    return (total / len(prompts)).float()


@torch.no_grad()
def causal_indirect_effect(
    model: HookedModel,
    prompts: Sequence[list[int]],
    answers: Sequence[int],
    mean_activations: torch.Tensor,
    max_copies: int = 256,
) -> torch.Tensor:
    """Causal indirect effect: how much each head's mean output restores the answer.

    Prompts of equal length share a batch: their prefixes run once (KV cache), then the
    last token runs as ``L * H`` copies per prompt, copy ``(l, h)`` patching head ``h`` of
    layer ``l``, so the cost is one short forward per head rather than a full one.

    Args:
        model: the hooked model.
        prompts: shuffled-label ICL prompts.
        answers: each prompt's answer id.
        mean_activations: ``[L, H, dh]`` from :func:`mean_head_activations`.
        max_copies: at most this many copies per forward.

    Returns:
        ``[L, H]``: the mean gain in ``P(answer)`` when the head's last-position output is
        set to its mean.
    """
    nl, nh = model.n_layers, model.n_heads
    dev = model.device
    kw = _cache_kwarg(model.model)
    per = nl * nh
    cie = torch.zeros(nl, nh, dtype=torch.float64)
    mz = mean_activations.to(dev)
    ans_all = torch.tensor(list(answers), device=dev)
    chunk = max(1, max_copies // per)
    heads = torch.arange(nh, device=dev)
    for _, idx in _by_length(prompts).items():
        for b in range(0, len(idx), chunk):
            sel = idx[b : b + chunk]
            p = len(sel)
            ids = torch.tensor([prompts[i] for i in sel], device=dev)
            ans = ans_all[sel]
            out = model.model(input_ids=ids[:, :-1], use_cache=True)
            prefix = getattr(out, "cache", None) or out.past_key_values
            base = model.model(input_ids=ids[:, -1:], use_cache=True,
                               **{kw: copy.deepcopy(prefix)})
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
            with model.edit(*[(names[i], make(i)) for i in range(nl)]):
                lg = model.model(input_ids=last, use_cache=True, **{kw: prefix}).logits[:, -1]
            pp = lg.float().softmax(-1)[torch.arange(p * per, device=dev),
                                        ans.repeat_interleave(per)].view(p, nl, nh)
            cie += (pp - p0[:, None, None]).sum(0).double().cpu()
    return (cie / len(prompts)).float()


def function_vector(
    model: HookedModel, mean_activations: torch.Tensor, indirect_effects: torch.Tensor,
    top_k: int,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The sum of the top heads' mean outputs, projected into the residual stream.

    Args:
        model: the hooked model.
        mean_activations: ``[L, H, dh]`` mean head outputs of one task.
        indirect_effects: ``[L, H]`` scores that rank the heads (the CIE, or its mean
            over tasks).
        top_k: how many heads to sum.

    Returns:
        ``(vector [d], chosen heads as (layer, head))``, the vector being
        ``sum_{chosen (l, h)} W_O^h mean_activations[l, h]``.
    """
    k = min(top_k, indirect_effects.numel())
    flat = torch.topk(indirect_effects.flatten(), k).indices.tolist()
    heads = [(i // model.n_heads, i % model.n_heads) for i in flat]
    v = torch.zeros(model.d_model, device=model.device)
    for layer, h in heads:
        v += model.head_out_proj(layer, mean_activations[layer, h].to(model.device), h).float()
    return v, heads


@torch.no_grad()
def injection_accuracy(
    model: HookedModel,
    prompts: Sequence[list[int]],
    answers: Sequence[int],
    vector: torch.Tensor,
    batch_size: int = 32,
) -> torch.Tensor:
    """Accuracy with a vector added to the residual stream, at every layer in turn.

    Args:
        model: the hooked model.
        prompts: the (zero-shot) prompts.
        answers: each prompt's answer id.
        vector: ``[d]``, added after block ``l`` at the last position.
        batch_size: copies per forward; all layers run as one batch of copies per prompt
            group.

    Returns:
        ``[L]``: the share of prompts whose argmax is the answer, per layer ``l``.
    """
    nl = model.n_layers
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

            with model.edit(*[(names[i], make(i)) for i in range(nl)]):
                pred = model.forward(ids, logits_to_keep=1)[:, -1].argmax(-1).cpu().view(nl, p)
            correct += (pred == ans_all[sel][None]).float().sum(1)
    return correct / len(prompts)


def _acc(logits: torch.Tensor, answers: Sequence[int]) -> float:
    return float((logits.argmax(-1) == torch.tensor(list(answers))).float().mean())


def fv_standard(
    model: HookedModel,
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
    """Todd et al. 2023 on one checkpoint, one head set for all the tasks.

    Per task (prompts drawn from seed ``seed + i`` for the i-th task): mean head
    activations and the CIE on shuffled-label prompts. The heads are then ranked once by
    the CIE averaged over the tasks (Todd et al. rank by the mean indirect effect across
    tasks, so the choice rests on ``len(tasks) * cie_prompts`` prompts), and each task's
    function vector sums *its own* mean activations over those shared heads.

    Args:
        model: the hooked model.
        tasks: one task or several.
        n_shots: demonstrations per ICL prompt.
        mean_prompts: clean prompts per task for the mean activations.
        cie_prompts: shuffled-label prompts per task for the CIE.
        eval_prompts: prompts per task for the accuracies.
        top_k: heads summed into each function vector.
        batch_size: prompts per forward.
        seed: the first task's seed.

    Returns:
        Rows per task (metric names suffixed ``:<task>``): ``zero_shot_accuracy``,
        ``icl_accuracy``, ``chance``, ``fv_accuracy`` (per layer), ``cie`` (per head).
        Shared rows: ``cie_mean`` (per head, the ranking score) and ``fv_head`` (the
        chosen heads; ``k`` = rank 1..top_k, value = their mean CIE). ``[]`` without
        tasks.

    Raises:
        DataError: a task's prompts use ids beyond the model's vocabulary.
    """
    task_list = [tasks] if isinstance(tasks, Task) else list(tasks)
    if not task_list:
        return []
    nl, nh = model.n_layers, model.n_heads
    per_task = []
    for i, task in enumerate(task_list):
        g = torch.Generator().manual_seed(seed + i)
        clean = [task.prompt(g, n_shots)[0] for _ in range(mean_prompts)]
        shuffled = [task.prompt(g, n_shots, shuffle=True) for _ in range(cie_prompts)]
        evals = [task.prompt(g, n_shots) for _ in range(eval_prompts)]
        for seq in clean[:1] + [s[0] for s in shuffled[:1]]:
            if max(seq) >= model.vocab_size:
                raise DataError(
                    f"task {task.name}: ids exceed the model vocabulary ({model.vocab_size})"
                )
        mean_z = mean_head_activations(model, clean, batch_size)
        cie = causal_indirect_effect(
            model, [s[0] for s in shuffled], [s[1] for s in shuffled], mean_z
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
        vec, _ = function_vector(model, mean_z, cie_mean, top_k)
        zs = [e[2] for e in evals]
        ans = [e[1] for e in evals]
        fv_acc = injection_accuracy(model, zs, ans, vec, batch_size)
        zero = _acc(_last_logits(model, zs, batch_size), ans)
        icl = _acc(_last_logits(model, [e[0] for e in evals], batch_size), ans)
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


@register("fv", "standard")
def measure_standard(context: ProbeContext) -> list[Row]:
    """The registered standard unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        Todd et al. over the corpus's tasks (pcfg roles) or the word lists (a
        natural-language tokenizer); ``[]`` (logged) when no task applies.
    """
    c = context.cfg.fv
    if context.roles is not None:
        tasks = corpus_tasks(c.tasks, context.manifest,
                             run=(context.ckpt.run_dir, context.ckpt.corpus))
    elif context.kind == "nl" and context.tokenizer is not None:
        tasks = [nl_task(t, context.tokenizer) for t in c.nl_tasks]
    else:
        log.info("%s: no task applies (no roles, no natural-language tokenizer)",
                 context.ckpt.name)
        return []
    # one call over all tasks: heads ranked by the CIE averaged across them (Todd et al.)
    return fv_standard(
        context.hm, tasks, n_shots=c.n_shots, mean_prompts=c.mean_prompts,
        cie_prompts=c.cie_prompts, eval_prompts=c.eval_prompts, top_k=c.top_k,
        batch_size=c.batch_size, seed=c.seed,
    )
