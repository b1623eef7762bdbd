from __future__ import annotations

import pytest
import torch

from hierlab.errors import ConfigError
from hierlab.probes.hooks import HookedModel, HookNotFiredError
from probes_helpers import tiny_model


@pytest.fixture(params=["llama", "olmo", "neox", "gpt2", "olmo2"])
def hm(request) -> HookedModel:
    return HookedModel(tiny_model(request.param))


IDS = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_parity_no_intervention(hm: HookedModel) -> None:
    plain = hm.model(input_ids=IDS, use_cache=False).logits
    with hm.capture(hm.hook_names()) as cache:
        hooked = hm.forward(IDS)
    assert torch.equal(plain, hooked)
    assert set(cache) == set(hm.hook_names())
    assert cache["blocks.0.attn.hook_z"].shape == (3, 12, hm.n_heads, hm.d_head)
    pat = cache["blocks.1.attn.hook_pattern"]
    assert torch.allclose(pat.sum(-1), torch.ones_like(pat.sum(-1)), atol=1e-5)
    assert torch.equal(cache["unembed.hook_out"], plain)
    # z through o_proj (and OLMo-2's post-attention norm) is the attention output
    z = cache["blocks.0.attn.hook_z"].reshape(3, 12, -1)
    post = hm.attn_out(0) if hm.attn_out(0) is not hm.attn(0) else torch.nn.Identity()
    assert torch.allclose(post(hm.o_proj(0)(z)), cache["blocks.0.hook_attn_out"], atol=1e-6)
    # per-head contributions plus the projection's bias sum to the attention output
    heads = sum(hm.head_out_proj(0, cache["blocks.0.attn.hook_z"][:, :, h], h)
                for h in range(hm.n_heads))
    bias = hm.o_bias(0)
    heads = heads + bias if bias is not None else heads
    assert torch.allclose(post(heads), cache["blocks.0.hook_attn_out"], atol=1e-5)


@torch.no_grad()
def test_each_intervention_changes_logits(hm: HookedModel) -> None:
    base = hm.forward(IDS)
    src = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(2))
    _, other = hm.run_with_cache(src, ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z"])
    contexts = [
        hm.ablate(0),
        hm.ablate(0, method="mean"),
        hm.ablate(0, method="resample"),
        hm.ablate(1, head=2),
        hm.ablate(1, head=2, method="mean"),
        hm.ablate(0, component="mlp"),
        hm.ablate(0, component="block", method="resample"),
        hm.overwrite(0, torch.zeros(hm.d_model)),
        hm.add_vector(0, torch.ones(hm.d_model), position=-1),
        hm.patch("blocks.0.hook_resid_post", other["blocks.0.hook_resid_post"], positions=[5]),
        hm.patch("blocks.0.attn.hook_z", other["blocks.0.attn.hook_z"], heads=[1]),
    ]
    for ctx in contexts:
        with ctx:
            out = hm.forward(IDS)
        assert not torch.allclose(out, base), ctx
    assert torch.equal(hm.forward(IDS), base)  # hooks removed


@torch.no_grad()
def test_zero_vector_and_guards(hm: HookedModel) -> None:
    base = hm.forward(IDS)
    with hm.add_vector(1, torch.zeros(hm.d_model)):
        assert torch.equal(hm.forward(IDS), base)
    with pytest.raises(HookNotFiredError), hm.ablate(0):
        pass  # no forward: the hook never fires
    with pytest.raises(ConfigError):
        hm.ablate(0, head=1, component="mlp")
    with pytest.raises(ConfigError):
        hm.edit(("blocks.9.hook_resid_post", lambda a: None)).__enter__()


@torch.no_grad()
def test_eager_switch_for_patterns() -> None:
    hm = HookedModel(tiny_model("llama", attn="sdpa"))
    with pytest.raises(ConfigError), hm.capture(["blocks.0.attn.hook_pattern"]):
        hm.forward(IDS)
    with hm.eager(), hm.capture(["blocks.0.attn.hook_pattern"]) as c:
        hm.forward(IDS)
    assert c["blocks.0.attn.hook_pattern"].shape == (3, 4, 12, 12)
    assert hm.model.config._attn_implementation == "sdpa"


@torch.no_grad()
def test_eager_switch_goes_through_the_public_api(monkeypatch) -> None:
    """transformers' set_attn_implementation, not a write of the private config field (it
    also updates sub-configs and checks the implementation is available)."""
    hm = HookedModel(tiny_model("llama", attn="sdpa"))
    calls: list[str] = []
    real = hm.model.set_attn_implementation
    monkeypatch.setattr(hm.model, "set_attn_implementation",
                        lambda impl, **kw: (calls.append(impl), real(impl, **kw))[1])
    with hm.eager():
        assert hm.model.config._attn_implementation == "eager"
        hm.forward(IDS)
    assert calls == ["eager", "sdpa"]
    eager = HookedModel(tiny_model("llama"))
    with eager.eager():  # already eager: left as it is
        assert eager.model.config._attn_implementation == "eager"


def test_unknown_architecture() -> None:
    with pytest.raises(ConfigError):
        HookedModel(torch.nn.Linear(2, 2))
