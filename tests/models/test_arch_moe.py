"""Qwen-MoE and DeepSeek-V3 adapters on tiny configs: the site table (DeepSeek: dense block 0; a router site in block 1; MLA
has no q/k/v sites), the adapter's routing rule equals the router module's own output, a router-site edit is
rebuilt the way the model routes, and the residual writers cover routed and shared experts. A dense Qwen-MoE block
(mlp_only_layers) goes through the same Llama paths as the dense DeepSeek block tested here."""
import pytest
import torch

from actlab.models.tiny import tiny_model

NAMES = ["tiny-qwen-moe", "tiny-deepseek-v3"]


@pytest.mark.parametrize("name", NAMES)
def test_sites_and_routing_rule(name):
    m = tiny_model(name)
    if name == "tiny-deepseek-v3":  # first_k_dense_replace=1: a dense first block
        assert "blocks.0.mlp_act" in m.sites and "blocks.0.moe.router" not in m.sites
        assert m.adapter.W_out(0).shape == (128, 64)
    assert "blocks.1.moe.router" in m.sites and "blocks.1.mlp_act" not in m.sites
    gate = m.module.model.layers[1].mlp.gate
    got = []
    h = gate.register_forward_hook(lambda mod, a, out: got.append(out))
    try:
        with torch.no_grad():
            m(["hello there", "abc"])
    finally:
        h.remove()
    logits, w, idx = got[0]
    w2, idx2 = m.adapter.route(1, logits)
    assert torch.equal(idx2, idx) and torch.allclose(w2, w, atol=1e-6)   # the adapter's rule is the router's own
    with torch.no_grad(), m.intervene({"blocks.1.moe.router": lambda a, c: a.clone()}):  # an identity edit
        edited = m(["hello there", "abc"]).logits
    with torch.no_grad():
        plain = m(["hello there", "abc"]).logits
    assert torch.allclose(edited, plain, atol=1e-5)                        # the rebuild reproduces the routing
    labels = [lab for lab, _, _ in m.adapter.residual_writers()]
    shared = "shared_expert" if name == "tiny-qwen-moe" else "shared_experts"
    assert f"blocks.1.mlp.{shared}" in labels and "blocks.1.mlp.experts.7" in labels
    assert m.adapter.W_out_expert(1, 3).shape == (32, 64)
    with pytest.raises(ValueError, match="no single W_out"):
        m.adapter.W_out(1)


def test_deepseek_mla_sites_are_explained():
    m = tiny_model("tiny-deepseek-v3")
    with pytest.raises(KeyError, match="latent attention"):
        m.check_sites(["blocks.1.attn.q"])
    assert m.record(["hi"], sites=["blocks.1.attn.z"])["blocks.1.attn.z"].shape[-2] == 4


@pytest.mark.parametrize("name", NAMES)
def test_expert_views_are_the_fused_weights(name):
    m = tiny_model(name)
    ex = m.module.model.layers[1].mlp.experts
    d = m.adapter.d_expert
    assert m.adapter.d_mlp == 128 and d == 32  # d_mlp: the dense MLP (what mlp_act holds); d_expert: one expert
    assert torch.equal(m.adapter.W_gate_expert(1, 2), ex.gate_up_proj[2, :d].T)
    assert torch.equal(m.adapter.W_in_expert(1, 2), ex.gate_up_proj[2, d:].T)
    assert m.adapter.W_in_expert(1, 2).shape == (64, 32)


def test_qwen_dense_layers():
    """mlp_only_layers keeps a dense MLP: that block has mlp_act and the Llama weight views, no router."""
    from transformers import AutoModelForCausalLM

    from actlab.models import Model
    from actlab.models.tiny import byte_tokenizer, tiny_config

    cfg = tiny_config("tiny-qwen-moe")
    cfg.mlp_only_layers = [0]
    m = Model(AutoModelForCausalLM.from_config(cfg).eval(), byte_tokenizer(), name="qwen-dense0")
    assert "blocks.0.mlp_act" in m.sites and "blocks.0.moe.router" not in m.sites and "blocks.1.moe.router" in m.sites
    assert m.adapter.W_out(0).shape == (128, 64) and ("blocks.0.mlp_out" in [x for x, _, _ in
                                                                            m.adapter.residual_writers()])
    with pytest.raises(ValueError, match="dense MLP"):
        m.adapter.W_router(0)
