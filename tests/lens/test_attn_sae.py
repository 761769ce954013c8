"""Attention-output SAE attribution (dictionary-learning.md §2): head attribution by decoder norm per head block,
and direct feature attribution (DFA) to source tokens, with the spec's checks."""
import pytest
import torch

from actlab import load_model
from actlab.dictionary import DictConfig, build
from actlab.lens import direct_feature_attribution, head_attribution

from .conftest import CAUSAL, TEXTS


def _planted_z(n: int = 4000, vocab: int = 8, d_head: int = 8, seed: int = 0):
    """hook_z of the spec's toy: head 0 copies the previous token's embedding, head 1 attends to BOS (a constant)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(vocab, d_head, generator=g)
    emb = 3 * emb / emb.norm(dim=1, keepdim=True)
    bos = 2 * torch.randn(d_head, generator=g)
    prev = torch.randint(vocab, (n,), generator=g)
    z0 = emb[prev] + 0.02 * torch.randn(n, d_head, generator=g)
    z1 = bos + 0.02 * torch.randn(n, d_head, generator=g)
    return torch.cat([z0, z1], 1), prev


def test_head_attribution_planted_previous_token_features():
    torch.manual_seed(0)
    z, prev = _planted_z()
    sae = build(DictConfig(arch="relu", d_in=16, d_sae=32, l1_coef=0.3))
    sae.init_from_data(z, z)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(300):
        b = z[torch.randint(len(z), (256,))]
        opt.zero_grad()
        sae.step(b, b).loss.backward()
        sae.before_optimizer_step()
        opt.step()
        sae.after_optimizer_step()
    frac = head_attribution(sae, n_heads=2)
    torch.testing.assert_close(frac.sum(1), torch.ones(32))
    acts = sae.encode(z).detach()
    for x in range(8):                                   # the latent that responds to "previous token = x"
        sel = prev == x
        f = int((acts[sel].mean(0) - acts[~sel].mean(0)).argmax())
        assert acts[sel, f].mean() > 5 * acts[~sel, f].mean() + 1e-6, f"no latent for previous token {x}"
        assert frac[f, 0] > 0.9, f"latent {f} for previous token {x} has head-0 share {frac[f, 0]:.3f}"


def test_head_attribution_exact_and_errors():
    W = torch.zeros(3, 8)
    W[0, :4] = 1.0           # head 0 only
    W[1, 4:] = 2.0           # head 1 only
    W[2] = 1.0               # equal
    torch.testing.assert_close(head_attribution(W, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="3 equal head blocks"):
        head_attribution(W, 3)


def _random_sae(m, layer, seed=0):
    d = m.adapter.n_heads * m.adapter.d_head
    g = torch.Generator().manual_seed(seed)
    s = build(DictConfig(arch="relu", d_in=d, d_sae=24, site=f"blocks.{layer}.attn.z"))
    with torch.no_grad():
        s.b_enc.normal_(0, 0.5, generator=g)
        s.b_dec.normal_(0, 0.5, generator=g)
    return s


@pytest.mark.parametrize("name", CAUSAL)
def test_dfa_sums_to_the_pre_activation(biased, name):
    m = biased(name)
    sae = _random_sae(m, 1)
    r = direct_feature_attribution(m, sae, TEXTS)
    assert r.values.shape == (3, 24, m.adapter.n_heads, r.mask.shape[1])
    torch.testing.assert_close(r.total, r.pre, atol=1e-5, rtol=0)
    # the pre-activation is the SAE's on the recorded attn.z (not a quantity DFA made up)
    z = m.record(TEXTS, "blocks.1.attn.z", positions=-1)["blocks.1.attn.z"].flatten(1)
    torch.testing.assert_close(r.pre, sae.pre_acts(z), atol=1e-5, rtol=0)
    assert (r.by_source()[~r.mask[:, None].expand_as(r.by_source())] == 0).all()   # padding never contributes
    # batched == one at a time (features subset, a middle position)
    for i, t in enumerate(TEXTS):
        one = direct_feature_attribution(m, sae, t, features=[3, 5], position=1)
        full = direct_feature_attribution(m, sae, TEXTS, features=[3, 5], position=1)
        n = int(one.mask.sum())
        torch.testing.assert_close(full.values[i, ..., -n:], one.values[0], atol=1e-5, rtol=1e-4)


def test_dfa_planted_source_token():
    """Layer 0 of tiny-gpt2 with no position embedding and head 0's query zeroed (uniform attention): a latent whose
    encoder is head 0's value vector of token 'Q' draws its largest source contribution from the 'Q' positions, and
    nothing from the other heads."""
    m = load_model("tiny-gpt2")
    ad = m.adapter
    with torch.no_grad():
        ad.W_pos.zero_()
        ad.W_Q(0)[0].zero_()
        ad.b_Q(0)[0].zero_()
    text = "abcQdefgh"
    sae = _random_sae(m, 0)
    v = m.record(text, "blocks.0.attn.v")["blocks.0.attn.v"][0, :, 0]       # [pos, d_head] of head 0
    ids = m.tokenize(text)["input_ids"][0]
    q = (ids == m.tokenizer("Q", add_special_tokens=False)["input_ids"][0]).nonzero().item()
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[0, : ad.d_head] = v[q] / v[q].norm()
    r = direct_feature_attribution(m, sae, text, layer=0, features=[0])
    src = r.by_source()[0, 0]
    assert int(src.argmax()) == q
    torch.testing.assert_close(r.values[0, 0, 1:], torch.zeros_like(r.values[0, 0, 1:]))
    n = int(r.mask.sum())
    torch.testing.assert_close(r.values[0, 0, 0], (v @ (v[q] / v[q].norm())) / n, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r.total, r.pre, atol=1e-5, rtol=0)


def test_dfa_errors(biased):
    m = biased("tiny-gpt2")
    with pytest.raises(ValueError, match="d_in = n_heads \\* d_head = 64"):
        direct_feature_attribution(m, build(DictConfig(arch="relu", d_in=32, d_sae=8, site="blocks.0.attn.z")),
                                   TEXTS)
    with pytest.raises(ValueError, match="give layer="):
        direct_feature_attribution(m, build(DictConfig(arch="relu", d_in=64, d_sae=8, site="blocks.0.attn_out")),
                                   TEXTS)
    with pytest.raises(ValueError, match="out of range"):
        direct_feature_attribution(m, _random_sae(m, 0), TEXTS, features=[99])
