"""The decoder families of the public checkpoint suites, on tiny random models.

GPT-NeoX as Pythia (fused ``query_key_value``, rotary on a quarter of each head, attention
and MLP in parallel; also the sequential variant), GPT-2 as the Stanford CRFM runs
(``Conv1D`` projections, fused ``c_attn``, its own upcast eager attention) and OLMo-2 (a
norm after each sublayer, q/k norms): 2 layers, d = 32, 4 heads, vocabulary 1003, biases
and norm gains drawn at random, built here (never from a hub) and saved with
``save_pretrained`` as a suite of revisions named as each suite names them.

Tolerances, all float32 on CPU: hook patterns and logits equal HF's own bit for bit
(``output_attentions`` with eager attention); sums of per-head outputs and of a block's
parts agree with the module outputs to ``atol = rtol = 1e-6`` (a few float32 ulps at
activations of order 1-10; the measured gaps are <= 7.2e-7); the Hydra decomposition's
pieces sum to its compensation (measured gaps <= 1.5e-7), and its effects equal an
ablation done by hand with plain torch hooks, to ``1e-5`` absolute (logit differences of
order 1 accumulated over 2 layers and the final norm).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.probes import checkpoints as ckmod
from hierlab.probes import hydra as hy
from hierlab.probes.hooks import HookedModel
from hierlab.probes.runner import run_probes
from probes_helpers import make_run, tiny_model, tiny_probes_config
from tiny import write_tiny_config

#: (tiny_model kind, parallel attention + MLP)
FAMILIES = {"neox": ("neox", True), "neox-sequential": ("neox", False), "gpt2": ("gpt2", True),
            "olmo2": ("olmo2", True)}
#: where each family's blocks live, written out here so the hand-made checks do not read
#: hierlab's architecture table
BLOCKS = {"neox": "gpt_neox.layers", "gpt2": "transformer.h", "olmo2": "model.layers"}
FINAL_NORM = {"neox": "gpt_neox.final_layer_norm", "gpt2": "transformer.ln_f",
              "olmo2": "model.norm"}
ATTN_OUT = {"neox": "attention", "gpt2": "attn", "olmo2": "post_attention_layernorm"}
IDS = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
TIGHT = {"atol": 1e-6, "rtol": 1e-6}
TINY_MECHANISM = {"windows": 4, "random_samples": 2, "permuted_samples": 3,
                  "causal_windows": 2, "causal_heads_per_layer": 1}


def _model(family: str, attn: str = "eager", seed: int = 0) -> torch.nn.Module:
    kind, parallel = FAMILIES[family]
    return tiny_model(kind, seed=seed, attn=attn, parallel=parallel)


def _blocks(model: torch.nn.Module, family: str) -> torch.nn.ModuleList:
    mod = model
    for part in BLOCKS[FAMILIES[family][0]].split("."):
        mod = getattr(mod, part)
    return mod


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


# ------------------------------------------------------------------ the hook layer
@torch.no_grad()
def test_patterns_and_logits_equal_hfs_own_output_attentions(family: str) -> None:
    want = _model(family)(input_ids=IDS, use_cache=False, output_attentions=True)
    hm = HookedModel(_model(family, attn="sdpa"))  # the same weights, loaded as usual
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(hm.n_layers)]
    with hm.eager():
        logits, cache = hm.run_with_cache(IDS, names)
    assert hm.model.config._attn_implementation == "sdpa"  # switched back
    for i, name in enumerate(names):
        torch.testing.assert_close(cache[name], want.attentions[i], atol=0, rtol=0)
    torch.testing.assert_close(logits, want.logits, atol=0, rtol=0)
    assert cache[names[1]][0, :, 5, 6:].abs().max() == 0  # causal
    assert cache[names[1]].max() > 1.5 / 12  # not uniform


@torch.no_grad()
def test_per_head_outputs_plus_bias_sum_to_the_projection_output(family: str) -> None:
    hm = HookedModel(_model(family))
    names = [f"blocks.{i}.{n}" for i in range(hm.n_layers)
             for n in ("attn.hook_z", "hook_attn_out")]
    _, cache = hm.run_with_cache(IDS, names)
    for layer in range(hm.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]  # [B, T, H, dh]
        heads = sum(hm.head_out_proj(layer, z[:, :, h], h) for h in range(hm.n_heads))
        bias = hm.o_bias(layer)
        assert (bias is not None) == (family != "olmo2")  # NeoX and GPT-2 carry biases
        total = heads + bias if bias is not None else heads
        out = hm.o_proj(layer)(z.reshape(*z.shape[:2], -1))
        torch.testing.assert_close(total, out, **TIGHT)
        # what the residual receives: the projection output, after OLMo-2's post-norm
        block = _blocks(hm.model, family)[layer]
        added = block.post_attention_layernorm(out) if family == "olmo2" else out
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_attn_out"], added, **TIGHT)
        assert bias is None or bias.abs().max() > 0.01  # the bias term is exercised


@torch.no_grad()
def test_each_block_output_is_its_input_plus_attention_plus_mlp(family: str) -> None:
    """The residual decomposition the Hydra split relies on, for parallel and sequential
    blocks and for OLMo-2's normalised sublayer outputs."""
    hm = HookedModel(_model(family))
    _, cache = hm.run_with_cache(IDS, hm.hook_names())
    for layer in range(hm.n_layers):
        parts = (cache[f"blocks.{layer}.hook_resid_pre"] + cache[f"blocks.{layer}.hook_attn_out"]
                 + cache[f"blocks.{layer}.hook_mlp_out"])
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], parts, **TIGHT)
    # the unchanged HF tree: hierlab's block outputs are HF's hidden states
    hidden = hm.model(input_ids=IDS, use_cache=False, output_hidden_states=True).hidden_states
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], hidden[0], atol=0, rtol=0)


@torch.no_grad()
def test_v_weight_unpacks_the_fused_value_projection(family: str) -> None:
    """With one token, a head's output is its value vector, so the difference between two
    prompts' ``hook_z`` is ``W_V`` applied to the difference of the normed inputs."""
    hm = HookedModel(_model(family))
    ids = torch.tensor([[3], [700]])
    _, cache = hm.run_with_cache(ids, ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z"])
    x = cache["blocks.0.hook_resid_pre"][:, 0]
    norm = hm.input_norm(0)
    assert (norm is None) == (family == "olmo2")
    n = norm(x) if norm is not None else x
    z = cache["blocks.0.attn.hook_z"][:, 0].reshape(2, -1)
    torch.testing.assert_close(z[0] - z[1], (n[0] - n[1]) @ hm.v_weight(0).T, **TIGHT)


# ------------------------------------------------------------------ Hydra effect
def _centred(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.gather(-1, target[..., None])[..., 0] - logits.mean(-1)


@pytest.mark.parametrize("ablation", ["zero", "resample"])
@torch.no_grad()
def test_hydra_effects_decompose_exactly(family: str, ablation: str) -> None:
    """compensation = its attention + MLP + norm pieces; the total and direct effects equal
    an ablation done by hand on the HF module tree (every position, argmax target)."""
    model = _model(family)
    samples = torch.randint(0, 1000, (2, 10), generator=torch.Generator().manual_seed(3))
    rows = hy.hydra_standard(HookedModel(model), samples, ablation=ablation, positions="all",
                             layer_batch=1)
    get = {(r["metric"], r["layer"]): r["value"] for r in rows}
    kind = FAMILIES[family][0]
    norm = _at(model, FINAL_NORM[kind])
    for layer in range(2):
        parts = sum(get[(m, layer)] for m in ("compensation_attn", "compensation_mlp",
                                              "compensation_norm"))
        assert get[("compensation", layer)] == pytest.approx(parts, abs=1e-5)
        site = _at(_blocks(model, family)[layer], ATTN_OUT[kind])
        clean = [_run(model, samples[i : i + 1], site, norm) for i in range(len(samples))]
        total, direct = [], []
        for i, run in enumerate(clean):
            new = (torch.zeros_like(run["a"]) if ablation == "zero"
                   else clean[(i + 1) % len(samples)]["a"])
            ablated = _run(model, samples[i : i + 1], site, norm, replace=new)
            tgt = run["logits"].argmax(-1)
            total.append((_centred(run["logits"], tgt) - _centred(ablated["logits"], tgt))
                         .mean())
            direct.append(_direct(norm, model, run, new, tgt))
        total_v, direct_v = torch.stack(total).mean().item(), torch.stack(direct).mean().item()
        assert get[("total_effect", layer)] == pytest.approx(total_v, abs=1e-5)
        assert get[("direct_effect", layer)] == pytest.approx(direct_v, abs=1e-5)
        assert abs(direct_v) > 1e-3 and abs(total_v) > 1e-3  # both terms are exercised


def _at(root: torch.nn.Module, dotted: str) -> torch.nn.Module:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _run(model: torch.nn.Module, ids: torch.Tensor, site: torch.nn.Module,
         norm: torch.nn.Module, replace: torch.Tensor | None = None) -> dict:
    """One forward with plain torch hooks: what ``site`` adds to the residual (replaced by
    ``replace`` if given), the final norm's input, and the logits ``[T, V]``."""
    out: dict = {}

    def at_site(mod, args, o):
        out["a"] = (o[0] if isinstance(o, tuple) else o).detach()
        if replace is not None:
            return (replace, *o[1:]) if isinstance(o, tuple) else replace
        return None

    hooks = [site.register_forward_hook(at_site),
             norm.register_forward_hook(lambda m, a, o: out.__setitem__("resid", a[0]))]
    out["logits"] = model(input_ids=ids, use_cache=False).logits[0].float()
    for h in hooks:
        h.remove()
    return out


def _direct(norm: torch.nn.Module, model: torch.nn.Module, store: dict, new: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
    """``u_t . N_clean(a - a~)``: the final norm with the clean run's divisor frozen, read
    through the unembedding centred over the vocabulary."""
    x = store["resid"][0].float()
    diff = (store["a"] - new)[0].float()
    w_u = model.get_output_embeddings().weight.float()
    u = w_u[target] - w_u.mean(0)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", None)
    if isinstance(norm, torch.nn.LayerNorm):
        scale = torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)
        diff = diff - diff.mean(-1, keepdim=True)
    else:  # RMSNorm
        scale = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return ((diff / scale * norm.weight.float()) * u).sum(-1).mean()


@torch.no_grad()
def test_hydra_reference_equals_a_plain_torch_logit_lens(family: str) -> None:
    """SPEC-free restatement: zero block L-k's output, read block L through the unembedding
    (no final norm), gold = the last input token; with biases the ablated logits are not 0."""
    model = _model(family)
    samples = torch.randint(0, 1000, (2, 10), generator=torch.Generator().manual_seed(5))
    rows = hy.hydra_reference(HookedModel(model), samples, offsets=(1,), batch_size=2)
    got = {(r["k"], r["layer"]): r["value"] for r in rows}
    blocks = _blocks(model, family)
    w_u = model.get_output_embeddings().weight[samples[:, -1]]

    def lens(zero: int | None) -> torch.Tensor:
        outs: dict = {}
        hooks = [b.register_forward_hook(
            lambda m, a, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
            for i, b in enumerate(blocks)]
        if zero is not None:
            hooks.append(blocks[zero].register_forward_hook(
                lambda m, a, o: torch.zeros_like(o[0] if isinstance(o, tuple) else o)))
        model(input_ids=samples, use_cache=False)
        for h in hooks:
            h.remove()
        return (outs[1][:, -1] * w_u).sum(-1).double()

    want = (lens(None) - lens(0)).mean().item()
    assert got[(1, 1)] == pytest.approx(want, rel=1e-5, abs=1e-5)
    if family != "olmo2":  # biases: the ablated block-1 output is not zero
        assert lens(0).abs().max() > 1e-3


# ------------------------------------------------------------------ probing a suite
#: revision folder names as each suite publishes them, and its tokens per step
SUITES = {
    "neox": (["step0", "step1", "step1000"], 2_097_152),
    "gpt2": (["checkpoint-0", "checkpoint-10", "checkpoint-100"], 524_288),
    "olmo2": (["stage1-step0-tokens0B", "stage1-step1000-tokens2B",
               "stage2-ingredient1-step10-tokens1B"], None),
}


def _suite(root: Path, kind: str) -> Path:
    folder = root / f"tiny-{kind}"
    for seed, name in enumerate(SUITES[kind][0]):
        tiny_model(kind, seed=seed).save_pretrained(folder / name)
    return folder


@pytest.mark.parametrize("kind", list(SUITES))
def test_hierlab_probe_writes_every_table_for_every_revision(tmp_path: Path, kind: str) -> None:
    folder = _suite(tmp_path, kind)
    names, per_step = SUITES[kind]
    probes = tiny_probes_config(
        induction={"samples": 2, "n": 8, "k_max": 2},
        fv={"reference_pairs": 3, "tasks": ["copy_object"], "n_shots": 2, "mean_prompts": 2,
            "cie_prompts": 1, "eval_prompts": 2},
        hydra={"random_samples": 2, "random_length": 12, "standard_samples": 2,
               "standard_length": 12, "length": 12, "max_samples": 2},
        hub={"tokens_per_step": per_step}, mechanism=TINY_MECHANISM)
    config = write_tiny_config(tmp_path / "c.yml", probes=probes.model_dump(mode="json"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["probe", str(config), "--checkpoints", str(folder),
                                   "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    want = {(ckmod.parse_step(n)[0], n) for n in names}
    for probe in ("induction", "fv", "hydra", "structure", "mechanism"):
        df = pd.read_parquet(out / "metrics" / f"{probe}.parquet")
        if probe in ("structure", "mechanism"):  # they read a hierlab corpus: none here
            assert df.empty
            continue
        # the standard function vectors' tasks are the corpus's (or a tokenizer's) words
        want_variants = {"reference"} if probe == "fv" else {"reference", "standard"}
        assert set(df.variant) == want_variants, probe
        seen = {(int(s), m) for s, m in zip(df.step, df.model, strict=True)}
        models = {n: f"tiny-{kind}" + (":stage2-ingredient1" if "stage2" in n else "")
                  for n in names}
        assert seen == {(s, models[n]) for s, n in want}, probe
        for step, tokens in zip(df.step, df.tokens_seen, strict=True):
            if per_step is not None:
                assert tokens == step * per_step
    tokens = dict(zip(pd.read_parquet(out / "metrics" / "hydra.parquet").step,
                      pd.read_parquet(out / "metrics" / "hydra.parquet").tokens_seen,
                      strict=False))
    if kind == "olmo2":  # from the names: stage 1 step 1000 = 2B tokens
        assert tokens[1000] == 2 * 10**9 and tokens[0] == 0


@pytest.mark.parametrize("kind", ["neox", "gpt2", "olmo2"])
def test_every_probe_gives_rows_on_each_family(tmp_path: Path, kind: str) -> None:
    """Trained on a hierlab corpus (a run folder), so structure, mechanism and the
    in-context scores apply too."""
    run = make_run(tmp_path, steps=(10,), corrupt=None, kind=kind)
    paths = run_probes(tiny_probes_config(mechanism=TINY_MECHANISM), run)
    for probe, path in paths.items():
        df = pd.read_parquet(path)
        assert set(df.step) == {10}, probe
        want = {"standard"} if probe == "mechanism" else {"reference", "standard"}
        assert set(df.variant) == want, probe
    ind = pd.read_parquet(paths["induction"])
    assert {"copying", "prefix_matching", "icl_score", "previous_token"} <= set(ind.metric)
    copying = ind[ind.metric == "copying"].value
    assert copying.between(-1, 1).all() and copying.abs().max() > 0


# ------------------------------------------------------------------ revision names
def _fake_refs(monkeypatch, branches: list[str]) -> None:
    monkeypatch.setattr(ckmod, "list_repo_refs", lambda repo: SimpleNamespace(
        branches=[SimpleNamespace(name=b) for b in branches]))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_pythia_revisions_and_tokens(tmp_path: Path, monkeypatch) -> None:
    _fake_refs(monkeypatch, ["main", "step0", "step1", "step512", "step1000", "step143000"])
    cks = ckmod.discover_checkpoints("hub:EleutherAI/pythia-160m-deduped", tmp_path)
    assert [c.step for c in cks] == [0, 1, 512, 1000, 143000]
    assert cks[-1].tokens_seen == 143000 * 2_097_152 == 299_892_736_000  # Pythia's total
    assert {c.model for c in cks} == {"EleutherAI/pythia-160m-deduped"}
    assert ckmod.discover_checkpoints("hub:EleutherAI/pythia-160m-v0", tmp_path)[-1] \
        .tokens_seen is None  # the early release used other batch sizes


def test_crfm_gpt2_revisions_and_tokens(tmp_path: Path, monkeypatch) -> None:
    _fake_refs(monkeypatch, ["main", "checkpoint-0", "checkpoint-10", "checkpoint-400000"])
    cks = ckmod.discover_checkpoints("hub:stanford-crfm/alias-gpt2-small-x21", tmp_path)
    assert [(c.step, c.tokens_seen) for c in cks] == [
        (0, 0), (10, 10 * 524_288), (400_000, 400_000 * 524_288)]


def test_olmo2_stages_and_revision_pattern(tmp_path: Path, monkeypatch) -> None:
    from hierlab.config import load_config
    from hierlab.probes.config import HubConfig

    _fake_refs(monkeypatch, ["main", "stage1-step0-tokens0B", "stage1-step140000-tokens294B",
                             "stage1-step1907359-tokens4001B",
                             "stage2-ingredient1-step23852-tokens51B",
                             "stage2-ingredient3-step23852-tokens51B"])
    hub = load_config("olmo2-1b").probes.hub
    cks = ckmod.discover_checkpoints("hub:allenai/OLMo-2-0425-1B", tmp_path, hub)
    assert [(c.step, c.tokens_seen) for c in cks] == [
        (0, 0), (140000, 294 * 10**9), (1907359, 4001 * 10**9)]
    every = ckmod.discover_checkpoints("hub:allenai/OLMo-2-0425-1B", tmp_path)
    stage2 = [c for c in every if c.step == 23852]
    assert [c.model for c in stage2] == ["allenai/OLMo-2-0425-1B:stage2-ingredient1",
                                         "allenai/OLMo-2-0425-1B:stage2-ingredient3"]
    assert stage2[0].revision == "stage2-ingredient1-step23852-tokens51B"
    named = ckmod.discover_checkpoints(  # explicit revisions ignore the pattern
        "hub:allenai/OLMo-2-0425-1B@stage2-ingredient1-step23852-tokens51B", tmp_path, hub)
    assert [c.step for c in named] == [23852]
    with pytest.raises(ValueError, match="hub.revision_pattern"):
        HubConfig(revision_pattern="stage1-(")


def test_suite_presets_load() -> None:
    from hierlab.config import load_config, preset_names

    assert {"olmo-1b", "olmo2-1b", "pythia-160m"} <= set(preset_names())
    assert load_config("pythia-160m").probes.checkpoints == "hub:EleutherAI/pythia-160m"
    assert load_config("olmo2-1b").probes.hub.revision_pattern == "^stage1-"
