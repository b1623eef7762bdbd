"""The mechanism probe: which mechanism the best head of each layer implements.

Scores (definitions in :mod:`hierlab.probes.mechanism_scores`): successor attention ``S``,
content share ``M`` (match-breaking), causal share ``K`` (mean ablation), random-id prefix
matching at three lengths (positional flag ``P``), fixed-offset attention ``F`` and
previous-token attention ``T1``, all per (layer, head), on document-aligned test windows of
the model's full context; plus permuted-sentence repeats (prefix matching and loss gain).

**Labels** (thresholds are ``probes.mechanism`` fields; defaults in brackets). For layer
``l``:

1. ``content induction`` if ``l >= 1`` and one of its heads has ``S >= 0.3``, ``M >= 0.5``
   and ``K >= 0.3`` (the one with the highest ``S`` is reported), or its *content heads*
   (every head with ``S >= 0.3`` and ``M >= 0.5``) mean-ablated together have ``K >= 0.3``
   (the group's ``K`` is reported with its top head): a layer can hold two content heads
   that share the copying, and ablating one then removes little because the other still
   copies (seen on flat copies, docs/findings.md);
2. else, for the head with the highest ``S``: if ``S >= 0.2`` (a copy head: 20x the ~1/t
   of uniform attention) and ``M < 0.5`` (or M undefined): ``positional copy`` if ``P``
   is set or ``F >= 0.5 * S`` (its attention sits at one fixed offset), else
   ``role-keyed copy``;
3. else ``previous-token`` if the layer's largest ``T1 >= 0.5`` (that head is reported);
4. else ``none`` -- also for a content-matching head that fails the causal or layer
   condition: an attention pattern that carries no share of the gain is not the mechanism.

A layer-0 head cannot be an induction head (no previous-token head below it); its scores
are reported, and it can be labelled a copy head. The checkpoint's label (``label_model``)
is the most induction-like layer label, in the order of
:data:`hierlab.contracts.MECHANISM_LABELS`, later layers winning ties.

The reference study has no such instrument: the ``reference`` variant does not apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hierlab.contracts import MECHANISM_LABELS, ROLE_CODES
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

__all__ = ["HeadScores", "content_heads", "head_label", "label_code", "layer_labels", "measure",
           "mechanism_rows", "model_label", "nll_fn", "pattern_fn"]


def label_code(label: str) -> int:
    """The ``value`` a label is stored as."""
    return MECHANISM_LABELS.index(label)


@dataclass
class HeadScores:
    """Per-(layer, head) scores the labels read; arrays ``[L, H]``."""

    successor: np.ndarray
    content_share: np.ndarray
    causal_share: np.ndarray
    fixed_offset: np.ndarray
    previous_token: np.ndarray
    positional: np.ndarray
    #: per layer: the causal share of its content heads (S and M over their thresholds)
    #: mean-ablated together; nan without such a head
    group_causal: np.ndarray | None = None


def content_heads(s: HeadScores, layer: int, c: MechanismConfig) -> list[int]:
    """Heads of ``layer`` that attend to the successor and lose it when the match breaks
    (S >= successor_threshold, M >= content_threshold), by decreasing S."""
    order = [int(h) for h in np.argsort(-s.successor[layer], kind="stable")]
    return [h for h in order if s.successor[layer, h] >= c.successor_threshold
            and s.content_share[layer, h] >= c.content_threshold]


def head_label(s: HeadScores, layer: int, head: int, c: MechanismConfig) -> str | None:
    """Rules 1-2 of the module docstring for one head; None if neither applies."""
    succ = float(s.successor[layer, head])
    if not succ >= min(c.successor_threshold, c.copy_threshold):
        return None
    content = float(s.content_share[layer, head])
    if (layer >= 1 and succ >= c.successor_threshold and content >= c.content_threshold
            and float(s.causal_share[layer, head]) >= c.causal_threshold):
        return "content induction"
    if content >= c.content_threshold or not succ >= c.copy_threshold:
        return None  # content-matching, but layer 0 or not causal
    if bool(s.positional[layer, head]) or float(s.fixed_offset[layer, head]) >= (
            c.offset_ratio * succ):
        return "positional copy"
    return "role-keyed copy"


def layer_labels(s: HeadScores, c: MechanismConfig) -> list[tuple[str, int]]:
    """``[(label, head)]`` per layer (rules 1-4)."""
    out = []
    for layer in range(s.successor.shape[0]):
        group = content_heads(s, layer, c) if layer >= 1 else []
        alone = [h for h in group if s.causal_share[layer, h] >= c.causal_threshold]
        joint = s.group_causal is not None and s.group_causal[layer] >= c.causal_threshold
        if alone or (group and joint):  # one head carries the gain, or the group shares it
            out.append(("content induction", (alone or group)[0]))
            continue
        best = int(np.argsort(-s.successor[layer], kind="stable")[0])
        lab = head_label(s, layer, best, c)
        if lab is None:
            ph = int(np.argmax(s.previous_token[layer]))
            if s.previous_token[layer, ph] >= c.previous_token_threshold:
                lab, best = "previous-token", ph
            else:
                lab = "none"
        out.append((lab, best))
    return out


def model_label(labels: list[tuple[str, int]]) -> tuple[str, int, int]:
    """``(label, layer, head)`` of the checkpoint: the most induction-like layer label."""
    rank = [(label_code(lab), layer) for layer, (lab, _) in enumerate(labels)]
    code, layer = max(rank)
    return MECHANISM_LABELS[code], layer, labels[layer][1]


# ---------------------------------------------------------------- the model's functions
def pattern_fn(hm: HookedModel) -> ms.PatternFn:
    """``ids -> [B, L, H, T, T]`` eager attention probabilities of ``hm``."""
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(hm.n_layers)]

    def fn(ids: torch.Tensor) -> torch.Tensor:
        with hm.eager():
            _, cache = hm.run_with_cache(ids.to(hm.device), names)
        return torch.stack([cache[n].float() for n in names], 1)

    return fn


def nll_fn(hm: HookedModel, batch_size: int) -> ms.NllFn:
    """``ids -> [B, T - 1]`` next-token losses of ``hm``."""

    @torch.no_grad()
    def fn(ids: torch.Tensor) -> torch.Tensor:
        out = []
        for lo in range(0, ids.shape[0], batch_size):
            x = ids[lo : lo + batch_size].to(hm.device)
            logits = hm.forward(x).float()
            out.append(F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:],
                                       reduction="none").cpu())
        return torch.cat(out)

    return fn


@dataclass
class CleanPass:
    """What one forward over the windows gives: successor attention per event ``[E, L, H]``,
    the offset profile ``[L, H, D]``, each head's mean ``hook_z`` (per layer ``[H, d]``)
    and the next-token losses ``[W, T - 1]``."""

    successor: torch.Tensor
    profile: torch.Tensor
    head_means: list[torch.Tensor]
    nll: torch.Tensor


@torch.no_grad()
def clean_pass(hm: HookedModel, windows: torch.Tensor, ev: ms.Events, max_offset: int,
               batch_size: int) -> CleanPass:
    """One eager forward per batch that records patterns, head outputs and losses."""
    pats = [f"blocks.{i}.attn.hook_pattern" for i in range(hm.n_layers)]
    zs = [f"blocks.{i}.attn.hook_z" for i in range(hm.n_layers)]
    succ = torch.zeros(len(ev), hm.n_layers, hm.n_heads)
    prof = torch.zeros(hm.n_layers, hm.n_heads, max_offset + 1)
    sums = [torch.zeros(hm.n_heads, hm.d_head, dtype=torch.float64) for _ in zs]
    nll = []
    for lo in range(0, windows.shape[0], batch_size):
        x = windows[lo : lo + batch_size].to(hm.device)
        with hm.eager():
            logits, cache = hm.run_with_cache(x, pats + zs)
        pat = torch.stack([cache[n] for n in pats], 1)
        sel = np.nonzero((ev.b >= lo) & (ev.b < lo + len(x)))[0]
        if len(sel):
            succ[torch.from_numpy(sel)] = ms.take(pat, ev.b[sel] - lo, ev.t[sel], ev.p[sel] + 1)
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
    where = {(int(b), int(t)): i for i, (b, t) in enumerate(zip(ev.b, ev.t, strict=True))}
    wins = sorted(set(ev.b.tolist()))
    return np.array([where[(wins[j], int(t))] for j, t in zip(chosen.b, chosen.t,
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
def measure_reference(ctx: ProbeContext) -> list[Row]:
    """The reference study has no mechanism instrument: does not apply."""
    return []


@register("mechanism", "standard")
def measure(ctx: ProbeContext) -> list[Row]:
    """Every score and label of the module docstring; [] without a test split."""
    c = ctx.cfg.mechanism
    if ctx.reader is None or ctx.manifest is None:
        return []
    m = ctx.manifest
    try:
        windows = document_windows(ctx.reader, c.windows, ctx.context, seed=c.seed)
    except DataError as err:
        log.warning("%s: mechanism probe skipped: %s", ctx.ckpt.name, err)
        return []
    specials = [m.get("eos_id"), m.get("boundary_id"), m.get("pad_id"), m.get("unk_id")]
    role_of = ms.token_roles(int(m["vocab_size"]), ctx.roles, specials)
    eos = m.get("eos_id")
    pad = m.get("pad_id", eos)
    try:
        return mechanism_rows(ctx.hm, windows, role_of, c, eos, pad)
    except DataError as err:
        log.warning("%s: mechanism probe skipped: %s", ctx.ckpt.name, err)
        return []


def mechanism_rows(hm: HookedModel, windows: torch.Tensor, role_of: np.ndarray,
                   c: MechanismConfig, eos_id: int | None = None,
                   pad_id: int | None = None) -> list[Row]:
    """The probe's rows for ``hm`` on ``windows`` (``[W, C]`` ids; ``role_of`` from
    :func:`~hierlab.probes.mechanism_scores.token_roles`); usable on any data, e.g. the
    random-repeat check in ``benchmarks/mechanism_check.py``. Without ``eos_id`` the
    permuted-sentence rows are left out."""
    length = windows.shape[1]
    ev = ms.find_events(windows, role_of, c.min_distance)
    if len(ev) == 0:
        raise DataError(f"no repeated content word in {len(windows)} windows")
    pat, bs, seed = pattern_fn(hm), c.batch_size, c.seed
    cp = clean_pass(hm, windows, ev, length // 2, bs)
    succ = cp.successor.mean(0).numpy()
    clean, broken, chosen = ms.break_matches(windows, ev, role_of, seed)
    pick = _event_index(ev, chosen)
    a_clean = cp.successor[torch.from_numpy(pick)].mean(0)
    a_broken = ms.gather_attention(pat, broken, chosen.b, chosen.t, chosen.p + 1, bs).mean(0)
    content = torch.where(a_clean > 1e-9, 1.0 - a_broken / a_clean.clamp_min(1e-9),
                          torch.nan).numpy()
    nw = windows.shape[0] if c.causal_windows is None else min(c.causal_windows,
                                                                windows.shape[0])
    gains, shares = _causal_shares(hm, windows[:nw], ev.windows_below(nw), cp.nll[:nw],
                                   cp.head_means, _ablated_heads(succ, c.causal_heads_per_layer),
                                   bs)
    prof = cp.profile  # [L, H, D]
    fixed, offset = prof[..., 2:].max(-1)
    content_ids = np.nonzero(role_of != ms.NOT_CONTENT)[0]
    pm = ms.random_prefix_matching(pat, content_ids, length, c.random_samples, seed, bs)
    flags = ms.positional_flags(pm, c.positional_ratio, c.positional_floor).numpy()
    scores = HeadScores(succ, content, shares["all"], fixed.numpy(), prof[..., 1].numpy(),
                        flags)
    groups = [content_heads(scores, layer, c) if layer >= 1 else []
              for layer in range(succ.shape[0])]
    scores.group_causal = _group_causal(hm, windows[:nw], ev.windows_below(nw), gains["all"],
                                        cp.head_means, groups, bs)
    labels = layer_labels(scores, c)
    lab, best_l, best_h = model_label(labels)
    best_causal = (scores.group_causal[best_l]  # labelled through its group of heads
                   if lab == "content induction" and not head_label(scores, best_l, best_h, c)
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
        rows += _per_head("prefix_matching_random", v.numpy(), c.random_samples, seed, k=n)
    rows += _per_head("positional_flag", flags.astype(float), c.random_samples, seed)
    rows += [_row("causal_share_content_heads", scores.group_causal[layer], n_ev, seed, layer,
                  k=len(heads)) for layer, heads in enumerate(groups) if heads]
    if eos_id is not None:
        rows += _permuted_rows(hm, windows, role_of, pat, c, int(eos_id),
                               int(eos_id if pad_id is None else pad_id))
    rows += [_row("label", label_code(la), n_ev, seed, layer, h)
             for layer, (la, h) in enumerate(labels)]
    rows.append(_row("label_model", label_code(lab), n_ev, seed, best_l, best_h))
    for metric, v in (("successor_best", succ[best_l, best_h]),
                      ("content_share_best", content[best_l, best_h]),
                      ("causal_share_best", best_causal)):
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
    if pp is None or len(pp.b) == 0:
        return []
    pm = ms.gather_attention(pat, pp.ids, pp.b, pp.t, pp.src + 1, c.batch_size).mean(0)
    first, second = ms.permuted_gain(nll_fn(hm, c.batch_size)(pp.ids), pp)
    n = pp.ids.shape[0]
    return (_per_head("prefix_matching_permuted", pm.numpy(), n, c.seed)
            + [_row("permuted_loss_first", first, n, c.seed),
               _row("permuted_loss_second", second, n, c.seed),
               _row("permuted_gain", first - second, n, c.seed)])
