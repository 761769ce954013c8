"""Interventions: identities, projections, patching, composition, cleanup, errors, serialization."""
import pytest
import torch

from actlab import Ablate, Add, Clamp, Patch, Replace, Scale, load_interventions, save_interventions

TEXTS = ["the quick brown fox", "jumps over the lazy dog!"]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_add_alpha_zero_is_bitwise_identity(tiny, name):
    m = tiny(name)
    enc = m.tokenize(TEXTS)
    with torch.no_grad():
        ref = m(enc)[0]
        with m.intervene({"blocks.0.resid_post": Add(torch.randn(64), alpha=0.0)}):
            out = m(enc)[0]
    assert torch.equal(ref, out)


def test_ablate_removes_component(tiny):
    m = tiny("tiny-llama")
    d = torch.randn(64)
    with m.intervene({"blocks.0.resid_post": Ablate(d)}):
        a = m.record(TEXTS, sites=["blocks.0.resid_post"])["blocks.0.resid_post"]
    comp = (a @ (d / d.norm())).abs().max().item()
    assert comp < 1e-5
    before = m.record(TEXTS, sites=["blocks.0.resid_post"])["blocks.0.resid_post"]
    assert (before @ (d / d.norm())).abs().max().item() > 1e-2  # it was there to remove
    # subspace ablation
    sub = torch.randn(3, 64)
    with m.intervene({"blocks.1.resid_mid": Ablate(sub)}):
        a = m.record(TEXTS, sites=["blocks.1.resid_mid"])["blocks.1.resid_mid"]
    assert (a @ torch.linalg.pinv(sub)).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_patch_clean_into_corrupted_restores_logits_exactly(tiny, name):
    m = tiny(name)
    clean = m.tokenize(["the cat sat on the mat"])
    corrupt = m.tokenize(["the dog sat on the rug"])
    assert clean["input_ids"].shape == corrupt["input_ids"].shape
    site = "blocks.0.resid_post"
    cache = m.record(clean, sites=[site])
    with torch.no_grad():
        clean_logits = m(clean).logits
        corrupt_logits = m(corrupt).logits
        with m.intervene({site: Patch(cache)}):
            patched = m(corrupt).logits
    assert not torch.equal(clean_logits, corrupt_logits)
    assert torch.equal(patched, clean_logits)


def test_positions_select_only_those_tokens(tiny):
    m = tiny("tiny-llama")
    enc = m.tokenize(TEXTS)  # left padded: positions count from each row's first real token
    site = "blocks.0.resid_post"
    base = m.record(enc, sites=[site])[site]
    v = torch.ones(64)
    with m.intervene({site: Add(v, alpha=1.0, positions=slice(1, 3))}):
        out = m.record(enc, sites=[site])[site]
    changed = (out - base).abs().amax(-1) > 0
    pad = (enc["attention_mask"] == 0).sum(1)
    for b in range(2):
        expect = torch.zeros(out.shape[1], dtype=torch.bool)
        expect[pad[b] + 1: pad[b] + 3] = True
        assert torch.equal(changed[b], expect)
    with m.intervene({site: Clamp(index=5, value=7.0, positions="last")}):
        out = m.record(enc, sites=[site])[site]
    assert (out[:, -1, 5] == 7.0).all() and (out[:, :-1, 5] != 7.0).all()
    last = m.record(enc, sites=[site], positions="last")[site]
    assert torch.equal(last, base[:, -1])


def test_nested_contexts_compose_in_order_and_hooks_removed(tiny, n_hooks):
    m = tiny("tiny-llama")
    site = "blocks.0.resid_post"
    base = m.record(TEXTS, sites=[site])[site]
    v = torch.randn(64)
    h0 = n_hooks(m.module)   # transformers keeps its own capture hooks after an output_attentions=True call
    with m.intervene({site: Scale(factor=2.0)}):
        with m.intervene({site: Add(v)}):
            out = m.record(TEXTS, sites=[site])[site]
    torch.testing.assert_close(out, 2 * base + v)
    assert n_hooks(m.module) == h0
    with pytest.raises(RuntimeError, match="boom"):
        with m.intervene({site: Add(v)}):
            with m.recording([site]):
                raise RuntimeError("boom")
    assert n_hooks(m.module) == h0
    with pytest.raises(ValueError):
        with m.intervene({site: Add(torch.randn(3))}):
            m(m.tokenize(TEXTS))
    assert n_hooks(m.module) == h0


def test_bad_vectors_give_clear_errors(tiny):
    m = tiny("tiny-llama")
    site = "blocks.0.resid_post"
    with pytest.raises(ValueError, match=r"Add.vector has shape \(10,\); expected \(64,\)"):
        with m.intervene({site: Add(torch.randn(10))}):
            m(m.tokenize(TEXTS))
    with pytest.raises(TypeError, match="Add.vector has dtype torch.int64; expected a floating dtype"):
        with m.intervene({site: Add(torch.ones(64, dtype=torch.long))}):
            m(m.tokenize(TEXTS))
    with pytest.raises(ValueError, match="Patch source .* has shape"):
        with m.intervene({site: Patch(torch.zeros(1, 2, 64))}):
            m(m.tokenize(TEXTS))
    with pytest.raises(KeyError, match="closest|Closest"):
        with m.intervene({"blocks.0.resid": Add(torch.randn(64))}):
            pass


def test_replace_and_per_head_clamp(tiny):
    m = tiny("tiny-gpt2")
    mean = torch.randn(64)
    with m.intervene({"blocks.0.mlp_out": Replace(mean)}):
        out = m.record(TEXTS, sites=["blocks.0.mlp_out"])["blocks.0.mlp_out"]
    assert torch.equal(out, mean.expand_as(out))
    # zero head 2 of attn.z: recorded z has zeros there and attn_out changes
    base = m.record(TEXTS, sites=["blocks.1.attn_out"])["blocks.1.attn_out"]
    with m.intervene({"blocks.1.attn.z": Clamp(index=2, value=0.0, dim=2)}):
        r = m.record(TEXTS, sites=["blocks.1.attn.z", "blocks.1.attn_out"])
    assert (r["blocks.1.attn.z"][:, :, 2] == 0).all() and (r["blocks.1.attn.z"][:, :, 1] != 0).any()
    assert not torch.allclose(r["blocks.1.attn_out"], base)


def test_serialization_roundtrip(tiny, tmp_path):
    m = tiny("tiny-llama")
    v, d = torch.randn(64), torch.randn(64)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, 3] = True
    ivs = [("blocks.0.resid_post", Add(v, alpha=2.5, positions=slice(1, None))),
           ("blocks.1.resid_post", Ablate(d, positions="last")),
           ("blocks.1.mlp_out", Scale(factor=0.5, positions=[0, 2])),
           ("blocks.0.mlp_out", Clamp(index=[1, 2], value=3.0, positions=mask))]
    path = save_interventions(tmp_path / "steer.json", ivs, model=m.name)
    loaded = load_interventions(path)
    assert [(s, type(i).__name__) for s, i in loaded] == [(s, type(i).__name__) for s, i in ivs]
    enc = m.tokenize(TEXTS)
    with torch.no_grad():
        with m.intervene(ivs):
            a = m(enc).logits
        with m.intervene(loaded):
            b = m(enc).logits
        plain = m(enc).logits
    assert torch.equal(a, b) and not torch.equal(a, plain)
    assert loaded[0][1].positions == slice(1, None) and loaded[0][1].alpha == 2.5


def test_record_stops_early(tiny):
    m = tiny("tiny-llama")
    calls = []
    h = m.module.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        m.record(TEXTS, sites=["blocks.0.resid_post"])
        assert calls == []
        m.record(TEXTS, sites=["blocks.0.resid_post"], stop_early=False)
        assert calls == [1]
    finally:
        h.remove()


def test_record_dtype_and_grad(tiny):
    m = tiny("tiny-llama")
    a = m.record(TEXTS, sites=["blocks.0.resid_post"], dtype="bf16")["blocks.0.resid_post"]
    assert a.dtype == torch.bfloat16
    g = m.record(TEXTS, sites=["blocks.0.resid_post"], grad=True)["blocks.0.resid_post"]
    assert not g.requires_grad  # params frozen, inputs are ids: nothing to differentiate


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_resid_mid_edit_reaches_the_residual_stream(tiny, name):
    """Pre-LN blocks keep their own residual copy: an edit at resid_mid must reach resid_post, not only the MLP."""
    m = tiny(name)
    v = torch.randn(64)
    sites = ["blocks.0.resid_mid", "blocks.0.mlp_out", "blocks.0.resid_post"]
    base = m.record(TEXTS, sites=sites)
    torch.testing.assert_close(base["blocks.0.resid_post"], base["blocks.0.resid_mid"] + base["blocks.0.mlp_out"])
    with m.intervene({"blocks.0.resid_mid": Add(v, alpha=2.0)}):
        r = m.record(TEXTS, sites=sites)
    torch.testing.assert_close(r["blocks.0.resid_mid"], base["blocks.0.resid_mid"] + 2 * v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r["blocks.0.resid_post"], r["blocks.0.resid_mid"] + r["blocks.0.mlp_out"],
                               atol=1e-5, rtol=1e-5)
    # an edit of resid_pre registered later still enters the sum resid_mid = resid_pre + attn_out
    with m.intervene({"blocks.0.resid_mid": Scale(factor=1.0)}), m.intervene({"blocks.0.resid_pre": Add(v)}):
        r = m.record(TEXTS, sites=["blocks.0.resid_pre", "blocks.0.attn_out", "blocks.0.resid_mid"])
    torch.testing.assert_close(r["blocks.0.resid_mid"], r["blocks.0.resid_pre"] + r["blocks.0.attn_out"])


def test_gradients_reach_per_head_views(tiny):
    m = tiny("tiny-llama")
    enc = m.tokenize(TEXTS)
    kept = {}

    def keep(act, ctx):
        act.retain_grad()
        kept[ctx.site] = act

    emb = m.module.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
    with torch.enable_grad(), m.hooks([("blocks.1.attn.z", keep), ("blocks.1.resid_mid", keep)]):
        out = m.module(inputs_embeds=emb, attention_mask=enc["attention_mask"]).logits
        out[:, -1].sum().backward()
    assert kept["blocks.1.attn.z"].grad is not None and kept["blocks.1.attn.z"].grad.abs().sum() > 0
    assert kept["blocks.1.resid_mid"].grad is not None and kept["blocks.1.resid_mid"].grad.abs().sum() > 0


@pytest.mark.parametrize("make", [
    lambda: Add(torch.tensor([1.0, float("nan")])),
    lambda: Add(torch.ones(2), alpha=float("inf")),
    lambda: Ablate(torch.tensor([float("inf"), 0.0])),
    lambda: Replace(torch.full((2,), float("nan"))),
    lambda: Scale(float("nan")),
])
def test_nonfinite_parameters_are_refused_at_construction(make):
    with pytest.raises(ValueError, match="NaN/Inf|finite"):
        make()
