"""Self-logits augmentation and the context steering vector (VISTA) on tiny-llama with a planted early signal."""
import pytest
import torch

from actlab import Add
from actlab.core.hooks import Ctx
from actlab.steer.sla import ContextSteer, early_logits, generate, sla_logits, vsv_vectors


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
        out_sla = generate(m, prompts, 3, sla_layers=[0], sla_alpha=0.5, return_ids=True)
    n = out_plain.shape[1] - 3
    assert (out_sla[:, n] == z).all() and not (out_plain[:, n] == z).any()
    with pytest.raises(ValueError, match="out of range"):
        sla_logits(m, prompts, layers=[5], alpha=0.3)


def test_context_steering_vector(tiny):
    m = tiny("tiny-llama")
    g = torch.Generator().manual_seed(4)
    u = torch.randn(m.d_model, generator=g)
    # the "context" (a prefix) is simulated by a planted write at block 0's MLP output
    with m.intervene({"blocks.0.mlp_out": Add(u, alpha=1.0)}):
        ctx = m(["the cat sat"]).logits[:, -1].log_softmax(-1)
        v_with = m.record(["the cat sat"], sites=["blocks.0.mlp_out"], positions="last")["blocks.0.mlp_out"]
    v = vsv_vectors(m, ["the cat sat"], ["the cat sat"], layers=[0])
    assert float(v["blocks.0.mlp_out"].norm()) == 0.0  # same input -> no vector
    base = m.record(["the cat sat"], sites=["blocks.0.mlp_out"], positions="last")["blocks.0.mlp_out"]
    vec = (v_with - base)[0]
    assert torch.nn.functional.cosine_similarity(vec, u, dim=0) > 0.99
    noctx = m(["the cat sat"]).logits[:, -1].log_softmax(-1)
    seen = []
    with m.intervene({"blocks.0.mlp_out": [ContextSteer(vec, lam=0.5), lambda a, c: seen.append(a) or None]}):
        st = m(["the cat sat"]).logits[:, -1].log_softmax(-1)
    kl = lambda p, q: float((p.exp() * (p - q)).sum())  # noqa: E731
    assert kl(ctx, st) < kl(ctx, noctx)
    x = torch.randn(1, 3, m.d_model)
    y = ContextSteer(vec, lam=0.5)(x, Ctx('x', None, None))
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)
    assert torch.equal(ContextSteer(vec, lam=0.0)(x, Ctx('x', None, None)), x)
