"""Fused-projection sites: GPT-2's ``c_attn = [q | k | v]`` and GPT-NeoX's per-head ``[head, 3, d_head]``
``query_key_value``, viewed as ``attn.q/k/v``; an edit of one part changes only that part. GPT-NeoX sites equal
Hugging Face's hidden states and its own attention computation; its parallel residual has no ``resid_mid``."""
import pytest
import torch

from actlab import Scale, load_model, wrap

TEXTS = ["hello world, this is a test", "short one"]


def hf_kwargs(m, enc):
    """The inputs the Model itself passes (position ids that follow the attention mask, where it adds them)."""
    return m.forward_kwargs(enc) if hasattr(m, "forward_kwargs") else enc
FUSED = {"tiny-gpt2": "transformer.h.{i}.attn.c_attn", "tiny-neox": "gpt_neox.layers.{i}.attention.query_key_value"}


def fused_parts(name, t, h=4):
    """[b, p, 3*d] -> (q, k, v) each [b, p, h, d_head], the module's own layout."""
    if name == "tiny-gpt2":
        return tuple(x.view(*x.shape[:-1], h, -1) for x in t.split(t.shape[-1] // 3, dim=-1))
    return t.view(*t.shape[:-1], h, -1).chunk(3, dim=-1)  # GPT-NeoX: per head [q_h | k_h | v_h]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neox"])
@pytest.mark.parametrize("part", [0, 1, 2])
def test_split_sites_are_parts_of_the_fused_output_and_edit_only_their_part(tiny, name, part):
    m = tiny(name)
    enc = m.tokenize(TEXTS)
    fused = "module:" + FUSED[name].format(i=1)
    kinds = ["attn.q", "attn.k", "attn.v"]
    sites = [f"blocks.1.{k}" for k in kinds]
    base = m.record(enc, sites=sites + [fused, "logits"])
    for j, piece in enumerate(fused_parts(name, base[fused])):
        assert torch.equal(base[sites[j]], piece), sites[j]
    with m.intervene({sites[part]: Scale(factor=0.0)}):
        edited = m.record(enc, sites=[fused, "logits"] + sites)
    got = fused_parts(name, edited[fused])
    for j in range(3):
        if j == part:
            assert float(got[j].abs().max()) == 0.0
        else:
            assert torch.equal(got[j], fused_parts(name, base[fused])[j]), (part, j)
    assert not torch.allclose(edited["logits"], base["logits"])
    # an edit of one head of one part: only that head of that part moves
    def one_head(a, ctx):
        a = a.clone()
        a[:, :, 3] += 1.0
        return a
    with m.intervene({sites[part]: one_head}):
        got = fused_parts(name, m.record(enc, sites=[fused])[fused])
    ref = fused_parts(name, base[fused])
    for j in range(3):
        diff = got[j] - ref[j]
        want = torch.zeros_like(diff)
        if j == part:
            want[:, :, 3] = 1.0
        torch.testing.assert_close(diff, want)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neox"])
def test_split_site_gradients_are_the_fused_gradients_part(tiny, name):
    m = tiny(name)
    enc = m.tokenize(["abc def"])
    fused = "module:" + FUSED[name].format(i=0)

    def grads(sites):
        kept = {}

        def keep(a, ctx):
            a.retain_grad()
            kept[ctx.site] = a
        emb = m.module.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
        with torch.enable_grad(), m.intervene({s: keep for s in sites}):
            m.module(inputs_embeds=emb, attention_mask=enc["attention_mask"]).logits[0, -1, 5].backward()
        return {s: kept[s].grad for s in sites}

    whole = fused_parts(name, grads([fused])[fused])
    parts = grads(["blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v"])
    for j, kind in enumerate(("q", "k", "v")):
        g = parts[f"blocks.0.attn.{kind}"]
        assert g.abs().sum() > 0, kind
        torch.testing.assert_close(g, whole[j])


def test_neox_resid_sites_equal_hf_hidden_states():
    m = load_model("tiny-neox")  # a private copy: HF's output_hidden_states leaves its capture hooks on the module
    enc = m.tokenize(TEXTS)
    sites = [f"blocks.{i}.{k}" for i in range(m.n_layers) for k in ("resid_pre", "resid_post")] + ["final_norm"]
    acts = m.record(enc, sites=sites)
    with torch.no_grad():
        hs = m.module(**hf_kwargs(m, enc), output_hidden_states=True).hidden_states
    assert len(hs) == m.n_layers + 1
    for i in range(m.n_layers):
        assert torch.equal(acts[f"blocks.{i}.resid_pre"], hs[i]), i
    assert torch.equal(acts["blocks.0.resid_post"], hs[1])
    assert torch.equal(acts["final_norm"], hs[-1])  # HF's last hidden state is after the final LayerNorm
    torch.testing.assert_close(m.module.gpt_neox.final_layer_norm(acts["blocks.1.resid_post"]), hs[-1])


def test_neox_qkv_rebuild_pattern_and_z_with_rotary(tiny):
    """q, k (before rotary), v from the split sites + NeoX's own partial rotary -> the module's pattern and z."""
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    m = tiny("tiny-neox")
    enc = m.tokenize(["abcdefgh"])
    a = m.record(enc, sites=[f"blocks.1.attn.{k}" for k in ("q", "k", "v", "pattern", "z")] + ["blocks.1.attn_out"])
    q, k, v = (a[f"blocks.1.attn.{x}"].transpose(1, 2) for x in ("q", "k", "v"))  # [b, h, p, d]
    n = q.shape[2]
    cos, sin = m.module.gpt_neox.rotary_emb(q, torch.arange(n)[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    pattern = scores.softmax(-1)
    torch.testing.assert_close(pattern.transpose(1, 2), a["blocks.1.attn.pattern"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((pattern @ v).transpose(1, 2), a["blocks.1.attn.z"], rtol=1e-5, atol=1e-5)


def test_neox_parallel_residual_has_no_resid_mid(tiny):
    m = tiny("tiny-neox")
    assert m.config.use_parallel_residual and "blocks.0.resid_mid" not in m.sites
    with pytest.raises(KeyError, match="gpt_neox.*parallel residual"):
        m.record(["abc"], sites=["blocks.0.resid_mid"])
    # what the block computes instead: resid_post = resid_pre + attn_out + mlp(ln2(resid_pre))
    a = m.record(["abc def"], sites=["blocks.0.resid_pre", "blocks.0.attn_out", "blocks.0.mlp_in", "blocks.0.mlp_out",
                                     "blocks.0.resid_post"])
    blk = m.adapter.block(0)
    torch.testing.assert_close(a["blocks.0.mlp_in"], blk.post_attention_layernorm(a["blocks.0.resid_pre"]))
    torch.testing.assert_close(a["blocks.0.resid_post"],
                               a["blocks.0.resid_pre"] + a["blocks.0.attn_out"] + a["blocks.0.mlp_out"])


def test_neox_sequential_residual_has_resid_mid():
    """use_parallel_residual=False: resid_mid = resid_pre + attn_out is what the MLP's norm reads, and an edit of it
    reaches the residual stream (resid_post moves by the edit plus the MLP's response)."""
    from transformers import AutoModelForCausalLM

    from actlab.models.tiny import build_tiny, tiny_config

    cfg = tiny_config("tiny-neox")
    cfg.use_parallel_residual = False
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    module = AutoModelForCausalLM.from_config(cfg).eval().requires_grad_(False)
    m = wrap(module, build_tiny("tiny-neox")[1], name="neox-seq")
    assert m.family == "gpt_neox" and "blocks.0.resid_mid" in m.sites
    sites = [f"blocks.0.{k}" for k in ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")]
    a = m.record(["abc def"], sites=sites)
    assert torch.equal(a["blocks.0.resid_mid"], a["blocks.0.attn_out"] + a["blocks.0.resid_pre"])
    torch.testing.assert_close(a["blocks.0.mlp_in"], m.adapter.block(0).post_attention_layernorm(a["blocks.0.resid_mid"]))
    with m.intervene({"blocks.0.resid_mid": Scale(factor=0.0)}):
        b = m.record(["abc def"], sites=sites)
    ln2 = m.adapter.block(0).post_attention_layernorm
    torch.testing.assert_close(b["blocks.0.mlp_in"], ln2.bias.expand_as(b["blocks.0.mlp_in"]))  # LayerNorm(0)
    torch.testing.assert_close(b["blocks.0.resid_post"], b["blocks.0.mlp_out"])  # the stream itself was zeroed
