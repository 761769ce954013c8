"""Application: norm preservation, prompt-only addition, ablation removes a planted behaviour, weight
orthogonalisation equals hook ablation."""
import pytest
import torch

from actlab import load_interventions, load_model, save_interventions
from actlab.core.hooks import Ctx
from actlab.core.positions import PassInfo
from actlab.steer import NormPreservingAdd, PromptAdd, ablate_everywhere, orthogonalize_model


def _ctx(positions):
    """The PassInfo the core builds for a call covering these (unpadded) positions: cached tokens before them."""
    pos = torch.tensor([positions])
    return Ctx("blocks.0.resid_post", PassInfo(pos, torch.ones_like(pos, dtype=torch.bool),
                                               torch.tensor([positions[-1] + 1]), past=positions[0]), None)


def test_norm_preserving_add_exact(tiny):
    m = tiny("tiny-llama")
    v = torch.randn(m.d_model) * 3
    seen = {}

    def grab(act, ctx):
        seen.setdefault("out", []).append(act.detach().clone())
        return None

    plain = m.record(["hello world", "abc"], sites=["blocks.0.resid_post"])["blocks.0.resid_post"]
    with m.intervene({"blocks.0.resid_post": [NormPreservingAdd(v, alpha=2.0), grab]}):
        m(["hello world", "abc"])
    out = seen["out"][0]
    rel = (out.norm(dim=-1) - plain.norm(dim=-1)).abs() / plain.norm(dim=-1)
    assert float(rel.max()) < 1e-5
    cosines = torch.nn.functional.cosine_similarity(out, plain, dim=-1)
    assert float(cosines.max()) < 0.99  # it did change the direction
    act = torch.randn(2, 3, m.d_model)
    assert torch.equal(NormPreservingAdd(v, alpha=0.0)(act, _ctx([0, 1, 2])), act)


def test_prompt_add_only_on_prefill():
    v = torch.ones(4)
    act = torch.zeros(1, 3, 4)
    assert torch.equal(PromptAdd(v, alpha=2.0)(act, _ctx([0, 1, 2])), act + 2)
    one = torch.zeros(1, 1, 4)
    assert torch.equal(PromptAdd(v, alpha=2.0)(one, _ctx([7])), one)  # a decode step
    assert torch.equal(NormPreservingAdd(v, alpha=2.0, prefill_only=True)(one + 1, _ctx([7])), one + 1)


def test_ops_round_trip(tmp_path):
    v = torch.randn(8)
    p = save_interventions(tmp_path / "x.json", {"blocks.0.resid_post": [NormPreservingAdd(v, alpha=3.0,
                                                                                         prefill_only=True),
                                                                       PromptAdd(v.clone(), alpha=-1.0)]})
    (s1, a), (s2, b) = load_interventions(p)
    assert isinstance(a, NormPreservingAdd) and a.alpha == 3.0 and a.prefill_only and torch.equal(a.vector, v)
    assert isinstance(b, PromptAdd) and b.alpha == -1.0


def planted_behaviour():
    """tiny-llama where a trigger token 'Q' writes direction u into the residual and 'Z' is read from u."""
    m = load_model("tiny-llama")
    g = torch.Generator().manual_seed(3)
    u = torch.nn.functional.normalize(torch.randn(m.d_model, generator=g), dim=0)
    q = m.tokenizer("Q", add_special_tokens=False)["input_ids"][0]
    z = m.tokenizer("Z", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        m.module.model.embed_tokens.weight[q] += 2.0 * u
        m.module.lm_head.weight[z] = 4.0 * u
    return m, u, z


def test_ablation_removes_planted_behaviour_and_weights_match(tmp_path):
    m, u, z = planted_behaviour()
    prompts = ["abcQ", "hello Q", "xyzzyQ"]
    logits = m(prompts).logits[:, -1]
    assert (logits.argmax(-1) == z).all()  # the planted behaviour
    with m.intervene(ablate_everywhere(m, u)):
        abl = m(prompts).logits[:, -1]
    assert not (abl.argmax(-1) == z).any()
    assert float(torch.softmax(abl, -1)[:, z].max()) < 0.05
    # a random direction ablated everywhere leaves the behaviour in place
    r = torch.nn.functional.normalize(torch.randn(m.d_model, generator=torch.Generator().manual_seed(9)), dim=0)
    with m.intervene(ablate_everywhere(m, r)):
        assert (m(prompts).logits[:, -1].argmax(-1) == z).all()
    # the same edit baked into the weights
    out = orthogonalize_model(m, u, tmp_path / "edited")
    assert (out / "actlab_edit.json").exists()
    e = load_model(out)
    assert torch.allclose(e(prompts).logits[:, -1], abl, atol=1e-4)
    assert torch.allclose(m(prompts).logits[:, -1], logits)  # the live model is untouched
    with pytest.raises(FileExistsError, match="not empty"):
        orthogonalize_model(m, u, out)
    with pytest.raises(ValueError, match="expected \\[64\\]"):
        ablate_everywhere(m, torch.ones(3))


@pytest.mark.real
@pytest.mark.slow
def test_orthogonalize_tied_embeddings_smollm2(smollm2, tmp_path):
    """SmolLM2 ties its unembedding to the embeddings; the edit unties them so the folder equals hook ablation."""
    m = smollm2
    u = torch.nn.functional.normalize(torch.randn(m.d_model, generator=torch.Generator().manual_seed(0)), dim=0)
    with m.intervene(ablate_everywhere(m, u)):
        abl = m("The capital of France is").logits[:, -1]
    e = load_model(orthogonalize_model(m, u, tmp_path / "ortho"))
    assert torch.allclose(e("The capital of France is").logits[:, -1], abl, atol=1e-3)
