"""Gradients through the core: ``model.recording(sites, grad=True)`` gives each site's gradient after backward(),
equal to autograd on a hand-hooked tensor, obeying the chain rule, with positions and with interventions."""
import pytest
import torch

from actlab import Scale

TEXTS = ["the quick brown fox", "jumps"]


def _loss(logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (logits * r).sum()


def test_site_grad_equals_autograd_on_a_hand_hooked_tensor(tiny):
    m = tiny("tiny-gpt2")
    enc = m.tokenize(TEXTS)
    torch.manual_seed(0)
    r = torch.randn(*enc["input_ids"].shape, m.config.vocab_size)
    held = {}

    def hook(mod, args, out):  # a plain torch hook: the block-0 output becomes a leaf we differentiate
        h = out[0] if isinstance(out, tuple) else out
        leaf = h.detach().requires_grad_(True)
        held["h"] = leaf
        return (leaf, *out[1:]) if isinstance(out, tuple) else leaf

    with torch.enable_grad(), m.module_hook("transformer.h.0", hook):
        (want,) = torch.autograd.grad(_loss(m(enc).logits, r), held["h"])
    with m.recording(["blocks.0.resid_post"], grad=True) as rec:
        _loss(m(enc).logits, r).backward()
    torch.testing.assert_close(rec["blocks.0.resid_post"].detach(), held["h"].detach(), rtol=0, atol=0)
    torch.testing.assert_close(rec.grad("blocks.0.resid_post"), want, rtol=1e-6, atol=1e-7)
    assert want.abs().sum() > 0


def test_upstream_grad_follows_the_chain_rule_through_the_unembedding(tiny):
    """logits = final_norm @ W_U (GPT-2 has no unembedding bias): d/d final_norm = d/d logits @ W_U^T."""
    m = tiny("tiny-gpt2")
    enc = m.tokenize(TEXTS)
    torch.manual_seed(1)
    r = torch.randn(*enc["input_ids"].shape, m.config.vocab_size)
    with m.recording(["final_norm", "logits"], grad=True) as rec:
        _loss(m(enc).logits, r).backward()
    torch.testing.assert_close(rec.grad("logits"), r)
    w = m.module.lm_head.weight  # [vocab, d_model]
    torch.testing.assert_close(rec.grad("final_norm"), r @ w, rtol=1e-5, atol=1e-5)


def test_grad_with_positions_and_stacked_recordings(tiny):
    m = tiny("tiny-llama")
    enc = m.tokenize(TEXTS)
    site = "blocks.0.resid_post"
    with m.recording([site], grad=True) as full, m.recording([site], grad=True, positions=slice(1, 3)) as part, \
            m.recording([site], grad=True, positions="last") as last:
        m(enc).logits[:, -1, :5].sum().backward()
    mask = torch.zeros_like(enc["attention_mask"], dtype=torch.bool)
    lengths = enc["attention_mask"].sum(1)
    p = mask.shape[1]
    for b in range(2):
        start = p - int(lengths[b])
        mask[b, start + 1: start + 3] = True
    assert part[site].shape == (int(mask.sum()), 64)
    torch.testing.assert_close(part.grad(site), full.grad(site)[mask])
    torch.testing.assert_close(part[site].detach(), full[site].detach()[mask])
    assert last.grad(site).shape == (2, 64)
    torch.testing.assert_close(last.grad(site), full.grad(site)[:, -1])
    assert full.grad(site).abs().sum() > 0


def test_grad_capture_with_an_intervention_in_the_same_pass(tiny):
    """Recording outside an intervention sees the activation before it, inside after it: Scale(2) doubles the
    gradient before it (chain rule) and doubles the activation after it."""
    m = tiny("tiny-llama")
    enc = m.tokenize(TEXTS)
    site = "blocks.0.resid_post"
    with m.recording([site], grad=True) as before, m.intervene({site: Scale(factor=2.0)}), \
            m.recording([site], grad=True) as after:
        loss = m(enc).logits[:, -1].pow(2).sum()
        loss.backward()
    with torch.no_grad():
        plain = m(enc).logits[:, -1].pow(2).sum()
    assert not torch.isclose(loss.detach(), plain)  # the intervention acted in that pass
    torch.testing.assert_close(after[site].detach(), 2 * before[site].detach())
    torch.testing.assert_close(before.grad(site), 2 * after.grad(site))
    assert after.grad(site).abs().sum() > 0


def test_grad_errors_and_zero_for_unused_sites(tiny):
    m = tiny("tiny-llama")
    enc = m.tokenize(TEXTS)
    with m.recording(["blocks.0.resid_post", "blocks.1.resid_post"], grad=True) as rec:
        out = m(enc)
    with pytest.raises(RuntimeError, match="backward"):
        rec.grad("blocks.0.resid_post")
    rec["blocks.0.resid_post"].sum().backward(retain_graph=True)  # a loss that only depends on layer 0
    assert torch.equal(rec.grad("blocks.0.resid_post"), torch.ones_like(rec["blocks.0.resid_post"]))
    rec["blocks.0.resid_post"].sum().backward()  # a second backward accumulates, like .grad
    assert torch.equal(rec.grad("blocks.0.resid_post"), 2 * torch.ones_like(rec["blocks.0.resid_post"]))
    assert torch.equal(rec.grad("blocks.1.resid_post"), torch.zeros_like(rec["blocks.1.resid_post"]))
    with pytest.raises(KeyError, match="not recorded"):
        rec.grad("blocks.0.mlp_out")
    with m.recording(["blocks.0.resid_post"]) as plain:
        m(enc)
    with pytest.raises(ValueError, match="grad=True"):
        plain.grad("blocks.0.resid_post")
    assert not plain["blocks.0.resid_post"].requires_grad
    del out


def test_hooks_door_and_module_hook_are_removed(tiny, n_hooks):
    m = tiny("tiny-gpt2")
    enc = m.tokenize(TEXTS)
    seen = []
    n_before = n_hooks(m.module)
    with torch.no_grad():
        ref = m(enc).logits
        with m.hooks({"blocks.1.resid_post": lambda act, ctx: seen.append(ctx.site) or act * 0}):
            zeroed = m(enc).logits
        with m.module_hook("transformer.h.1", lambda mod, args: seen.append("pre") or None, kind="pre"):
            same = m(enc).logits
        after = m(enc).logits
    assert seen == ["blocks.1.resid_post", "pre"]
    assert not torch.allclose(zeroed, ref) and torch.equal(same, ref) and torch.equal(after, ref)
    assert n_hooks(m.module) == n_before
    with pytest.raises(KeyError, match="close matches"):
        with m.module_hook("transformer.h.9", lambda *a: None):
            pass
    with pytest.raises(ValueError, match="kind"):
        with m.module_hook("transformer.h.0", lambda *a: None, kind="backward"):
            pass
    with pytest.raises(TypeError, match="callable"):
        with m.hooks({"blocks.0.resid_post": 3}):
            pass
    assert not hasattr(m, "engine")  # the engine is private: the doors above are the public way in
