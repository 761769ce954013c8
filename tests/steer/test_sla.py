"""Self-logits augmentation and the context steering vector (VISTA) on tiny-llama with a planted early signal."""
import pytest
import torch

from actlab import Add
from actlab.core.hooks import Ctx
from actlab.steer import ContextSteer, early_logits, sla_generate, sla_logits, vsv_vectors


def test_sla_changes_the_token_the_early_layer_supports(tiny):
    m = tiny("tiny-llama")
    z = m.tokenizer("Z", add_special_tokens=False)["input_ids"][0]
    u = torch.nn.functional.normalize(m.module.lm_head.weight[z].detach().clone(), dim=0)
    # plant: block 0 writes a strong "Z" direction; block 1 cancels it, so only the early layer supports Z
    plant = [("blocks.0.resid_post", Add(u, alpha=3.0)), ("blocks.1.resid_post", Add(u, alpha=-3.0))]
    prompts = ["hello there", "abc"]
    with m.intervene(plant):
        plain = m(prompts).logits[:, -1]
        assert not (plain.argmax(-1) == z).any()
        mixed = sla_logits(m, prompts, layers=[0], alpha=0.5)
        assert (mixed.argmax(-1) == z).all()
        assert torch.equal(sla_logits(m, prompts, layers=[0], alpha=0.0), plain)  # alpha 0: bit for bit
        h0 = m.record(prompts, sites=["blocks.0.resid_post"], positions="last")["blocks.0.resid_post"]
        assert torch.allclose(sla_logits(m, prompts, layers=[0], alpha=1.0), early_logits(m, h0), atol=1e-5)
        out_plain = m.generate(prompts, max_new_tokens=3, return_ids=True)
        out_sla = sla_generate(m, prompts, 3, sla_layers=[0], sla_alpha=0.5, return_ids=True)
    n = out_plain.shape[1] - 3
    assert (out_sla[:, n] == z).all() and not (out_plain[:, n] == z).any()
    with pytest.raises(ValueError, match="out of range"):
        sla_logits(m, prompts, layers=[5], alpha=0.3)


def test_context_steering_vector(tiny):
    """Spec sanity check: a context (a prefix) writes a planted direction u that promotes Z into the last token at
    block 0's MLP output. vsv_vectors on the real with/without-context pair recovers u (cos > 0.9, and its size),
    and steering the no-context run along it lowers KL(p_ctx || p_steered) below KL(p_ctx || p_noctx) and raises
    p(Z). The hook preserves norms and is the identity at lam = 0."""
    m = tiny("tiny-llama")
    z = m.tokenizer("Z", add_special_tokens=False)["input_ids"][0]
    u = 4.0 * torch.nn.functional.normalize(m.module.lm_head.weight[z].detach().clone(), dim=0)
    with_ctx, without = ["the sky is blue. the cat sat"], ["the cat sat"]
    n_ctx = len(m.tokenizer(with_ctx[0])["input_ids"])

    def context_reads(act, ctx):  # the context is "read" into the last token when it is present
        if act.shape[1] == n_ctx:
            act = act.clone()
            act[:, -1] += u
        return act

    site = "blocks.0.mlp_out"
    with m.intervene({site: context_reads}):
        v = vsv_vectors(m, with_ctx, without, layers=[0, 1])
        p_ctx = m(with_ctx).logits[:, -1].log_softmax(-1)
        p_noctx = m(without).logits[:, -1].log_softmax(-1)
        vec = v[site]
        un = torch.nn.functional.normalize(u, dim=0)
        assert torch.nn.functional.cosine_similarity(vec, u, dim=0) > 0.9
        assert float(vec @ un) == pytest.approx(4.0, rel=0.1)  # the difference itself, not a rescaled one
        assert set(v) == {"blocks.0.mlp_out", "blocks.1.mlp_out"}
        with m.intervene({site: ContextSteer(vec, lam=0.5)}):
            p_st = m(without).logits[:, -1].log_softmax(-1)
    kl = lambda p, q: float((p.exp() * (p - q)).sum())  # noqa: E731
    assert kl(p_ctx, p_st) < kl(p_ctx, p_noctx)
    assert float(p_st[0, z]) > float(p_noctx[0, z])
    x = torch.randn(1, 3, m.d_model)
    y = ContextSteer(vec, lam=0.5)(x, Ctx('x', None, None))
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)
    assert torch.equal(ContextSteer(vec, lam=0.0)(x, Ctx('x', None, None)), x)


def test_context_steer_formula():
    """x' = normalize(normalize(x) + lam * s * normalize(v)) * ||x|| with s = 1 + max(0, cos(x, -v)) (adaptive; 1 in
    simple mode): a token pointing away from v gets the stronger push."""
    v = torch.tensor([1.0, 0.0, 0.0])
    x = torch.tensor([[[-2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]])  # first token points away from v, second toward it
    lam = 0.5

    def expected(xi, s):
        y = xi / xi.norm() + lam * s * v
        return y / y.norm() * xi.norm()

    cos_away = float(torch.nn.functional.cosine_similarity(x[0, 0], -v, dim=0))
    out = ContextSteer(v * 3, lam=lam)(x, Ctx("x", None, None))
    assert torch.allclose(out[0, 0], expected(x[0, 0], 1 + cos_away), atol=1e-6)
    assert torch.allclose(out[0, 1], expected(x[0, 1], 1.0), atol=1e-6)  # cos(x, -v) < 0: no extra push
    simple = ContextSteer(v * 3, lam=lam, adaptive=False)(x, Ctx("x", None, None))
    assert torch.allclose(simple[0, 0], expected(x[0, 0], 1.0), atol=1e-6)
