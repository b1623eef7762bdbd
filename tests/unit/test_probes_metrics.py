from __future__ import annotations

import pandas as pd
import pytest
import torch

from hierlab.probes import function_vectors as fv
from hierlab.probes import fv_reference, fv_tasks
from hierlab.probes import hydra as hy
from hierlab.probes import induction as ind
from hierlab.probes.hooks import HookedModel
from hierlab.probes.structure import structure_scores
from probes_helpers import ROLES, tiny_model

N = 8


def _force_pattern(model: torch.nn.Module, offset: int) -> list:
    """Make every head's reported attention put all mass on key q - offset (second half)."""
    handles = []

    def hook(mod, args, output):
        out, w = output
        t = w.shape[-1]
        pat = torch.zeros_like(w)
        for q in range(t):
            key = q - offset if q >= N and q - offset >= 0 else q
            pat[..., q, key] = 1.0
        return out, pat

    for layer in model.model.layers:
        handles.append(layer.self_attn.register_forward_hook(hook))
    return handles


@pytest.mark.parametrize("kind", ["llama", "olmo"])
def test_induction_pattern_scores(kind: str) -> None:
    model = tiny_model(kind)
    hm = HookedModel(model)
    toks = ind.repeated_random_tokens(3, N, 1003, seed=0)
    assert torch.equal(toks[:, :N], toks[:, N:])
    for offset, (std, ref) in {N - 1: (1.0, 0.0), N: (0.0, 1.0)}.items():
        handles = _force_pattern(model, offset)
        scores = ind.attention_scores(hm, toks, N, k_max=3)
        for h in handles:
            h.remove()
        ref_rows = ind.induction_reference(scores, 0)
        std_rows = ind.induction_standard(scores, ind.copying_scores(hm), 0)
        score_k1 = next(r["value"] for r in ref_rows if r["metric"] == "score" and r["k"] == 1)
        pm_max = next(r["value"] for r in std_rows if r["metric"] == "prefix_matching_max")
        dup = [r["value"] for r in std_rows if r["metric"] == "duplicate_token"]
        assert score_k1 == pytest.approx(ref, abs=1e-6)
        assert pm_max == pytest.approx(std, abs=1e-6)
        assert max(dup) == pytest.approx(ref, abs=1e-6)
    mtm = [r for r in ref_rows if r["metric"] == "score_max_then_mean"]
    assert [r["k"] for r in mtm] == [1, 2, 3]
    heads = [r for r in ref_rows if r["metric"] == "head_score"]
    assert len(heads) == 3 * 2 * 4


def test_copying_and_phase_change() -> None:
    hm = HookedModel(tiny_model())
    cop = ind.copying_scores(hm)
    assert cop.shape == (2, 4) and (cop.abs() <= 1 + 1e-6).all()
    df = pd.DataFrame({"source": "run", "model": "pcfg", "metric": "score", "k": 1,
                       "step": [0, 10, 20, 30, 40], "value": [0.0, 0.02, 0.5, 0.7, 0.72],
                       "probe": "induction", "variant": "reference"})
    pc = ind.phase_change(df)
    assert pc.loc[0, "step_before"] == 10 and pc.loc[0, "step_after"] == 20
    assert pc.loc[0, "step"] == 15


@pytest.mark.parametrize("kind", ["llama", "olmo"])
@torch.no_grad()
def test_hydra_reference_is_logit_lens(kind: str) -> None:
    hm = HookedModel(tiny_model(kind, layers=3))
    samples = torch.randint(0, 1000, (3, 16), generator=torch.Generator().manual_seed(0))
    rows = hy.hydra_reference(hm, samples, offsets=(1, 2))
    outs: dict[int, torch.Tensor] = {}
    handles = [blk.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
               for i, blk in enumerate(hm.model.model.layers)]  # plain torch, not hierlab
    hm.model(input_ids=samples, use_cache=False)
    for h in handles:
        h.remove()
    w_u = hm.lm_head.weight
    for layer in (1, 2):
        lens = (outs[layer][:, -1] * w_u[samples[:, -1]]).sum(-1).mean().item()
        vals = {r["k"]: r["value"] for r in rows if r["layer"] == layer}
        assert vals[1] == pytest.approx(lens, rel=1e-5, abs=1e-6)
        if layer >= 2:
            assert vals[2] == vals[1]


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
@torch.no_grad()
def test_hydra_standard_zero_layer_and_identity(ablation: str) -> None:
    model = tiny_model("olmo" if ablation == "mean" else "llama", layers=3)
    model.model.layers[1].self_attn.o_proj.weight.zero_()
    hm = HookedModel(model)
    samples = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    rows = hy.hydra_standard(hm, samples, ablation=ablation, layer_batch=2)
    get = {(r["metric"], r["layer"]): r["value"] for r in rows}
    if ablation == "zero":
        assert get[("direct_effect", 1)] == 0.0
        assert abs(get[("total_effect", 1)]) < 1e-5
    for a in range(3):
        parts = sum(get[(m, a)] for m in ("compensation_attn", "compensation_mlp",
                                          "compensation_norm"))
        assert get[("compensation", a)] == pytest.approx(parts, abs=1e-4)
    assert get[("direct_effect", 0)] != 0.0


@torch.no_grad()
def test_hydra_standard_total_effect_matches_manual_ablation() -> None:
    hm = HookedModel(tiny_model(layers=2))
    samples = torch.randint(0, 1000, (1, 10), generator=torch.Generator().manual_seed(3))
    rows = hy.hydra_standard(hm, samples, ablation="zero", positions="all")
    te = {r["layer"]: r["value"] for r in rows if r["metric"] == "total_effect"}
    clean = hm.forward(samples)[0].float()
    tgt = clean.argmax(-1)
    with hm.ablate(0):
        abl = hm.forward(samples)[0].float()

    def centred(lg):
        return (lg.gather(-1, tgt[:, None])[:, 0] - lg.mean(-1))

    assert te[0] == pytest.approx((centred(clean) - centred(abl)).mean().item(), abs=1e-5)


@torch.no_grad()
def test_fv_reference_and_injection() -> None:
    hm = HookedModel(tiny_model())
    src, tgt, a_src, _ = fv_reference.reference_prompts(None, 16, 42)
    assert src.shape == (16, 6) and (src[:, 3] == 950).all()
    assert torch.equal(src[:, 0], src[:, 4]) and (a_src >= 600).all() and (a_src < 900).all()
    rows = fv_reference.fv_reference(hm, ROLES, pairs=4)
    assert [r["layer"] for r in rows] == [0, 1]
    task = fv_tasks.grammar_task("copy_object", ROLES, 1000)
    ids, ans, zero = task.prompt(torch.Generator().manual_seed(0), 3)
    assert len(ids) == 3 * 8 + 6 and zero == ids[-7:] and zero[0] == 1000 and ans == zero[3]
    vec = torch.randn(hm.d_model) * 10
    base = hm.forward(torch.tensor([zero]))
    with hm.add_vector(1, vec):
        assert not torch.allclose(hm.forward(torch.tensor([zero])), base)
    acc0 = fv.injection_accuracy(hm, [zero] * 3, [ans] * 3, torch.zeros(hm.d_model))
    plain = (base[0, -1].argmax() == ans).float()
    assert torch.equal(acc0, plain.repeat(2))


@torch.no_grad()
def test_fv_batched_cie_matches_naive() -> None:
    hm = HookedModel(tiny_model("olmo"))
    task = fv_tasks.grammar_task("copy_verb", ROLES, 1000)
    g = torch.Generator().manual_seed(0)
    prompts = [task.prompt(g, 3, shuffle=True) for _ in range(3)]
    ids = [p[0] for p in prompts]
    ans = [p[1] for p in prompts]
    mean_z = fv.mean_head_activations(hm, ids, 8)
    cie = fv.causal_indirect_effect(hm, ids, ans, mean_z, max_copies=8)
    naive = torch.zeros(2, 4)
    for i, a in zip(ids, ans, strict=True):
        x = torch.tensor([i])
        p0 = hm.forward(x)[0, -1].softmax(-1)[a]
        for layer in range(2):
            for h in range(4):
                src = torch.zeros(1, len(i), 4, hm.d_head)
                src[0, -1, h] = mean_z[layer, h]
                with hm.patch(f"blocks.{layer}.attn.hook_z", src, positions=[-1], heads=[h]):
                    p = hm.forward(x)[0, -1].softmax(-1)[a]
                naive[layer, h] += (p - p0) / len(ids)
    assert torch.allclose(cie, naive, atol=1e-5)


def test_fv_standard_rows_and_tasks() -> None:
    hm = HookedModel(tiny_model())
    task = fv_tasks.grammar_task("restate_object", ROLES, 1000)
    rows = fv.fv_standard(hm, task, n_shots=2, mean_prompts=3, cie_prompts=2, eval_prompts=3,
                          top_k=3)
    names = {r["metric"] for r in rows}
    assert names == {f"{m}:restate_object" for m in
                     ("zero_shot_accuracy", "icl_accuracy", "chance", "fv_accuracy", "cie")
                     } | {"cie_mean", "fv_head"}
    assert sum(r["metric"] == "cie:restate_object" for r in rows) == 8
    for name in ("antonym", "country_capital", "english_french"):
        assert 30 <= len(fv_tasks.load_word_list(name)) <= 60


def test_structure_scores() -> None:
    hm = HookedModel(tiny_model())
    rows = structure_scores(hm, ROLES, samples=5, seed=1)
    assert [r["metric"] for r in rows] == ["subject_to_verb", "verb_to_object",
                                           "connector_to_subject"]
    assert all(0 <= r["value"] <= 1 for r in rows)
    assert rows == structure_scores(hm, ROLES, samples=5, seed=1)


def test_random_token_id_range_for_small_vocabularies() -> None:
    """[100, V-100) is empty for a 59-id quickstart vocabulary: id_range replaces it."""
    from hierlab.errors import DataError

    with pytest.raises(DataError, match="leaves no ids"):
        ind.repeated_random_tokens(2, 8, 59)
    toks = ind.repeated_random_tokens(4, 16, 59, id_range=(0, 56))
    assert toks.shape == (4, 32) and int(toks.min()) >= 0 and int(toks.max()) < 56
    assert torch.equal(toks[:, :16], toks[:, 16:])
    with pytest.raises(DataError, match="exceeds the vocabulary"):
        ind.repeated_random_tokens(2, 8, 59, id_range=(0, 80))
