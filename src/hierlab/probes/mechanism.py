"""The mechanism probe: which mechanism the best head of each layer implements.

The scores of :mod:`hierlab.probes.mechanism_scores`, taken on document-aligned test
windows of the model's full context, become one label per layer -- content induction,
local content copy, positional or role-keyed copy, previous-token, none -- and one per
checkpoint. The rules: docs/mechanism.md#labels; what they add:
docs/design-probes.md#mechanism-labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hierlab.contracts import MECHANISM_LABELS, MECHANISM_RANK, ROLE_CODES
from hierlab.errors import DataError
from hierlab.probes import mechanism_scores as ms
from hierlab.probes.config import MechanismConfig
from hierlab.probes.hooks import HookedModel
from hierlab.probes.in_context import document_windows
from hierlab.probes.registry import register

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]
ROLE_NAMES = {v: k for k, v in ROLE_CODES.items()}

__all__ = ["HeadScores", "content_heads", "generalises", "head_label", "label_code",
           "layer_labels", "measure",
           "mechanism_rows", "model_label", "nll_fn", "pattern_fn"]


def label_code(label: str) -> int:
    """The number a label is stored as in the metrics table.

    Args:
        label: one of :data:`hierlab.contracts.MECHANISM_LABELS`.

    Returns:
        Its index there (the list is only ever appended to, so codes stay valid).
    """
    return MECHANISM_LABELS.index(label)


@dataclass
class HeadScores:
    """The per-(layer, head) scores the labels read, apart from the model that gave them.

    Kept apart so that the labels can be recomputed, or tested, from stored scores.

    Attributes:
        successor: ``[L, H]`` successor attention S.
        content_share: ``[L, H]`` content share M (nan where undefined).
        causal_share: ``[L, H]`` causal share K (nan for heads not ablated).
        fixed_offset: ``[L, H]`` fixed-offset attention F.
        previous_token: ``[L, H]`` previous-token attention.
        positional: ``[L, H]`` the positional flag P.
        group_causal: ``[L]``, the causal share of a layer's content heads (S and M over
            their thresholds) mean-ablated together; nan without such a head.
        random_min: ``[L, H]``, the smallest random-id prefix matching over the tested
            lengths; ``None`` (not measured) never passes the random-repeat test.
    """

    successor: np.ndarray
    content_share: np.ndarray
    causal_share: np.ndarray
    fixed_offset: np.ndarray
    previous_token: np.ndarray
    positional: np.ndarray
    group_causal: np.ndarray | None = None
    random_min: np.ndarray | None = None


def content_heads(scores: HeadScores, layer: int, config: MechanismConfig) -> list[int]:
    """The heads of a layer that attend to the successor and lose it when the match breaks.

    Args:
        scores: the per-head scores.
        layer: the layer.
        config: the thresholds (``successor_threshold``, ``content_threshold``).

    Returns:
        The heads with S >= ``successor_threshold`` and M >= ``content_threshold``, by
        decreasing S.
    """
    order = [int(h) for h in np.argsort(-scores.successor[layer], kind="stable")]
    return [h for h in order if scores.successor[layer, h] >= config.successor_threshold
            and scores.content_share[layer, h] >= config.content_threshold]


def generalises(scores: HeadScores, layer: int, head: int, config: MechanismConfig) -> bool:
    """Whether a head passes the random-repeat test.

    Args:
        scores: the per-head scores.
        layer: the head's layer.
        head: the head's index in its layer.
        config: the thresholds (``random_repeat_threshold``).

    Returns:
        True if its random-id prefix matching is at least the threshold at every tested
        length; False when it was not measured.
    """
    if scores.random_min is None:
        return False
    return bool(scores.random_min[layer, head] >= config.random_repeat_threshold)


def head_label(scores: HeadScores, layer: int, head: int, config: MechanismConfig) -> str | None:
    """The label rules 1-2 (docs/mechanism.md#labels) for one head on its own.

    Args:
        scores: the per-head scores.
        layer: the head's layer.
        head: the head's index in its layer.
        config: the thresholds.

    Returns:
        ``content induction``, ``local content copy``, ``positional copy`` or
        ``role-keyed copy``; ``None`` if neither rule applies.
    """
    succ = float(scores.successor[layer, head])
    if not succ >= min(config.successor_threshold, config.copy_threshold):
        return None
    content = float(scores.content_share[layer, head])
    if (layer >= 1 and succ >= config.successor_threshold and content >= config.content_threshold
            and float(scores.causal_share[layer, head]) >= config.causal_threshold):
        return ("content induction" if generalises(scores, layer, head, config)
                else "local content copy")
    if content >= config.content_threshold or not succ >= config.copy_threshold:
        return None  # content-matching, but layer 0 or not causal
    if bool(scores.positional[layer, head]) or float(scores.fixed_offset[layer, head]) >= (
            config.offset_ratio * succ):
        return "positional copy"
    return "role-keyed copy"


def layer_labels(scores: HeadScores, config: MechanismConfig) -> list[tuple[str, int]]:
    """The label of every layer (rules 1-4 of docs/mechanism.md#labels).

    Args:
        scores: the per-head scores (with ``group_causal`` for the group rule).
        config: the thresholds.

    Returns:
        ``[(label, head)]`` per layer, the head being the one the label rests on.
    """
    out = []
    for layer in range(scores.successor.shape[0]):
        group = content_heads(scores, layer, config) if layer >= 1 else []
        alone = [h for h in group if scores.causal_share[layer, h] >= config.causal_threshold]
        joint = (scores.group_causal is not None
                 and scores.group_causal[layer] >= config.causal_threshold)
        if alone or (group and joint):  # one head carries the gain, or the group shares it
            # alone: the causal head must generalise itself; a group: one of its members
            carriers = [h for h in (alone or group) if generalises(scores, layer, h, config)]
            if not carriers and alone and joint:
                carriers = [h for h in group if generalises(scores, layer, h, config)]
            out.append(("content induction", carriers[0]) if carriers
                       else ("local content copy", (alone or group)[0]))
            continue
        best = int(np.argsort(-scores.successor[layer], kind="stable")[0])
        lab = head_label(scores, layer, best, config)
        if lab is None:
            ph = int(np.argmax(scores.previous_token[layer]))
            if scores.previous_token[layer, ph] >= config.previous_token_threshold:
                lab, best = "previous-token", ph
            else:
                lab = "none"
        out.append((lab, best))
    return out


def model_label(labels: list[tuple[str, int]]) -> tuple[str, int, int]:
    """The checkpoint's label: its most induction-like layer label.

    Args:
        labels: :func:`layer_labels`.

    Returns:
        ``(label, layer, head)`` of the highest label in
        :data:`~hierlab.contracts.MECHANISM_RANK`, later layers winning ties.
    """
    rank = [(MECHANISM_RANK.index(lab), layer) for layer, (lab, _) in enumerate(labels)]
    _, layer = max(rank)
    return labels[layer][0], layer, labels[layer][1]


# ---------------------------------------------------------------- the model's functions
def pattern_fn(model: HookedModel) -> ms.PatternFn:
    """The model as an attention function, the form the scores take.

    Args:
        model: the hooked model.

    Returns:
        ``ids [B, T] -> [B, L, H, T, T]``, the eager attention probabilities.
    """
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.n_layers)]

    def fn(ids: torch.Tensor) -> torch.Tensor:
        with model.eager():
            _, cache = model.run_with_cache(ids.to(model.device), names)
        return torch.stack([cache[n].float() for n in names], 1)

    return fn


def nll_fn(model: HookedModel, batch_size: int) -> ms.NllFn:
    """The model as a loss function, for the in-context gain.

    Args:
        model: the hooked model.
        batch_size: sequences per forward.

    Returns:
        ``ids [B, T] -> [B, T - 1]``, the next-token losses (on the CPU).
    """

    @torch.no_grad()
    def fn(ids: torch.Tensor) -> torch.Tensor:
        out = []
        for lo in range(0, ids.shape[0], batch_size):
            x = ids[lo : lo + batch_size].to(model.device)
            logits = model.forward(x).float()
            out.append(F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:],
                                       reduction="none").cpu())
        return torch.cat(out)

    return fn


@dataclass
class CleanPass:
    """What one forward over the windows gives, so the windows run only once clean.

    Attributes:
        successor: successor attention per event ``[E, L, H]``.
        profile: the offset profile ``[L, H, D]``, averaged over the windows.
        head_means: each head's mean ``hook_z``, per layer ``[H, dh]``.
        nll: the next-token losses ``[W, T - 1]``.
    """

    successor: torch.Tensor
    profile: torch.Tensor
    head_means: list[torch.Tensor]
    nll: torch.Tensor


@torch.no_grad()
def clean_pass(model: HookedModel, windows: torch.Tensor, events: ms.Events, max_offset: int,
               batch_size: int) -> CleanPass:
    """One eager forward per batch that records patterns, head outputs and losses.

    Args:
        model: the hooked model.
        windows: ``[W, T]`` token ids.
        events: their repeats (:func:`~hierlab.probes.mechanism_scores.find_events`).
        max_offset: the largest offset of the profile.
        batch_size: windows per forward.

    Returns:
        The recorded scores and means.
    """
    pats = [f"blocks.{i}.attn.hook_pattern" for i in range(model.n_layers)]
    zs = [f"blocks.{i}.attn.hook_z" for i in range(model.n_layers)]
    succ = torch.zeros(len(events), model.n_layers, model.n_heads)
    prof = torch.zeros(model.n_layers, model.n_heads, max_offset + 1)
    sums = [torch.zeros(model.n_heads, model.d_head, dtype=torch.float64) for _ in zs]
    nll = []
    for lo in range(0, windows.shape[0], batch_size):
        x = windows[lo : lo + batch_size].to(model.device)
        with model.eager():
            logits, cache = model.run_with_cache(x, pats + zs)
        pat = torch.stack([cache[n] for n in pats], 1)
        sel = np.nonzero((events.window >= lo) & (events.window < lo + len(x)))[0]
        if len(sel):
            succ[torch.from_numpy(sel)] = ms.take(pat, events.window[sel] - lo,
                                                  events.query[sel], events.earlier[sel] + 1)
        prof += ms.offset_profile(pat, max_offset).sum(0)
        for i, n in enumerate(zs):
            sums[i] += cache[n].double().sum((0, 1)).cpu()
        nll.append(F.cross_entropy(logits[:, :-1].float().transpose(1, 2), x[:, 1:],
                                   reduction="none").cpu())
    count = windows.shape[0] * windows.shape[1]
    return CleanPass(succ, prof / windows.shape[0], [s / count for s in sums],
                     torch.cat(nll))


def _causal_shares(hm: HookedModel, windows: torch.Tensor, ev: ms.Events, nll: torch.Tensor,
                   head_means: list[torch.Tensor], heads: np.ndarray, batch_size: int
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """In-context gains (overall and per role) and the share of each that mean-ablating a
    head removes (``[L, H]``, nan for heads not ablated or a gain <= 0)."""
    roles = [None, *sorted(set(ev.role.tolist()))]
    keys = ["all" if r is None else ROLE_NAMES[int(r)] for r in roles]
    loss = nll_fn(hm, batch_size)
    gains = {k: ms.in_context_gain(nll, ev, r) for k, r in zip(keys, roles, strict=True)}
    shares = {k: np.full(heads.shape, np.nan) for k in keys}
    for layer, head in zip(*np.nonzero(heads), strict=True):
        ref = head_means[layer][head].to(hm.device, hm.dtype)
        with hm.ablate(int(layer), int(head), method="mean", reference=ref):
            abl = loss(windows)
        for k, r in zip(keys, roles, strict=True):
            g = gains[k]
            if g > 1e-6:
                shares[k][layer, head] = 1.0 - ms.in_context_gain(abl, ev, r) / g
    return gains, shares


def _group_causal(hm: HookedModel, windows: torch.Tensor, ev: ms.Events, gain: float,
                  head_means: list[torch.Tensor], groups: list[list[int]], batch_size: int
                  ) -> np.ndarray:
    """Per layer: the share of the in-context gain that mean-ablating its content heads
    together removes (nan for a layer without one, or a gain <= 0)."""
    out, loss = np.full(len(groups), np.nan), nll_fn(hm, batch_size)
    for layer, heads in enumerate(groups):
        if not heads or gain <= 1e-6:
            continue
        refs = {h: head_means[layer][h].to(hm.device, hm.dtype) for h in heads}
        def fn(act: torch.Tensor, refs: dict = refs) -> torch.Tensor:  # noqa: E306
            new = act.clone()
            for h, ref in refs.items():
                new[..., h, :] = ref.to(act.dtype).expand_as(new[..., h, :])
            return new

        with hm.edit((f"blocks.{layer}.attn.hook_z", fn)):
            abl = loss(windows)
        out[layer] = 1.0 - ms.in_context_gain(abl, ev, None) / gain
    return out


def _event_index(ev: ms.Events, chosen: ms.Events) -> np.ndarray:
    """Index in ``ev`` of each chosen event (matched by query and source; the chosen
    windows are the windows of ``ev`` that have an event, in order)."""
    where = {(int(b), int(t)): i for i, (b, t) in enumerate(zip(ev.window, ev.query, strict=True))}
    wins = sorted(set(ev.window.tolist()))
    return np.array([where[(wins[j], int(t))] for j, t in zip(chosen.window, chosen.query,
                                                              strict=True)], dtype=np.int64)


def _ablated_heads(succ: np.ndarray, per_layer: int | None) -> np.ndarray:
    mask = np.zeros(succ.shape, bool)
    k = succ.shape[1] if per_layer is None else min(per_layer, succ.shape[1])
    for layer in range(succ.shape[0]):
        mask[layer, np.argsort(-succ[layer], kind="stable")[:k]] = True
    return mask


# ---------------------------------------------------------------- the registered unit
def _row(metric: str, value: float, n: int, seed: int, layer=None, head=None, k=None) -> Row:
    return {"metric": metric, "layer": None if layer is None else int(layer),
            "head": None if head is None else int(head), "k": None if k is None else int(k),
            "value": float(value), "n_samples": int(n), "seed": seed}


def _per_head(metric: str, arr: np.ndarray, n: int, seed: int, k=None) -> list[Row]:
    return [_row(metric, arr[layer, head], n, seed, layer, head, k)
            for layer in range(arr.shape[0]) for head in range(arr.shape[1])]


@register("mechanism", "reference")
def measure_reference(context: ProbeContext) -> list[Row]:
    """The registered reference unit: the reference study has no such instrument.

    Args:
        context: the checkpoint's probe context (unused).

    Returns:
        ``[]``: the unit does not apply.
    """
    return []


@register("mechanism", "standard")
def measure(context: ProbeContext) -> list[Row]:
    """The registered standard unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        Every score and label (:func:`mechanism_rows`); ``[]`` without a test split, and
        ``[]`` (logged) when the split has no window or no repeated content word.
    """
    c = context.cfg.mechanism
    if context.reader is None or context.manifest is None:
        return []
    m = context.manifest
    try:
        windows = document_windows(context.reader, c.windows, context.context_length, seed=c.seed)
    except DataError as err:
        log.warning("%s: mechanism probe skipped: %s", context.ckpt.name, err)
        return []
    specials = [m.get("eos_id"), m.get("boundary_id"), m.get("pad_id"), m.get("unk_id")]
    role_of = ms.token_roles(int(m["vocab_size"]), context.roles, specials)
    eos = m.get("eos_id")
    pad = m.get("pad_id", eos)
    try:
        return mechanism_rows(context.hm, windows, role_of, c, eos, pad)
    except DataError as err:
        log.warning("%s: mechanism probe skipped: %s", context.ckpt.name, err)
        return []


def mechanism_rows(model: HookedModel, windows: torch.Tensor, role_of: np.ndarray,
                   config: MechanismConfig, eos_id: int | None = None,
                   pad_id: int | None = None) -> list[Row]:
    """The mechanism probe's rows for a model on given windows.

    Usable on any data, not only a run's test split, e.g. the random-repeat check in
    ``experiments/mechanism_check.py``.

    Args:
        model: the hooked model.
        windows: ``[W, C]`` token ids, ``C`` the model's context.
        role_of: the role of every id
            (:func:`~hierlab.probes.mechanism_scores.token_roles`).
        config: the ``probes.mechanism`` settings.
        eos_id: the end-of-sentence id; without it the permuted-sentence rows are left
            out.
        pad_id: the id permuted prompts are padded with (``None``: ``eos_id``).

    Returns:
        The scores per head, the in-context gains, the labels per layer and the
        checkpoint's label with the scores of its head.

    Raises:
        DataError: no repeated content word in the windows.
    """
    length = windows.shape[1]
    ev = ms.find_events(windows, role_of, config.min_distance)
    if len(ev) == 0:
        raise DataError(f"no repeated content word in {len(windows)} windows")
    pat, bs, seed = pattern_fn(model), config.batch_size, config.seed
    cp = clean_pass(model, windows, ev, length // 2, bs)
    succ = cp.successor.mean(0).numpy()
    clean, broken, chosen = ms.break_matches(windows, ev, role_of, seed)
    pick = _event_index(ev, chosen)
    a_clean = cp.successor[torch.from_numpy(pick)].mean(0)
    a_broken = ms.gather_attention(pat, broken, chosen.window, chosen.query,
                                   chosen.earlier + 1, bs).mean(0)
    content = torch.where(a_clean > 1e-9, 1.0 - a_broken / a_clean.clamp_min(1e-9),
                          torch.nan).numpy()
    nw = windows.shape[0] if config.causal_windows is None else min(config.causal_windows,
                                                                windows.shape[0])
    gains, shares = _causal_shares(model, windows[:nw], ev.windows_below(nw), cp.nll[:nw],
                                   cp.head_means,
                                   _ablated_heads(succ, config.causal_heads_per_layer), bs)
    prof = cp.profile  # [L, H, D]
    fixed, offset = prof[..., 2:].max(-1)
    content_ids = np.nonzero(role_of != ms.NOT_CONTENT)[0]
    pm = ms.random_prefix_matching(pat, content_ids, length, config.random_samples, seed, bs)
    flags = ms.positional_flags(pm, config.positional_ratio, config.positional_floor).numpy()
    random_min = torch.stack(list(pm.values())).min(0).values.numpy()
    scores = HeadScores(succ, content, shares["all"], fixed.numpy(), prof[..., 1].numpy(),
                        flags, random_min=random_min)
    groups = [content_heads(scores, layer, config) if layer >= 1 else []
              for layer in range(succ.shape[0])]
    scores.group_causal = _group_causal(model, windows[:nw], ev.windows_below(nw), gains["all"],
                                        cp.head_means, groups, bs)
    labels = layer_labels(scores, config)
    lab, best_l, best_h = model_label(labels)
    through_group = (lab in ("content induction", "local content copy")
                     and head_label(scores, best_l, best_h, config) != lab)
    best_causal = (scores.group_causal[best_l] if through_group  # the group's joint share
                   else shares["all"][best_l, best_h])

    n_ev, n_ch = len(ev), len(chosen)
    rows = [_row("events", n_ev, n_ev, seed),
            _row("event_distance_mean", ev.distance.mean(), n_ev, seed)]
    rows += _per_head("successor_attention", succ, n_ev, seed)
    rows += _per_head("content_share", content, n_ch, seed)
    for key, g in gains.items():
        suffix = "" if key == "all" else f"_{key}"
        rows.append(_row(f"in_context_gain{suffix}", g, n_ev, seed))
        rows += _per_head(f"causal_share{suffix}", shares[key], n_ev, seed)
    rows += _per_head("fixed_offset_attention", scores.fixed_offset, len(windows), seed)
    rows += [_row("fixed_offset", int(offset[la, h]) + 2, len(windows), seed, la, h)
             for la in range(offset.shape[0]) for h in range(offset.shape[1])]
    rows += _per_head("previous_token_attention", scores.previous_token, len(windows), seed)
    for n, v in pm.items():
        rows += _per_head("prefix_matching_random", v.numpy(), config.random_samples, seed, k=n)
    rows += _per_head("positional_flag", flags.astype(float), config.random_samples, seed)
    rows += [_row("causal_share_content_heads", scores.group_causal[layer], n_ev, seed, layer,
                  k=len(heads)) for layer, heads in enumerate(groups) if heads]
    if eos_id is not None:
        rows += _permuted_rows(model, windows, role_of, pat, config, int(eos_id),
                               int(eos_id if pad_id is None else pad_id))
    rows += [_row("label", label_code(la), n_ev, seed, layer, h)
             for layer, (la, h) in enumerate(labels)]
    rows.append(_row("label_model", label_code(lab), n_ev, seed, best_l, best_h))
    for metric, v in (("successor_best", succ[best_l, best_h]),
                      ("content_share_best", content[best_l, best_h]),
                      ("causal_share_best", best_causal),
                      ("random_repeat_min_best", random_min[best_l, best_h])):
        rows.append(_row(metric, v, n_ev, seed, best_l, best_h))
    upper = succ[1:] if succ.shape[0] > 1 else succ
    layer0 = 1 if succ.shape[0] > 1 else 0
    ul, uh = np.unravel_index(int(np.argmax(upper)), upper.shape)
    rows.append(_row("successor_upper_max", upper[ul, uh], n_ev, seed, ul + layer0, uh))
    return rows


def _permuted_rows(hm: HookedModel, windows: torch.Tensor, role_of: np.ndarray,
                   pat: ms.PatternFn, c: MechanismConfig, eos_id: int, pad_id: int
                   ) -> list[Row]:
    """Prefix matching and loss gain on permuted-sentence repeats; [] if none fit."""
    pp = ms.permuted_sentence_prompts(windows, eos_id, role_of, windows.shape[1] // 2,
                                      c.permuted_samples, c.seed, pad_id)
    if pp is None or len(pp.window) == 0:
        return []
    pm = ms.gather_attention(pat, pp.ids, pp.window, pp.query, pp.source + 1, c.batch_size).mean(0)
    first, second = ms.permuted_gain(nll_fn(hm, c.batch_size)(pp.ids), pp)
    n = pp.ids.shape[0]
    return (_per_head("prefix_matching_permuted", pm.numpy(), n, c.seed)
            + [_row("permuted_loss_first", first, n, c.seed),
               _row("permuted_loss_second", second, n, c.seed),
               _row("permuted_gain", first - second, n, c.seed)])
