"""In-context measurements that fit a grammar: in-distribution repeats, previous-token
attention, loss by position in the document and the ICL score derived from it.

Random ids violate the grammar, and a grammar model's induction may be gated by role, so
these scores are taken on the corpus's own test split, in windows that start at a
document start. Formulas: docs/probes.md#induction; why and how:
docs/design-probes.md#in-context-scores.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hierlab.errors import ConfigError, DataError
from hierlab.probes.hooks import HookedModel

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]

__all__ = [
    "document_windows",
    "icl_rows",
    "in_context_rows",
    "indist_reference_rows",
    "indist_standard_rows",
    "loss_by_position",
    "previous_token_rows",
    "previous_token_scores",
    "repeated_spans",
    "resolve_bands",
]


def _row(metric: str, value: float, n: int, seed: int, layer=None, head=None, k=None) -> Row:
    return {"metric": metric, "layer": layer, "head": head, "k": k, "value": float(value),
            "n_samples": n, "seed": seed}


# ---------------------------------------------------------------- test-split data
def document_windows(
    reader: Any, count: int, length: int, seed: int | None = None
) -> torch.Tensor:
    """Test-split windows, each starting at a document start.

    Documents whose window fits in the split are eligible; they are taken evenly spaced
    over the split or drawn at random, so that windows do not all come from the first
    documents (the test split keeps a latent's repetitions together).

    Args:
        reader: the test split (a :class:`~hierlab.corpus.shards.SplitReader`).
        count: how many windows.
        length: tokens per window.
        seed: ``None`` takes them evenly spaced; a seed draws them uniformly without
            replacement.

    Returns:
        ``[min(count, eligible), length]`` token ids.

    Raises:
        DataError: no document start leaves a whole window.
    """
    starts = np.asarray(reader.doc_starts(), dtype=np.int64)
    starts = starts[starts + length <= int(reader.total_tokens)]
    if len(starts) == 0:
        raise DataError(f"{reader.path}: no document start leaves a {length}-token window")
    take = min(count, len(starts))
    if seed is None:
        idx = np.unique(np.linspace(0, len(starts) - 1, take).round().astype(np.int64))
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(starts), take, replace=False))
    arr = np.stack([reader.read(int(starts[i]), length) for i in idx]).astype(np.int64)
    return torch.from_numpy(arr)


def repeated_spans(reader: Any, samples: int, half_length: int, seed: int = 0) -> torch.Tensor:
    """Test-split spans repeated twice: the in-distribution twin of random repeats.

    Args:
        reader: the test split.
        samples: how many prompts.
        half_length: tokens per span, ``n``.
        seed: seed of the choice of document starts.

    Returns:
        ``[S, 2n]`` ids, each row a span from a document start followed by itself.
    """
    half = document_windows(reader, samples, half_length, seed=seed)
    return torch.cat([half, half], dim=1)


# ---------------------------------------------------------------- in-distribution rows
def indist_reference_rows(scores: dict[str, torch.Tensor], seed: int) -> list[Row]:
    """The reference rows on in-distribution repeats.

    Args:
        scores: :func:`~hierlab.probes.induction.attention_scores` on
            :func:`repeated_spans`.
        seed: recorded in the rows.

    Returns:
        Rows ``score_indist`` (per k) and ``head_score_indist`` (per k, layer, head).
    """
    r = scores["reference"]  # [S, K, L, H]
    s, kk, nl, nh = r.shape
    mean = r.mean(0)
    rows: list[Row] = []
    for ki in range(kk):
        rows.append(_row("score_indist", mean[ki].max(), s, seed, k=ki + 1))
        rows += [_row("head_score_indist", mean[ki, layer, head], s, seed, layer, head, ki + 1)
                 for layer in range(nl) for head in range(nh)]
    return rows


def indist_standard_rows(scores: dict[str, torch.Tensor], seed: int) -> list[Row]:
    """The standard rows on in-distribution repeats.

    Args:
        scores: :func:`~hierlab.probes.induction.attention_scores` on
            :func:`repeated_spans`.
        seed: recorded in the rows.

    Returns:
        Rows ``prefix_matching_indist_max`` and, per head, ``prefix_matching_indist`` and
        ``duplicate_token_indist``.
    """
    pm = scores["prefix_matching"].mean(0)
    dup = scores["duplicate_token"].mean(0)
    s = scores["prefix_matching"].shape[0]
    rows = [_row("prefix_matching_indist_max", pm.max(), s, seed)]
    for layer in range(pm.shape[0]):
        for head in range(pm.shape[1]):
            rows.append(_row("prefix_matching_indist", pm[layer, head], s, seed, layer, head))
            rows.append(_row("duplicate_token_indist", dup[layer, head], s, seed, layer, head))
    return rows


# ---------------------------------------------------------------- previous token
@torch.no_grad()
def previous_token_scores(model: HookedModel, windows: torch.Tensor, batch_size: int = 4
                          ) -> torch.Tensor:
    """Attention to the previous token: the first half of the induction circuit.

    Query 1 is left out because its only other key is 0, the attention sink without BOS.

    Args:
        model: the hooked model.
        windows: ``[S, T]`` token ids, ``T >= 3``.
        batch_size: windows per forward.

    Returns:
        ``[S, L, H]``: mean attention from query ``q`` to key ``q - 1``, ``q = 2..T-1``.

    Raises:
        DataError: windows shorter than 3 tokens.
    """
    if windows.shape[1] < 3:
        raise DataError(f"previous-token score needs windows of >= 3 tokens, got "
                        f"{windows.shape[1]}")
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.n_layers)]
    q = torch.arange(2, windows.shape[1])
    out = []
    with model.eager():
        for b in range(0, windows.shape[0], batch_size):
            _, cache = model.run_with_cache(windows[b : b + batch_size].to(model.device), names)
            diag = torch.stack([cache[nm][..., q, q - 1].float() for nm in names], dim=1)
            out.append(diag.mean(-1).cpu())  # [B, L, H]
    return torch.cat(out)


def previous_token_rows(scores: torch.Tensor, seed: int) -> list[Row]:
    """Rows from :func:`previous_token_scores`.

    Args:
        scores: ``[S, L, H]`` previous-token scores.
        seed: recorded in the rows.

    Returns:
        Rows ``previous_token_max`` and ``previous_token`` per head.
    """
    mean = scores.mean(0)
    s = scores.shape[0]
    rows = [_row("previous_token_max", mean.max(), s, seed)]
    rows += [_row("previous_token", mean[layer, head], s, seed, layer, head)
             for layer in range(mean.shape[0]) for head in range(mean.shape[1])]
    return rows


# ---------------------------------------------------------------- loss by position
@torch.no_grad()
def loss_by_position(model: HookedModel, windows: torch.Tensor, batch_size: int = 8
                     ) -> np.ndarray:
    """Mean cross-entropy by position: the curve the ICL score is read from.

    Args:
        model: the hooked model.
        windows: ``[W, T]`` token ids, each from a document start.
        batch_size: windows per forward.

    Returns:
        ``[T - 1]``: entry ``k - 2`` is the mean loss of token ``k`` (1-based), given the
        ``k - 1`` before it, ``k = 2..T``.
    """
    tot = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    for b in range(0, windows.shape[0], batch_size):
        ids = windows[b : b + batch_size].to(model.device)
        logits = model.forward(ids[:, :-1]).float()  # [B, T-1, V]
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        tot += ce.double().sum(0).cpu()
    return (tot / windows.shape[0]).numpy()


def resolve_bands(early: tuple[int, int], late: tuple[int, int], length: int
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ICL bands clipped to the predictable positions ``2..length`` of a window.

    A clipped band is logged rather than refused, so one config serves models of any
    context length.

    Args:
        early: ``[lo, hi]`` of the early band (1-based predicted-token positions).
        late: ``[lo, hi]`` of the late band.
        length: the window length.

    Returns:
        ``(early, late)`` as used.

    Raises:
        DataError: a band with no position left, or an early band that no longer ends
            before the late one (naming the config field).
    """
    used = []
    for field, (lo, hi) in (("icl_early_band", early), ("icl_late_band", late)):
        lo2, hi2 = max(int(lo), 2), min(int(hi), length)
        if lo2 > hi2:
            raise DataError(f"induction.{field} [{lo}, {hi}] lies outside the predictable "
                            f"positions 2..{length} of the {length}-token window")
        if (lo2, hi2) != (lo, hi):
            log.warning("induction.%s [%d, %d] clipped to [%d, %d] (%d-token window); the "
                        "positions used are recorded as rows", field, lo, hi, lo2, hi2,
                        length)
        used.append((lo2, hi2))
    if used[0][1] >= used[1][0]:
        raise DataError(f"induction.icl_early_band {list(used[0])} must end before "
                        f"induction.icl_late_band {list(used[1])} starts (window {length})")
    return used[0], used[1]


def icl_rows(curve: np.ndarray, n_windows: int, early: tuple[int, int],
             late: tuple[int, int], seed: int) -> list[Row]:
    """Rows of the loss curve and the ICL score read from it.

    Args:
        curve: :func:`loss_by_position` of the windows.
        n_windows: how many windows it averages (recorded as ``n_samples``).
        early: ``[lo, hi]`` of the early band.
        late: ``[lo, hi]`` of the late band.
        seed: recorded in the rows.

    Returns:
        ``loss_by_position`` rows (``k`` = 1-based predicted token), ``icl_score`` (late
        band minus early band; negative = in-context learning) and the band positions
        used (``icl_early_lo`` ... ``icl_late_hi``).
    """
    length = len(curve) + 1
    (elo, ehi), (llo, lhi) = resolve_bands(early, late, length)
    rows = [_row("loss_by_position", v, n_windows, seed, k=i + 2) for i, v in enumerate(curve)]
    e = float(np.mean(curve[elo - 2 : ehi - 1]))
    lt = float(np.mean(curve[llo - 2 : lhi - 1]))
    rows.append(_row("icl_score", lt - e, n_windows, seed))
    rows += [_row(name, v, n_windows, seed) for name, v in
             (("icl_early_lo", elo), ("icl_early_hi", ehi), ("icl_late_lo", llo),
              ("icl_late_hi", lhi))]
    return rows


def in_context_rows(context: ProbeContext) -> list[Row]:
    """The in-context rows of the standard induction unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        Loss by position, ICL score (with the band positions used) and previous-token
        rows on document-aligned test windows; ``[]`` without a test split, and ``[]``
        (logged) when the split is too short.

    Raises:
        ConfigError: ``induction.icl_length`` exceeds the model's context.
    """
    c = context.cfg.induction
    if context.reader is None:
        return []
    if c.icl_length is not None and c.icl_length > context.context_length:
        raise ConfigError(f"induction.icl_length {c.icl_length} exceeds the model context "
                          f"({context.context_length} tokens)")
    length = c.icl_length or min(context.context_length, 512)
    try:
        windows = document_windows(context.reader, c.position_windows, length)
        curve = loss_by_position(context.hm, windows, min(c.batch_size, 8))
        rows = icl_rows(curve, len(windows), c.icl_early_band, c.icl_late_band, c.seed)
    except DataError as err:
        log.warning("%s: loss by position / ICL score skipped: %s", context.ckpt.name, err)
        return []
    pt = previous_token_scores(context.hm, windows, min(c.batch_size, 4))
    return rows + previous_token_rows(pt, c.seed)
