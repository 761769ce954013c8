"""Intervention scorer (spec §4): a stub LM whose surprisal of "apple" drops after text containing "apple" gives a
positive score when the intervention inserts "apple" and exactly 0 for a no-op one; the latent edits (add the unit
decoder direction, clamp the latent) do what they say on a real tiny model."""
from __future__ import annotations

import pytest
import torch

from actlab import load_model
from actlab.dictionary import DictConfig, build
from actlab.explain import InterventionScorer, latent_intervention, steered_generators

PROMPTS = ["I like", "We ate", "Look at the"]


def stub_lm(prefix, text):
    """Each word of the text costs 3 nats, 1 when the prefix contains it."""
    seen = set(prefix.split())
    return float(sum(-1.0 if w in seen else -3.0 for w in text.split()))


def plain(prompts):
    return [" the green tree" for _ in prompts]


def apple(prompts):
    return [" an apple and apple pie" for _ in prompts]


def test_stub_positive_vs_zero():
    good = InterventionScorer(plain, apple, stub_lm, PROMPTS).score("apple")
    assert good.value == pytest.approx(2.0) and good.scorer == "intervention"   # 3 - 1 nats per prompt
    assert [r["delta"] for r in good.records] == [2.0] * 3
    noop = InterventionScorer(plain, plain, stub_lm, PROMPTS).score("apple")
    assert noop.value == 0.0
    wrong = InterventionScorer(plain, apple, stub_lm, PROMPTS).score("banana")
    assert wrong.value == 0.0
    calls = []
    sc = InterventionScorer(lambda p: calls.append(1) or plain(p), apple, stub_lm, PROMPTS)
    sc.score("apple"), sc.score("pie")
    assert len(calls) == 1          # completions generated once per latent, reused for each explanation
    with pytest.raises(ValueError, match="prompts"):
        InterventionScorer(plain, apple, stub_lm, [])


def test_latent_edits_on_a_tiny_model():
    m = load_model("tiny-llama")
    site = "blocks.1.resid_post"
    sae = build(DictConfig(arch="relu", d_in=m.adapter.d_model, d_sae=32, site=site))
    with torch.no_grad():
        sae.W_dec[3] *= 3.0      # a decoder row of norm != 1: "add" must use the unit direction
    x = torch.randn(2, 5, m.adapter.d_model)
    z = sae.encode(x)[..., 3]
    same = latent_intervention(sae, 3, "clamp", value=0.0)
    delta = same.edit(x, None) - x
    assert torch.allclose(delta, (0.0 - z)[..., None] * sae.W_dec[3].detach(), atol=1e-6)
    add = latent_intervention(sae, 3, "add", value=2.0)
    w = sae.W_dec[3].detach()
    assert torch.allclose(add.alpha * add.vector, 2.0 * w / w.norm(), atol=1e-6)
    clean, steered = steered_generators(m, site, latent_intervention(sae, 3, "add", value=0.0), max_new_tokens=4)
    p = ["hello there"]
    assert steered(p) == clean(p)                    # a zero-strength edit changes nothing
    _, strong = steered_generators(m, site, latent_intervention(sae, 3, "add", value=500.0), max_new_tokens=4)
    assert strong(p) != clean(p)
    with pytest.raises(IndexError, match="out of range"):
        latent_intervention(sae, 99)
    with pytest.raises(ValueError, match="mode"):
        latent_intervention(sae, 1, "scale")
