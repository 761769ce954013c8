"""Effects: promoted tokens equal the model's own unembedding of the gain-scaled direction; nearest features by
decoder cosine; co-occurrence counts equal dense ones."""
from __future__ import annotations

import pytest
import torch

from actlab import load_model
from actlab.explain.effects import cooccurrence, logit_effect, nearest_features, promoted_tokens

from .planted import planted_cache


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_promoted_tokens_match_the_unembedding(name):
    m = load_model(name)
    ad = m.adapter
    with torch.no_grad():
        ad.final_norm.weight.copy_(torch.rand(ad.d_model) + 0.5)   # a non-trivial gain must be applied
    d = torch.randn(ad.d_model)
    ref = ad.unembed(d * ad.final_norm.weight)
    if getattr(ad.unembed, "bias", None) is not None:
        ref = ref - ad.unembed.bias
    assert torch.allclose(logit_effect(m, d), ref, atol=1e-5)
    p = promoted_tokens(m, d, k=5)
    assert p.top_ids == ref.topk(5).indices.tolist() and p.bottom_ids == (-ref).topk(5).indices.tolist()
    assert p.top_values[0] >= p.top_values[-1] > p.bottom_values[-1]
    assert p.top_tokens[0] == m.tokenizer.decode([p.top_ids[0]])
    with pytest.raises(ValueError, match="d_model"):
        logit_effect(m, torch.randn(ad.d_model + 1))


def test_nearest_features():
    W = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [-1.0, 0, 0]])
    nb = nearest_features(W * torch.tensor([[3.0], [1], [1], [1]]), 0, 2)
    assert [i for i, _ in nb] == [1, 2]
    assert nb[0][1] == pytest.approx(0.9 / (0.81 + 0.01) ** 0.5)


def test_cooccurrence(tmp_path):
    c, x, _ = planted_cache(tmp_path / "c")
    a = (x > 0).long()
    co = cooccurrence(c, [0, 1])
    assert torch.equal(co, (a[:, [0, 1]].t() @ a))
    assert co[0, 0] == c.count[0] and co[0, 1] == 0   # apple and numbers never share a token
