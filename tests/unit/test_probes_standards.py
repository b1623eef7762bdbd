"""Probe definitions against the papers: Todd et al. 2023 (FV) and McGrath et al. 2023 (Hydra)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hierlab.probes import function_vectors as fv
from hierlab.probes import fv_tasks
from hierlab.probes import hydra as hy
from hierlab.probes.hooks import HookedModel
from probes_helpers import ROLES, tiny_model


# ------------------------------------------------------------------ function vectors
def _pair_task() -> fv_tasks.Task:
    """x = [a], y = a + 500: each demonstration's own label is known from its x."""

    def sample(g: torch.Generator) -> tuple[list[int], int]:
        a = int(torch.randint(0, 400, (1,), generator=g).item())
        return [a], a + 500

    return fv_tasks.Task("pair", sample, [1000], 1 / 400)


@pytest.mark.parametrize("n_shots", [2, 3, 5])
def test_shuffled_labels_are_a_derangement(n_shots: int) -> None:
    task = _pair_task()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        ids, _, _ = task.prompt(g, n_shots, shuffle=True)
        demos = [ids[3 * j : 3 * j + 3] for j in range(n_shots)]
        assert all(d[2] == 1000 for d in demos)
        assert all(d[1] != d[0] + 500 for d in demos), demos


def test_derangement_with_equal_labels_and_single_label() -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        out = fv_tasks.derange_labels([7, 7, 8, 9], g)
        assert sorted(out) == [7, 7, 8, 9]
        assert all(a != b for a, b in zip(out, [7, 7, 8, 9], strict=True))
    assert sorted(fv_tasks.derange_labels([5, 5, 5], g)) == [5, 5, 5]  # impossible: still permutes
    assert fv_tasks.derange_labels([3], g) == [3]


def test_zero_shot_prompt_keeps_the_separator_before_the_query() -> None:
    for name in fv_tasks.GRAMMAR_TASKS:
        task = fv_tasks.grammar_task(name, ROLES, 1000)
        ids, _, zero = task.prompt(torch.Generator().manual_seed(3), 4)
        assert zero[0] == 1000 and ids[-len(zero):] == zero
        assert len(zero) == 1 + 6 - (name == "copy_verb")


@torch.no_grad()
def test_fv_heads_are_shared_and_ranked_by_the_mean_cie_over_tasks() -> None:
    hm = HookedModel(tiny_model())
    tasks = [fv_tasks.grammar_task(t, ROLES, 1000) for t in ("copy_object", "restate_object")]
    kw = dict(n_shots=2, mean_prompts=3, cie_prompts=3, eval_prompts=4, top_k=3, seed=5)
    rows = pd.DataFrame(fv.fv_standard(hm, tasks, **kw))
    cie = {t.name: rows[rows.metric == f"cie:{t.name}"].set_index(["layer", "head"]).value
           for t in tasks}
    mean = (cie["copy_object"] + cie["restate_object"]) / 2
    got_mean = rows[rows.metric == "cie_mean"].set_index(["layer", "head"]).value
    assert torch.allclose(torch.tensor(got_mean.values), torch.tensor(mean.values), atol=1e-6)
    heads = rows[rows.metric == "fv_head"].sort_values("k")
    assert list(heads.k) == [1, 2, 3]
    assert list(zip(heads["layer"], heads["head"], strict=True)) == list(mean.nlargest(3).index)

    # the first task alone gives the same per-task CIE (same seed), and its FV accuracy
    # is the one of the vector built on the *shared* heads from its own mean activations
    alone = pd.DataFrame(fv.fv_standard(hm, tasks[0], **kw))
    a = alone[alone.metric == "cie:copy_object"].value.to_numpy()
    assert torch.allclose(torch.tensor(a), torch.tensor(cie["copy_object"].values))
    g = torch.Generator().manual_seed(6)  # the second task draws from seed + 1
    clean = [tasks[1].prompt(g, 2)[0] for _ in range(3)]
    [tasks[1].prompt(g, 2, shuffle=True) for _ in range(3)]
    evals = [tasks[1].prompt(g, 2) for _ in range(4)]
    mean_z = fv.mean_head_activations(hm, clean, 32)
    shared = torch.tensor(got_mean.values, dtype=torch.float32).view(hm.n_layers, hm.n_heads)
    vec, chosen = fv.function_vector(hm, mean_z, shared, 3)
    assert chosen == list(mean.nlargest(3).index)
    acc = fv.injection_accuracy(hm, [e[2] for e in evals], [e[1] for e in evals], vec, 32)
    got = rows[rows.metric == "fv_accuracy:restate_object"].sort_values("layer").value
    assert got.tolist() == pytest.approx(acc.tolist())


# ------------------------------------------------------------------ Hydra (McGrath et al.)
def _centred(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return logits.gather(-1, tgt[..., None])[..., 0] - logits.mean(-1)


@torch.no_grad()
def _manual_total_effect(hm: HookedModel, samples: torch.Tensor, layer: int,
                         replacement: list[torch.Tensor]) -> float:
    """Clean minus ablated centred logit of the clean argmax at the final token, where
    sample i's attention output of ``layer`` is overwritten by ``replacement[i]`` [T, d]."""
    out = []
    for i in range(len(samples)):
        x = samples[i : i + 1]
        clean = hm.forward(x)[0, -1].float()
        tgt = clean.argmax()
        with hm.edit((f"blocks.{layer}.hook_attn_out",
                      lambda a, r=replacement[i]: r[None].to(a.dtype))):
            abl = hm.forward(x)[0, -1].float()
        out.append((_centred(clean, tgt) - _centred(abl, tgt)).item())
    return sum(out) / len(out)


def _attn_out(hm: HookedModel, samples: torch.Tensor, layer: int) -> torch.Tensor:
    name = f"blocks.{layer}.hook_attn_out"
    return torch.stack([hm.run_with_cache(samples[i : i + 1], [name])[1][name][0]
                        for i in range(len(samples))])  # [S, T, d]


def _te(rows: list[dict], layer: int) -> float:
    return next(r["value"] for r in rows if r["metric"] == "total_effect"
                and r["layer"] == layer)


def test_hydra_defaults_are_resample_at_the_final_token_and_recorded() -> None:
    from hierlab.probes.config import HydraConfig

    assert (HydraConfig().ablation, HydraConfig().positions) == ("resample", "final")
    hm = HookedModel(tiny_model(layers=2))
    samples = torch.randint(0, 1000, (3, 10), generator=torch.Generator().manual_seed(1))
    rows = hy.hydra_standard(hm, samples, layer_batch=2)
    names = {r["metric"] for r in rows}
    assert {"ablation:resample", "positions:final", "compensation", "compensation_ratio",
            "direct_effect", "total_effect"} <= names
    assert next(r["value"] for r in rows if r["metric"] == "positions:final") == 1.0
    # resample: sample i takes sample i+1's attention output; measured at the final token
    acts = _attn_out(hm, samples, 0)
    want = _manual_total_effect(hm, samples, 0, [acts[(i + 1) % 3] for i in range(3)])
    assert _te(rows, 0) == pytest.approx(want, abs=1e-5)


def test_hydra_all_positions_option_averages_every_position() -> None:
    hm = HookedModel(tiny_model(layers=2))
    samples = torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(2))
    final = hy.hydra_standard(hm, samples, ablation="zero")
    every = hy.hydra_standard(hm, samples, ablation="zero", positions="all")
    assert next(r["value"] for r in every if r["metric"] == "positions:all") == 8.0
    with torch.no_grad():
        clean = hm.forward(samples).float()
        tgt = clean.argmax(-1)
        with hm.ablate(1):
            abl = hm.forward(samples).float()
    diff = _centred(clean, tgt) - _centred(abl, tgt)  # [S, T]
    assert _te(every, 1) == pytest.approx(diff.mean().item(), abs=1e-5)
    assert _te(final, 1) == pytest.approx(diff[:, -1].mean().item(), abs=1e-5)


def test_hydra_mean_ablation_uses_the_other_samples_at_the_same_position() -> None:
    hm = HookedModel(tiny_model(layers=2))
    samples = torch.randint(0, 1000, (3, 10), generator=torch.Generator().manual_seed(4))
    rows = hy.hydra_standard(hm, samples, ablation="mean")
    assert any(r["metric"] == "ablation:mean" for r in rows)
    acts = _attn_out(hm, samples, 0)  # [S, T, d]
    others = [(acts.sum(0) - acts[i]) / 2 for i in range(3)]
    incl = [acts.mean(0)] * 3  # including the current sample
    pooled = [acts.mean(dim=(0, 1)).expand_as(acts[0])] * 3  # over positions as well
    want = _manual_total_effect(hm, samples, 0, others)
    assert _te(rows, 0) == pytest.approx(want, abs=1e-5)
    for wrong in (incl, pooled):  # the definitions differ measurably on this model
        assert abs(_manual_total_effect(hm, samples, 0, wrong) - want) > 1e-4
    with pytest.raises(Exception, match="2 samples"):
        hy.hydra_standard(hm, samples[:1], ablation="mean")


def test_hydra_config_rejects_one_sample_for_mean_or_resample() -> None:
    from pydantic import ValidationError

    from hierlab.probes.config import ProbesConfig

    with pytest.raises(ValidationError, match="hydra.standard_samples"):
        ProbesConfig(hydra={"standard_samples": 1})
    assert ProbesConfig(hydra={"standard_samples": 1, "ablation": "zero"}).hydra.ablation == "zero"
