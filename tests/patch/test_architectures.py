"""Every public patching / attribution entry point on every tiny architecture (issue 13), each with a property that
breaks if the method is wrong there; a left-padded pair gives the numbers it gets alone (issue 14 item 1)."""
import pytest
import torch

from actlab.attribute import contrastive_target, gradient_attribution, integrated_gradients
from actlab.models.tiny import TINY
from actlab.patch import (LogitDiff, activation_patch, attention_override, attribution_patch, lm_score, path_patch,
                          subspace_effect)

CAUSAL = [n for n in TINY if n != "tiny-bert"]
CLEAN, CORRUPT = "the cat sat on", "the bat sat on"
LONG_CLEAN, LONG_CORRUPT = "a much longer prompt about the cat", "a much longer prompt about the bat"


def _ids(m):
    return m.tokenizer("x")["input_ids"][1], m.tokenizer("y")["input_ids"][1]  # <bos> x


@pytest.mark.parametrize("name", CAUSAL)
def test_grid_patching(tiny, name):
    m = tiny(name)
    met = LogitDiff(*_ids(m))
    sites = ["blocks.0.resid_pre", "blocks.1.attn_out", "blocks.1.resid_post"]
    r = activation_patch(m, CLEAN, CORRUPT, met, sites)
    assert abs(r.clean - r.corrupt) > 1e-4
    # the last column of a whole residual stream carries everything the last logits read
    assert r.values[2, -1].item() == pytest.approx(r.clean, abs=1e-4)
    both = activation_patch(m, [CLEAN, LONG_CLEAN], [CORRUPT, LONG_CORRUPT], met, sites)
    n = r.values.shape[1]
    torch.testing.assert_close(both.per_pair[:, -n:, 0], r.per_pair[..., 0], atol=1e-4, rtol=1e-4)
    a = attribution_patch(m, CLEAN, CORRUPT, met, sites)
    a2 = attribution_patch(m, [CLEAN, LONG_CLEAN], [CORRUPT, LONG_CORRUPT], met, sites)
    torch.testing.assert_close(a2.per_pair[:, -n:, 0], a.per_pair[..., 0], atol=1e-4, rtol=1e-4)
    # first order is exact for the last column of the final residual stream only up to the head's curvature,
    # but at layer 0 the only cell that moves anything is the corrupted token's column (5) in both methods
    assert int(a.normalized[0].abs().argmax()) == 5 and int(r.normalized[0].abs().argmax()) == 5


@pytest.mark.parametrize("name", CAUSAL)
def test_path_subspace_and_attention_override(tiny, name):
    m = tiny(name)
    met = LogitDiff(*_ids(m))
    score = lm_score(met)
    enc_c, enc_k = m.tokenize(CLEAN), m.tokenize(CORRUPT)
    # nothing frozen and the final residual stream as receiver: the path patch is the plain sender patch
    eff = path_patch(m, enc_c, enc_k, "blocks.0.attn.z#1", ["blocks.1.resid_post"], score, freeze=[])
    src = m.record(enc_k, ["blocks.0.attn.z"])["blocks.0.attn.z"]

    def put(act, ctx):
        out = act.clone()
        out[:, :, 1] = src[:, :, 1]
        return out
    import actlab

    with torch.no_grad(), m.intervene({"blocks.0.attn.z": actlab.Fn(fn=put)}):
        direct = float(score(m(enc_c)))
    assert eff.patched == pytest.approx(direct, abs=1e-5)
    # a 1-D subspace along the clean-corrupt difference at the last position = the whole-site patch there
    site = "blocks.0.resid_post"
    acts = m.record([CLEAN, CORRUPT], [site])[site]
    v = acts[0, -1] - acts[1, -1]
    sub = subspace_effect(m, enc_k, enc_c, site, v, score, positions="last")
    full = subspace_effect(m, enc_k, enc_c, site, None, score, positions="last")
    assert abs(full.normalized) > 1e-3 and sub.normalized == pytest.approx(full.normalized, abs=1e-4)
    # attention override with each head's own eager pattern reproduces the logits
    with torch.no_grad():
        out = m(enc_c, output_attentions=True)
        own = out.attentions[1][0]
        with m.intervene([iv for h in range(own.shape[0]) for iv in attention_override(m, 1, h, own[h])]):
            same = m(enc_c).logits
    torch.testing.assert_close(same, out.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_attribution_entry_points(tiny, name):
    m = tiny(name)
    target = contrastive_target(*_ids(m))
    a = integrated_gradients(m, CLEAN, target, baseline="eos", steps=16)
    c = a.completeness
    assert c["delta"] == pytest.approx(float(a.attr.double().sum()) - (a.f_x - a.f_baseline), abs=1e-6)
    if name == "tiny-mixtral":
        # top-k routing switches experts along the path (f is discontinuous there): the error plateaus at ~4%
        # whatever the steps (measured 0.039 at 16, 64 and 256); it is reported, not hidden (docs/patch.md)
        assert 0.005 < c["relative_error"] < 0.1, c
    else:
        assert c["relative_error"] < 0.02, c
    g = gradient_attribution(m, CLEAN, target)
    assert g.attr.shape == a.attr.shape and bool(torch.isfinite(g.attr).all())
    # gradient x input on the embeddings is the first-order term of IG from a zero baseline at alpha = 1
    from actlab.attribute.common import InputSpace, grads

    sp = InputSpace(m, CLEAN)
    gr, _ = grads(sp, sp.x0, target)
    torch.testing.assert_close(g.attr, (gr * sp.x0)[0])


def test_bert_patching_refuses_and_generic_scores_work(tiny):
    m = tiny("tiny-bert")
    met = LogitDiff(5, 6)
    with pytest.raises(ValueError, match=r"tiny-bert \(bert\) gives no .*logits \(not a causal LM\)"):
        activation_patch(m, CLEAN, CORRUPT, met, "blocks.0.resid_pre")
    with pytest.raises(ValueError, match=r"tiny-bert \(bert\) gives no .*logits"):
        attribution_patch(m, CLEAN, CORRUPT, met, "blocks.0.resid_pre")

    def cls0(out):  # a score of one's own: the [CLS] state's first channel
        return out.last_hidden_state[:, 0, 0]
    enc_c, enc_k = m.tokenize(CLEAN), m.tokenize(CORRUPT)
    eff = path_patch(m, enc_c, enc_k, "blocks.0.attn.z#1", ["blocks.1.resid_post"], cls0, freeze=[])
    assert eff.base != pytest.approx(eff.source, abs=1e-6)
    site = "blocks.1.resid_post"
    full = subspace_effect(m, enc_k, enc_c, site, None, cls0)
    assert full.normalized == pytest.approx(1.0, abs=1e-5)  # the last block's output is the whole output
    a = integrated_gradients(m, CLEAN, cls0, baseline="mask" if m.tokenizer.mask_token_id is not None else "pad",
                             steps=16)
    assert a.completeness["relative_error"] < 0.02, a.completeness


@pytest.mark.parametrize("name", CAUSAL + ["tiny-bert"])
def test_readout_weight_reads_mlp_act_into_mlp_out(tiny, name):
    from actlab.patch import readout_weight

    m = tiny(name)
    if "blocks.0.mlp_act" not in m.sites:  # Mixtral: experts, no single mlp_act
        with pytest.raises(KeyError, match="mlp_act"):
            readout_weight(m, "blocks.0.mlp_act")
        return
    r = m.record(CLEAN, ["blocks.0.mlp_act", "blocks.0.mlp_out"])
    W = readout_weight(m, "blocks.0.mlp_act")
    b = m.adapter.b_out(0)
    out = r["blocks.0.mlp_act"] @ W.T + (0 if b is None else b)
    torch.testing.assert_close(out, r["blocks.0.mlp_out"], atol=1e-5, rtol=1e-5)
