"""The Hydra effect: what happens downstream when one layer's output is removed.

The reference study's ``drop`` (reproduced exactly, degeneracy included) beside McGrath
et al.'s (2023) direct and total effects, whose difference -- the compensation by later
layers -- is split exactly into attention, MLP and final-norm parts. Definitions:
docs/probes.md#hydra-effect; the decomposition and its choices:
docs/design-probes.md#hydra-effect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hierlab.errors import ConfigError
from hierlab.probes.hooks import HookedModel
from hierlab.probes.registry import register

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

log = logging.getLogger(__name__)

Row = dict[str, Any]

__all__ = [
    "hydra_reference",
    "hydra_standard",
    "measure_reference",
    "measure_standard",
    "random_token_samples",
]


def random_token_samples(
    samples: int, length: int, vocab_size: int, margin: int = 100, seed: int = 0
) -> torch.Tensor:
    """Random-id samples for a model without a corpus (the reference OLMo evaluator's).

    Args:
        samples: how many sequences.
        length: ids per sequence.
        vocab_size: the model's vocabulary ``V``.
        margin: ids are drawn from ``[margin, V - margin)``.
        seed: seed of the draw (the reference's was unseeded).

    Returns:
        ``[samples, length]`` ids.
    """
    g = torch.Generator().manual_seed(seed)
    hi = max(vocab_size - margin, margin + 1)
    return torch.randint(margin, hi, (samples, length), generator=g)


def _row(metric: str, value: float, n: int, seed: int | None, layer=None, k=None) -> Row:
    return {"metric": metric, "layer": layer, "head": None, "k": k, "value": float(value),
            "n_samples": n, "seed": seed}


@torch.no_grad()
def hydra_reference(
    model: HookedModel,
    samples: torch.Tensor,
    offsets: Sequence[int] = (1, 2),
    batch_size: int = 4,
    seed: int | None = None,
) -> list[Row]:
    """The reference ``drop``: clean minus ablated logit-lens logit of the last token.

    The ablated forward is run for every sample, as the study does, rather than assumed
    to give zeros, so a decoder with biases is measured correctly too.

    Args:
        model: the hooked model.
        samples: ``[S, T]`` token ids.
        offsets: the ``k`` of the study: block ``L - k`` is zeroed and block ``L`` read.
        batch_size: samples per forward.
        seed: recorded in the rows.

    Returns:
        Rows ``drop`` per ``k`` and layer ``L = k .. n_layers - 1``, averaged over samples.
    """
    nl = model.n_layers
    s, t = samples.shape
    names = [f"blocks.{i}.hook_resid_post" for i in range(nl)]
    w_u = model.lm_head.weight
    gold = samples[:, -1].to(model.device)
    clean = torch.zeros(s, nl, dtype=torch.float64)
    for b in range(0, s, batch_size):
        ids = samples[b : b + batch_size]
        _, cache = model.run_with_cache(ids, names, logits_to_keep=1)
        g = gold[b : b + batch_size]
        for i, nm in enumerate(names):
            h = cache[nm][:, -1]  # [B, d]
            clean[b : b + len(ids), i] = (h * w_u[g]).sum(-1).double().cpu()
    # ablated: one forward per (ablated block A, batch of samples), reused for every L = A + k
    abl = torch.zeros(s, nl, nl, dtype=torch.float64)  # [sample, A, L]
    needed = sorted({layer - k for k in offsets for layer in range(k, nl)})
    zero = torch.zeros(model.d_model, device=model.device)
    for a in needed:
        later = names[a + 1 :]
        for b in range(0, s, batch_size):
            ids = samples[b : b + batch_size]
            g = gold[b : b + batch_size]
            with model.overwrite(a, zero), model.capture(later) as c:
                model.forward(ids, logits_to_keep=1)
            for nm in later:
                layer = int(nm.split(".")[1])
                h = c[nm][:, -1]  # [B, d]
                abl[b : b + len(ids), a, layer] = (h * w_u[g]).sum(-1).double().cpu()
    rows: list[Row] = []
    for k in offsets:
        for layer in range(k, nl):
            drop = (clean[:, layer] - abl[:, layer - k, layer]).mean().item()
            rows.append(_row("drop", drop, s, seed, layer=layer, k=k))
    return rows


@torch.no_grad()
def hydra_standard(
    model: HookedModel,
    samples: torch.Tensor,
    *,
    ablation: str = "resample",
    target: str = "argmax",
    positions: str = "final",
    layer_batch: int = 16,
    seed: int | None = None,
) -> list[Row]:
    """McGrath et al. 2023 per attention layer: direct and total effect, compensation.

    Args:
        model: the hooked model.
        samples: ``[S, T]`` token ids (``S >= 2`` for ``mean`` and ``resample``).
        ablation: how an attention layer's output is removed: ``resample`` (another
            sample's output, the paper's main method), ``mean`` (over the other samples,
            same position) or ``zero``.
        target: the token whose centred logit is measured: the clean ``argmax`` or the
            true ``next_token``.
        positions: ``final`` (the last position with a target, as in the paper) or
            ``all`` (averaged over every position).
        layer_batch: ablated copies per forward.
        seed: recorded in the rows.

    Returns:
        Per attention layer: ``direct_effect``, ``total_effect``, ``compensation``,
        ``compensation_ratio`` and the split ``compensation_attn``, ``compensation_mlp``,
        ``compensation_norm``; then the descriptor rows ``ablation:<name>`` (value 1) and
        ``positions:<name>`` (positions measured per sample).

    Raises:
        ConfigError: an unknown ablation, target or positions, or fewer than two samples
            for ``mean`` or ``resample``.
    """
    if ablation not in ("zero", "mean", "resample"):
        raise ConfigError(f"hydra ablation must be zero, mean or resample, got {ablation!r}")
    if target not in ("argmax", "next_token"):
        raise ConfigError(f"hydra target must be argmax or next_token, got {target!r}")
    if positions not in ("final", "all"):
        raise ConfigError(f"hydra positions must be final or all, got {positions!r}")
    nl = model.n_layers
    s, t = samples.shape
    if ablation != "zero" and s < 2:
        raise ConfigError(f"{ablation} ablation needs >= 2 samples (it uses the other samples)")
    dev = model.device
    attn_names = [f"blocks.{i}.hook_attn_out" for i in range(nl)]
    mlp_names = [f"blocks.{i}.hook_mlp_out" for i in range(nl)]
    last = f"blocks.{nl - 1}.hook_resid_post"

    # reference activations for mean / resample ablation
    ref_attn: list[torch.Tensor] | None = None
    sum_attn: torch.Tensor | None = None
    if ablation != "zero":
        ref_attn = []
        for i in range(s):
            _, c = model.run_with_cache(samples[i : i + 1], attn_names, logits_to_keep=1)
            ref_attn.append(torch.stack([c[n][0] for n in attn_names]).cpu())  # [L, T, d]
        sum_attn = torch.stack(ref_attn).double().sum(0)  # [L, T, d], per position

    w_u = model.lm_head.weight.float()
    w_u_mean = w_u.mean(0)
    lm_bias = getattr(model.lm_head, "bias", None)
    sums = {m: torch.zeros(nl, dtype=torch.float64) for m in
            ("direct_effect", "total_effect", "compensation_attn", "compensation_mlp",
             "compensation_norm")}
    n_pos = 0
    for i in range(s):
        ids = samples[i : i + 1].to(dev)
        logits, c = model.run_with_cache(ids, [last], )
        resid = c[last][0].float()  # [T, d]
        scale = model.norm_scale(resid)  # [T, 1]
        if target == "argmax":
            tgt = logits[0].float().argmax(-1)  # [T]
            use = torch.arange(t, device=dev)
        else:
            tgt = ids[0, 1:]
            use = torch.arange(t - 1, device=dev)
        tgt_full = torch.zeros(t, dtype=torch.long, device=dev)
        tgt_full[use] = tgt
        if positions == "final":  # the last position with a target
            use = use[-1:]
        u = w_u[tgt_full] - w_u_mean  # [T, d]
        offset = 0.0
        if model.norm_bias() is not None:
            offset = (model.norm_bias() * u).sum(-1)
        if lm_bias is not None:
            offset = offset + (lm_bias.float()[tgt_full] - lm_bias.float().mean())

        def proj(x: torch.Tensor, u=u, scale=scale) -> torch.Tensor:
            return (model.norm_linear(x, scale) * u).sum(-1)  # [..., T]

        replacement: list[torch.Tensor] = []
        for a in range(nl):
            if ablation == "zero":
                replacement.append(torch.zeros(t, model.d_model, device=dev))
            elif ablation == "mean":  # the other samples, same position
                others = (sum_attn[a] - ref_attn[i][a].double()) / (s - 1)
                replacement.append(others.float().to(dev))
            else:
                replacement.append(ref_attn[(i + 1) % s][a].to(dev))
        for c0 in range(0, nl, layer_batch):
            layers = list(range(c0, min(nl, c0 + layer_batch)))
            nb = len(layers) + 1  # copy 0 is clean
            pa = torch.zeros(nb, nl, t, dtype=torch.float64, device=dev)
            pm = torch.zeros(nb, nl, t, dtype=torch.float64, device=dev)
            direct = torch.zeros(len(layers), t, dtype=torch.float64, device=dev)
            store: dict[str, torch.Tensor] = {}

            def attn_fn(act: torch.Tensor, li: int, layers=layers, pa=pa, direct=direct,
                        replacement=replacement):
                out = None
                if li in layers:
                    j = layers.index(li) + 1
                    out = act.clone()
                    new = replacement[li].to(act.dtype)
                    direct[j - 1] = proj(act[0].float() - new.float()).double()
                    out[j] = new
                pa[:, li] = proj((out if out is not None else act).float()).double()
                return out

            def mlp_fn(act: torch.Tensor, li: int, pm=pm) -> None:
                pm[:, li] = proj(act.float()).double()
                return None

            def fin_fn(act: torch.Tensor, store=store) -> None:
                store["normed"] = act.float()
                return None

            def res_fn(act: torch.Tensor, store=store) -> None:
                store["resid"] = act.float()
                return None

            pairs = [(attn_names[li], lambda a_, li=li: attn_fn(a_, li)) for li in range(nl)]
            pairs += [(mlp_names[li], lambda a_, li=li: mlp_fn(a_, li)) for li in range(nl)]
            pairs += [("ln_final.hook_out", fin_fn), (last, res_fn)]
            with model.edit(*pairs):
                model.forward(ids.expand(nb, -1), logits_to_keep=1)
            cl = (store["normed"] * u).sum(-1).double()  # [nb, T] centred logit (no bias)
            if lm_bias is not None:
                cl = cl + (lm_bias.float()[tgt_full] - lm_bias.float().mean()).double()
            lin = proj(store["resid"]).double() + (
                offset.double() if torch.is_tensor(offset) else offset
            )
            for j, a in enumerate(layers, start=1):
                sel = use
                te = cl[0] - cl[j]
                comp_attn = (pa[j, a + 1 :] - pa[0, a + 1 :]).sum(0)
                comp_mlp = (pm[j, a:] - pm[0, a:]).sum(0)
                comp_norm = cl[j] - lin[j]
                sums["direct_effect"][a] += direct[j - 1][sel].sum().item()
                sums["total_effect"][a] += te[sel].sum().item()
                sums["compensation_attn"][a] += comp_attn[sel].sum().item()
                sums["compensation_mlp"][a] += comp_mlp[sel].sum().item()
                sums["compensation_norm"][a] += comp_norm[sel].sum().item()
        n_pos += len(use)
    rows: list[Row] = []
    for a in range(nl):
        de = sums["direct_effect"][a].item() / n_pos
        te = sums["total_effect"][a].item() / n_pos
        comp = de - te
        ratio = comp / de if de != 0 else float("nan")
        rows += [
            _row("direct_effect", de, s, seed, layer=a),
            _row("total_effect", te, s, seed, layer=a),
            _row("compensation", comp, s, seed, layer=a),
            _row("compensation_ratio", ratio, s, seed, layer=a),
        ]
        for m in ("compensation_attn", "compensation_mlp", "compensation_norm"):
            rows.append(_row(m, sums[m][a].item() / n_pos, s, seed, layer=a))
    rows += [
        _row(f"ablation:{ablation}", 1.0, s, seed),
        _row(f"positions:{positions}", n_pos / s, s, seed),
    ]
    return rows


# ------------------------------------------------------------------ registered units
def _samples(ctx: ProbeContext, n: int, length: int | None) -> torch.Tensor:
    """Test-split chunks for a hierlab model, seeded random ids for one without a corpus."""
    c = ctx.cfg.hydra
    if ctx.manifest is not None:
        return ctx.windows(n, length or ctx.context_length)
    return random_token_samples(
        c.random_samples, length or c.random_length, ctx.vocab, c.id_margin, c.seed
    )


@register("hydra", "reference")
def measure_reference(context: ProbeContext) -> list[Row]:
    """The registered reference unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        The reference drop on ``max_samples`` test chunks, or on seeded random ids for a
        model without a corpus.
    """
    c = context.cfg.hydra
    n = c.max_samples if context.manifest is not None else c.random_samples
    length = c.length if context.manifest is not None else c.random_length
    return hydra_reference(context.hm, _samples(context, n, length), c.ks, c.batch_size, c.seed)


@register("hydra", "standard")
def measure_standard(context: ProbeContext) -> list[Row]:
    """The registered standard unit.

    Args:
        context: the checkpoint's probe context.

    Returns:
        McGrath et al.'s rows on ``standard_samples`` test chunks (random ids without a
        corpus); a test split too short for two chunks gets two shorter ones, since
        ``mean`` and ``resample`` need another sample.
    """
    c = context.cfg.hydra
    n = c.standard_samples if context.manifest is not None else c.random_samples
    length = c.standard_length or (c.length if context.manifest is not None else c.random_length)
    samples = _samples(context, n, length)
    if c.ablation != "zero" and len(samples) < 2 and context.reader is not None:
        # mean/resample need another sample: a short test split gets shorter chunks
        short = int(context.reader.total_tokens) // 2
        log.warning("%s: hydra/standard: test split holds one %s-token chunk; %s "
                    "ablation uses 2 chunks of %d", context.ckpt.name, samples.shape[1],
                    c.ablation, short)
        samples = _samples(context, 2, short)
    return hydra_standard(context.hm, samples, ablation=c.ablation, target=c.target,
                          positions=c.positions, layer_batch=c.layer_batch, seed=c.seed)
