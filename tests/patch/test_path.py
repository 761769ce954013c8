"""Path patching on a planted 2-layer attention-only model, attention overrides, circuit overlap."""
import pytest
import torch

import actlab
from actlab.patch.path import (attention_override, circuit_overlap, one_hot_pattern, path_patch, path_patch_sweep,
                               top_components)

D, DH, V, P = 16, 4, 12, 8


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, DH, bias=False) for _ in range(3))
        self.o = torch.nn.Linear(DH, D, bias=False)

    def forward(self, x):
        s = self.q(x) @ self.k(x).transpose(1, 2) / DH ** 0.5
        s = s.masked_fill(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1), float("-inf"))
        return self.o(s.softmax(-1) @ self.v(x))


class Toy(torch.nn.Module):
    """Attention-only, 2 layers x 2 heads. l0.0 writes only dims 8-11, read only by the *query* of l1.0;
    the unembedding ignores dims 8-15: the sender's whole effect runs through l1.0's query."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        r = lambda *s: 0.4 * torch.randn(*s, generator=g)  # noqa: E731
        self.emb, self.pos = torch.nn.Embedding(V, D), torch.nn.Embedding(P, D)
        self.l0, self.l1 = torch.nn.ModuleList([Head(), Head()]), torch.nn.ModuleList([Head(), Head()])
        self.unembed = torch.nn.Linear(D, V, bias=False)
        tok, mid, pos = slice(0, 8), slice(8, 12), slice(12, 16)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.emb.weight[:, tok] = r(V, 8)
            self.pos.weight[:, pos] = r(P, 4) * 2
            for h in (*self.l0, *self.l1):
                h.k.weight[:, tok], h.k.weight[:, pos] = r(DH, 8), r(DH, 4)
                h.v.weight[:, tok] = r(DH, 8)
                h.q.weight[:, pos] = r(DH, 4)
            self.l0[0].o.weight[mid] = r(4, DH) * 2   # sender writes the private subspace only
            self.l0[0].q.weight[:, tok] = r(DH, 8) * 2
            self.l0[1].o.weight[tok] = r(8, DH)
            self.l1[0].q.weight[:, mid] = r(DH, 4) * 3  # the mover's query reads it
            self.l1[0].o.weight[tok] = r(8, DH) * 2
            self.l1[1].o.weight[tok] = r(8, DH)
            self.unembed.weight[:, tok] = r(V, 8)

    def forward(self, ids):
        x = self.emb(ids) + self.pos(torch.arange(ids.shape[1]))
        x = x + sum(h(x) for h in self.l0)
        x = x + sum(h(x) for h in self.l1)
        return self.unembed(x)


FREEZE = ["module:l0.0", "module:l0.1", "module:l1.0", "module:l1.1"]


def test_planted_path_recovered():
    m = actlab.wrap(Toy())
    base, source = torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([[7, 8, 9, 10, 11, 6]])
    score = lambda out: out[:, -1, 0] - out[:, -1, 1]  # noqa: E731
    with torch.no_grad():
        src = m.record(source, ["module:l0.0"])["module:l0.0"]
        with m.intervene({"module:l0.0": actlab.Replace(value=src)}):
            total = float(score(m(base)))
    b = float(score(m(base)))
    assert abs(total - b) > 0.05  # the sender matters
    via_q = path_patch(m, base, source, "module:l0.0", ["module:l1.0.q"], score, freeze=FREEZE)
    assert via_q.patched == pytest.approx(total, abs=1e-5)
    direct = path_patch(m, base, source, "module:l0.0", ["module:unembed:in"], score, freeze=FREEZE)
    assert direct.patched == pytest.approx(b, abs=1e-5)
    via_k = path_patch(m, base, source, "module:l0.0", ["module:l1.0.k", "module:l1.0.v", "module:l1.1.q"], score,
                       freeze=FREEZE)
    assert via_k.patched == pytest.approx(b, abs=1e-5)
    sweep = path_patch_sweep(m, base, source, ["module:l0.0", "module:l0.1"], ["module:l1.0.q"], score, freeze=FREEZE)
    assert sweep.dims == ("sender",) and sweep.values[0].item() == pytest.approx(total, abs=1e-5)
    assert sweep.values[1].item() == pytest.approx(b, abs=1e-5)  # l0.1 writes nothing l1.0.q reads
    with pytest.raises(ValueError, match="is also frozen"):
        path_patch(m, base, source, "module:l0.0", ["module:l1.0"], score, freeze=FREEZE)


def test_path_patch_heads_on_tiny_gpt2(tiny):
    m = tiny("tiny-gpt2")
    ids = [m.tokenizer(c)["input_ids"][-1] for c in "xy"]
    score = lambda out: out.logits[:, -1, ids[0]] - out.logits[:, -1, ids[1]]  # noqa: E731
    base, source = "the cat sat on", "the bat sat on"
    # sender head -> the final residual (direct path), vs the sender -> everything downstream
    r = path_patch(m, base, source, ("blocks.0.attn.z", 1), ["blocks.1.resid_post"], score)
    # with only the heads frozen, layer 1's input holds the sender's effect and MLP 0's response to it: all paths
    r_all = path_patch(m, base, source, "blocks.0.attn.z#1", ["blocks.1.resid_pre"], score,
                       freeze=["blocks.0.attn.z", "blocks.1.attn.z"])
    # with MLP 0 frozen too (the default), the sender -> MLP 0 path is excluded: a different number
    r_no_mlp = path_patch(m, base, source, "blocks.0.attn.z#1", ["blocks.1.resid_pre"], score)
    with torch.no_grad():
        src = m.record(source, ["blocks.0.attn.z"])["blocks.0.attn.z"]
        def f(act, ctx):
            out = act.clone()
            out[:, :, 1] = src[:, :, 1]
            return out
        with m.intervene({"blocks.0.attn.z": actlab.Fn(fn=f)}):
            total = float(score(m(base)))
    assert r_all.patched == pytest.approx(total, abs=1e-4)  # layer-1 input carries every downstream path
    assert r.patched != pytest.approx(total, abs=1e-6)
    assert r_no_mlp.patched != pytest.approx(total, abs=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_attention_override(tiny, name):
    m = tiny(name)
    enc = m.tokenize("hello there")
    w = enc["input_ids"].shape[1]
    vsite = "blocks.0.attn.v"  # [b, p, kv_heads, d_head]
    with torch.no_grad():
        out = m(enc, output_attentions=True)
        own = out.attentions[0][0]  # [H, dest, src]: the model's own eager pattern
        # forcing each head to its own pattern reproduces the forward exactly (checks V and the head mapping)
        ivs = [iv for h in range(4) for iv in attention_override(m, 0, h, own[h])]
        with m.intervene(ivs):
            same = m(enc).logits
        torch.testing.assert_close(same, out.logits, atol=1e-5, rtol=1e-5)
        # one-hot to position 2 makes head 3's output equal v_2 (then W_O maps it: output = v_p W_O)
        rec_sites = ["blocks.0.attn.z", vsite]
        with m.intervene(attention_override(m, 0, 3, one_hot_pattern(w, 2))), m.recording(rec_sites) as rec:
            m(enc)
        v = rec[vsite]
        v = v[:, :, 1] if name == "tiny-llama" else v[:, :, 3]  # llama: 4 query heads share 2 KV heads
        z = rec["blocks.0.attn.z"][0, :, 3]
        torch.testing.assert_close(z, v[0, 2].expand(w, -1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expected \\[.*dest x src"):
        with m.intervene(attention_override(m, 0, 0, one_hot_pattern(w + 1, 0))):
            m(enc)


def test_overlap_and_top_components():
    a = {"L1H2", "L3H0", "L4H1"}
    assert circuit_overlap(a, set(a)) == 1.0
    assert circuit_overlap(a, {"L0H0"}) == 0.0
    assert circuit_overlap(a, {"L1H2", "L9H9"}, mode="of_a") == pytest.approx(1 / 3)
    from actlab.patch import PatchResult
    r = PatchResult(torch.tensor([[0.0, 0.9], [0.1, 0.2]]), ("site", "head"), {"site": ["a", "b"], "head": ["0", "1"]},
                    1.0, 0.0, "ld")
    assert top_components(r, 0.25) == {"a|1"}
    with pytest.raises(ValueError, match="non-empty"):
        circuit_overlap(set(), a)


def test_flat_site_head_is_its_channel_slice(tiny):
    """A head of a flat site (the o_proj input, heads concatenated) is the slice head * d_head : (head + 1) * d_head:
    the same path patch as that head of the per-head attn.z site (d_head from model.adapter)."""
    m = tiny("tiny-llama")
    ids = [m.tokenizer(c)["input_ids"][1] for c in "xy"]
    from actlab.patch import LogitDiff, lm_score

    score = lm_score(LogitDiff(*ids))
    base, source = m.tokenize("the cat sat on"), m.tokenize("the bat sat on")
    recv = ["blocks.1.resid_post"]
    for h in (1, 3):
        a = path_patch(m, base, source, f"blocks.0.attn.z#{h}", recv, score, freeze=[])
        b = path_patch(m, base, source, f"module:model.layers.0.self_attn.o_proj:in#{h}", recv, score, freeze=[])
        assert abs(a.patched - a.base) > 1e-5 and b.patched == pytest.approx(a.patched, abs=1e-6)
