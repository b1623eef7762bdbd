"""hierlab checkpoints read by the field's own tools (the ``interop`` extra).

TransformerLens 4 (``TransformerBridge``) and nnsight load a saved checkpoint and must give
hierlab's hook activations and its reference Hydra table. These run in CI: the README's
test command installs the extra, so a missing package is a failure, not a skip.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.tokenizer import save_tokenizer
from hierlab.errors import ConfigError
from hierlab.probes import hydra as hy
from hierlab.probes.hooks import HookedModel
from hierlab.train.config import ModelConfig
from hierlab.train.model import build_model

CORPUS = PcfgConfig(kind="pcfg", lexicon={"subjects": 8, "verbs": 8, "objects": 8,
                                          "connectors": 4})
VOCAB = 31  # 28 words, [EOS], [UNK], [PAD]
N_LAYERS = 3


def _save(model: torch.nn.Module, path: Path) -> Path:
    model.save_pretrained(path)
    save_tokenizer(CORPUS, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A hierlab model (as ``hierlab train`` builds it), random init with a wide scale so
    attention patterns are far from uniform."""
    cfg = ModelConfig(hidden_size=32, num_layers=N_LAYERS, num_heads=2, context_length=32,
                      initializer_range=0.3)
    return _save(build_model(cfg, VOCAB, 0, eos_id=28, pad_id=30),
                 tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def biased_checkpoint(tmp_path_factory) -> Path:
    """A Llama with attention and MLP biases (random, not HF's zero init)."""
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=N_LAYERS, num_attention_heads=2,
                      max_position_embeddings=32, attention_bias=True, mlp_bias=True,
                      initializer_range=0.3,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.5)
    return _save(model, tmp_path_factory.mktemp("biased"))


def _hooked(path: Path) -> HookedModel:
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    return HookedModel(model.eval())


IDS = torch.randint(0, 28, (3, 12), generator=torch.Generator().manual_seed(2))


@torch.no_grad()
def test_transformer_lens_bridge_gives_hierlabs_activations(checkpoint: Path) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(checkpoint), device="cpu")
        bridge.enable_compatibility_mode(disable_warnings=True)
    tl_logits, tl_cache = bridge.run_with_cache(IDS)
    hm = _hooked(checkpoint)
    names = ["hook_embed"] + [
        f"blocks.{layer}.{n}" for layer in range(N_LAYERS)
        for n in ("attn.hook_pattern", "hook_resid_pre", "hook_attn_out", "hook_mlp_out",
                  "hook_resid_post")
    ]
    logits, cache = hm.run_with_cache(IDS, names)
    for name in names:  # the same names, the same numbers
        torch.testing.assert_close(tl_cache[name], cache[name], atol=1e-5, rtol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.max() > 2 * pattern[..., -1, :].mean()  # not trivially uniform
    # compatibility mode centres the unembedding: logits agree up to a constant per position
    diff = tl_logits - logits
    torch.testing.assert_close(diff, diff.mean(-1, keepdim=True).expand_as(diff), atol=1e-5,
                               rtol=0)


def test_old_hook_names_are_refused_with_the_new_name(checkpoint: Path) -> None:
    hm = _hooked(checkpoint)
    for old, new in (("blocks.0.attn.hook_out", "blocks.0.hook_attn_out"),
                     ("blocks.1.mlp.hook_out", "blocks.1.hook_mlp_out"),
                     ("embed.hook_out", "hook_embed")):
        with pytest.raises(ConfigError, match=new):
            hm.run_with_cache(IDS, [old])


def _nnsight_reference_drop(path: Path, samples: torch.Tensor, ks) -> dict:
    """The reference Hydra drop (docs/reference-study.md#hydra-effect) re-done in nnsight:
    zero block L-k's output, read block L through lm_head, gold = the last input token;
    drop = clean - ablated, averaged over samples."""
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
        lm = LanguageModel(str(path), device_map="cpu", dispatch=True)
    inputs = {"input_ids": samples, "attention_mask": torch.ones_like(samples)}
    gold = samples[:, -1]
    rows = torch.arange(len(samples))

    def logit_lens(ablate: int | None, layer: int) -> torch.Tensor:
        with torch.no_grad(), lm.trace(inputs):
            if ablate is not None:
                lm.model.layers[ablate].output[:] = 0
            out = lm.lm_head(lm.model.layers[layer].output).save()
        return out[rows, -1, gold].double()

    return {(k, layer): (logit_lens(None, layer) - logit_lens(layer - k, layer)).mean().item()
            for k in ks for layer in range(k, N_LAYERS)}


@pytest.mark.parametrize("which", ["checkpoint", "biased_checkpoint"])
def test_nnsight_reference_hydra_equals_hierlabs(which: str, request) -> None:
    path = request.getfixturevalue(which)
    ks = (1, 2)
    want = _nnsight_reference_drop(path, IDS, ks)
    rows = hy.hydra_reference(_hooked(path), IDS, offsets=ks, batch_size=2)
    got = {(r["k"], r["layer"]): r["value"] for r in rows}
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    if which == "biased_checkpoint":  # biases: the ablated logits are not 0
        assert any(abs(got[key] - clean) > 1e-2
                   for key, clean in _clean_logit_lens(path, ks).items())


def _clean_logit_lens(path: Path, ks) -> dict:
    hm = _hooked(path)
    names = [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]
    with torch.no_grad():
        _, cache = hm.run_with_cache(IDS, names)
    w_u = hm.lm_head.weight[IDS[:, -1]]
    return {(k, layer): (cache[names[layer]][:, -1] * w_u).sum(-1).mean().item()
            for k in ks for layer in range(k, N_LAYERS)}
