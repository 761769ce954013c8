"""steer's public entry points on every tiny architecture: extract (batched == one at a time), apply (add,
norm-preserving add, ablation at every residual write) and orthogonalise (the edited folder equals hook ablation);
BERT's post-norm blocks have no weight edit equal to the ablation, and say so."""
import pytest
import torch

from actlab import load_model
from actlab.models import Unsupported
from actlab.steer import ablate_everywhere, early_logits, extract, orthogonalize_model, sla_logits

ARCHS = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-mixtral", "tiny-neox"]
POS = ["hello there my friend", "good day", "a fine morning it is today", "yes"]
NEG = ["xq zv", "kkk jj pp qq rr", "zzz", "vvv www xxx yyy"]
SITE = "blocks.1.resid_post"


def unit(m, seed=0):
    return torch.nn.functional.normalize(torch.randn(m.d_model, generator=torch.Generator().manual_seed(seed)), dim=0)


@pytest.mark.parametrize("name", ARCHS)
def test_extract_and_apply(tiny, name):
    m = tiny(name)
    a = extract(m, POS, NEG, SITE, position="mean", batch_size=4)[SITE]
    b = extract(m, POS, NEG, SITE, position="mean", batch_size=1)[SITE]
    assert float(torch.nn.functional.cosine_similarity(a.vector, b.vector, dim=0)) > 0.9999
    assert a.norms["resid_median"] == pytest.approx(b.norms["resid_median"], rel=1e-4)
    plain = m.record(POS, sites=[SITE])[SITE]
    with m.intervene(a.to_interventions(2.0, scale="unit")):
        added = m.record(POS, sites=[SITE])[SITE]
    mask = m.tokenize(POS)["attention_mask"].bool()
    assert torch.allclose((added - plain)[mask], 2.0 * a.unit.expand(int(mask.sum()), -1), atol=1e-4)
    with m.intervene(a.to_interventions(2.0, mode="norm_add", scale="unit")):
        kept = m.record(POS, sites=[SITE])[SITE]
    assert torch.allclose(kept.norm(dim=-1), plain.norm(dim=-1), rtol=1e-4)
    u = unit(m)
    with m.intervene(ablate_everywhere(m, u)):
        abl = m.record(POS, sites=["blocks.0.resid_post", SITE])
    if m.adapter.final_norm is not None:  # pre-norm: the stream is the sum of the ablated writes
        for s, t in abl.items():
            assert float((t[mask] @ u).abs().max()) < 1e-4, s


@pytest.mark.parametrize("name", ARCHS)
def test_orthogonalise(name, tmp_path):
    m = load_model(name)  # a fresh copy: its residual-writer biases get random values, so their edit is tested
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, _, b in m.adapter.residual_writers():
            if b is not None:
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
    u = unit(m, 1)
    if name == "tiny-bert":
        with pytest.raises(Unsupported, match="bert: .*post-norm"):
            orthogonalize_model(m, u, tmp_path / "edited")
        assert not (tmp_path / "edited").exists()
        return
    before = m(POS).logits
    with m.intervene(ablate_everywhere(m, u)):
        abl = m(POS).logits
    e = load_model(orthogonalize_model(m, u, tmp_path / "edited"))
    assert e.family == m.family
    mask = m.tokenize(POS)["attention_mask"].bool()
    assert torch.allclose(e(POS).logits[mask], abl[mask], atol=1e-4)
    assert not torch.allclose(abl[mask], before[mask], atol=1e-3)  # the ablation did something
    assert torch.equal(m(POS).logits, before)  # the live model is untouched


@pytest.mark.parametrize("name", ARCHS)
def test_self_logits_augmentation(tiny, name):
    """SLA reads the final norm and unembedding from the adapter: alpha 0 = the plain logits, alpha 1 = the logit
    lens of the chosen layer through the model's own final norm and head; an encoder without a head says so."""
    m = tiny(name)
    if m.adapter.unembed is None:
        with pytest.raises(ValueError, match="final norm|no unembedding"):
            sla_logits(m, POS[:2], layers=[0], alpha=0.5)
        return
    plain = m(POS[:2]).logits[:, -1]
    assert torch.equal(sla_logits(m, POS[:2], layers=[0], alpha=0.0), plain)
    h0 = m.record(POS[:2], sites=["blocks.0.resid_post"], positions="last")["blocks.0.resid_post"]
    lens = sla_logits(m, POS[:2], layers=[0], alpha=1.0)
    assert torch.allclose(lens, early_logits(m, h0), atol=1e-5)
    with torch.no_grad():  # the same logit lens by hand: the model's final norm then its head, on the last layer
        hl = m.record(POS[:2], sites=[f"blocks.{m.n_layers - 1}.resid_post"], positions="last")
        by_hand = m.adapter.unembed(m.adapter.final_norm(hl[f"blocks.{m.n_layers - 1}.resid_post"]))
    assert torch.allclose(by_hand, plain, atol=1e-4)  # which is the model's own output at the last layer
