"""Recorded sites equal Hugging Face's own tensors and hand-computed references."""
import math

import pytest
import torch

from actlab import load_model, wrap

FAMILIES = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-mixtral", "tiny-neox"]
TEXTS = ["hello world, this is a test", "short one"]


def hf_kwargs(m, enc):
    """The inputs the Model itself passes (position ids that follow the attention mask, where it adds them)."""
    return m.forward_kwargs(enc) if hasattr(m, "forward_kwargs") else enc


@pytest.mark.parametrize("name", FAMILIES)
def test_resid_post_equals_hf_hidden_states(name):
    m = load_model(name)  # a private copy: HF's output_hidden_states leaves its capture hooks on the module
    enc = m.tokenize(TEXTS)
    sites = [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
    acts = m.record(enc, sites=sites + (["final_norm"] if "final_norm" in m.sites else []))
    with torch.no_grad():
        hs = m.module(**hf_kwargs(m, enc), output_hidden_states=True).hidden_states
    for i in range(m.n_layers - 1):
        assert torch.equal(acts[sites[i]], hs[i + 1]), f"{name} layer {i}"
    last = acts["final_norm"] if "final_norm" in acts else acts[sites[-1]]  # HF applies the final norm last
    assert torch.equal(last, hs[-1])


@pytest.mark.parametrize("name", FAMILIES)
def test_every_site_has_batch_pos_shape_and_embed_first(tiny, name):
    m = tiny(name)
    enc = m.tokenize(TEXTS)
    acts = m.record(enc, sites=m.sites)
    b, p = enc["input_ids"].shape
    for s, t in acts.items():
        assert t.shape[:2] == (b, p), s
    assert m.sites[0] == "embed"
    assert torch.equal(acts["blocks.0.resid_pre"], acts["embed"]) == (name != "tiny-gpt2")  # GPT-2 adds wpe


def test_gpt2_attn_z_and_mlp_act_by_hand(tiny):
    m = tiny("tiny-gpt2")
    enc = m.tokenize(["abcdefgh"])
    acts = m.record(enc, sites=["blocks.1.resid_pre", "blocks.1.attn.z", "blocks.1.mlp_in", "blocks.1.mlp_act"])
    blk = m.module.transformer.h[1]
    x = blk.ln_1(acts["blocks.1.resid_pre"])
    q, k, v = blk.attn.c_attn(x).split(64, dim=-1)
    h, dh = 4, 16
    q, k, v = (t.view(1, -1, h, dh).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    n = scores.shape[-1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    z = (scores.softmax(-1) @ v).transpose(1, 2)
    assert acts["blocks.1.attn.z"].shape == (1, n, h, dh)
    torch.testing.assert_close(acts["blocks.1.attn.z"], z, atol=1e-5, rtol=1e-5)
    act = blk.mlp.act(blk.mlp.c_fc(acts["blocks.1.mlp_in"]))
    torch.testing.assert_close(acts["blocks.1.mlp_act"], act, atol=1e-6, rtol=1e-6)


def test_llama_attn_z_and_mlp_act_by_hand(tiny):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    m = tiny("tiny-llama")
    enc = m.tokenize(["abcdefgh"])
    acts = m.record(enc, sites=["blocks.0.resid_pre", "blocks.0.attn.z", "blocks.0.attn_out", "blocks.0.mlp_in",
                                "blocks.0.mlp_act"])
    layer = m.module.model.layers[0]
    att = layer.self_attn
    x = layer.input_layernorm(acts["blocks.0.resid_pre"])
    n = x.shape[1]
    q = att.q_proj(x).view(1, n, 4, 16).transpose(1, 2)
    k = att.k_proj(x).view(1, n, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
    v = att.v_proj(x).view(1, n, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
    cos, sin = m.module.model.rotary_emb(x, torch.arange(n)[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = q @ k.transpose(-1, -2) / 4.0
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    z = (scores.softmax(-1) @ v).transpose(1, 2)
    torch.testing.assert_close(acts["blocks.0.attn.z"], z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att.o_proj(acts["blocks.0.attn.z"].flatten(2)), acts["blocks.0.attn_out"])
    mlp = layer.mlp
    xin = acts["blocks.0.mlp_in"]
    torch.testing.assert_close(acts["blocks.0.mlp_act"], torch.nn.functional.silu(mlp.gate_proj(xin)) * mlp.up_proj(xin))


def test_bert_mlp_act_by_hand(tiny):
    m = tiny("tiny-bert")
    acts = m.record(["abc def"], sites=["blocks.1.mlp_in", "blocks.1.mlp_act", "blocks.1.resid_mid"])
    inter = m.module.encoder.layer[1].intermediate
    torch.testing.assert_close(acts["blocks.1.mlp_act"], inter.intermediate_act_fn(inter.dense(acts["blocks.1.mlp_in"])))
    assert torch.equal(acts["blocks.1.mlp_in"], acts["blocks.1.resid_mid"])


def test_mixtral_router_logits_recorded_and_editable(tiny):
    from actlab import Clamp

    m = tiny("tiny-mixtral")
    enc = m.tokenize(["routing matters here"])
    acts = m.record(enc, sites=["blocks.0.mlp_in", "blocks.0.moe.router", "blocks.0.mlp_out"])
    gate = m.module.model.layers[0].mlp.gate
    torch.testing.assert_close(acts["blocks.0.moe.router"], acts["blocks.0.mlp_in"] @ gate.weight.T)
    top = acts["blocks.0.moe.router"].argmax(-1)
    # force every token away from its favourite expert: the MoE output must change
    with m.intervene({"blocks.0.moe.router": lambda a, ctx: a.scatter(-1, top[..., None], -1e9)}):
        edited = m.record(enc, sites=["blocks.0.mlp_out", "blocks.0.moe.router"])
    assert not torch.allclose(edited["blocks.0.mlp_out"], acts["blocks.0.mlp_out"])
    assert (edited["blocks.0.moe.router"].argmax(-1) != top).all()
    # clamping every expert's logit to the same value routes uniformly -> deterministic top-k of ties
    with m.intervene({"blocks.0.moe.router": Clamp(index=[0, 1, 2, 3], value=0.0)}):
        flat = m.record(enc, sites=["blocks.0.mlp_out"])["blocks.0.mlp_out"]
    assert torch.isfinite(flat).all()


def test_cnn_module_sites():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))
    m = wrap(net, name="cnn")
    x = torch.randn(2, 3, 8, 8)
    acts = m.record(x, sites=["module:1", "module:3:in"])
    ref = torch.relu(net[0](x))
    assert torch.equal(acts["module:1"], ref)
    assert torch.equal(acts["module:3:in"], ref.flatten(1))
    from actlab import Scale

    with m.intervene({"module:1": Scale(factor=0.0)}):
        out = m(x)
    torch.testing.assert_close(out, net[3].bias.expand(2, 4))
    with pytest.raises(KeyError, match="closest module paths"):
        m.record(x, sites=["module:7"])


def test_unknown_site_lists_close_names(tiny):
    m = tiny("tiny-llama")
    with pytest.raises(KeyError) as e:
        m.record(["x"], sites=["blocks.1.resid_pots"])
    assert "blocks.1.resid_post" in str(e.value)
    with pytest.raises(KeyError) as e:
        m.record(["x"], sites=["blocks.9.resid_post"])
    assert "blocks.1.resid_post" in str(e.value) and "2 blocks" in str(e.value)


def test_unknown_model_lists_bundled(tmp_path):
    with pytest.raises(ValueError) as e:
        load_model(str(tmp_path / "nope"))
    msg = str(e.value)
    assert "smollm2-135m-instruct" in msg and "tiny-gpt2" in msg and "no such file" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without config.json"):
        load_model(str(tmp_path / "empty"))


def test_local_hf_folder_roundtrip(tiny, tmp_path):
    m = tiny("tiny-gpt2")
    m.module.save_pretrained(tmp_path / "m")
    m.tokenizer.save_pretrained(tmp_path / "m")
    m2 = load_model(str(tmp_path / "m"))
    assert m2.family == "gpt2" and m2.revision.startswith("config-")
    a = m.record(["abc"], sites=["blocks.1.resid_post"])["blocks.1.resid_post"]
    b = m2.record(["abc"], sites=["blocks.1.resid_post"])["blocks.1.resid_post"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # eager vs sdpa attention
