"""Attention-output SAE latents in the feature card: head shares (actlab.lens.head_attribution) and DFA source
tokens (actlab.lens.direct_feature_attribution) on a real tiny Llama."""
from __future__ import annotations

import pytest
import torch

from actlab import load_model
from actlab.dictionary import DictConfig, build
from actlab.explain import CacheConfig, DictionaryLatents, TextRows, build_cache
from actlab.explain.effects import attn_layer, dfa_sources, head_shares
from actlab.explain.run import feature_card

SITE = "blocks.1.attn.z"


def test_heads_and_dfa(tmp_path):
    m = load_model("tiny-llama")
    h, dh = m.adapter.n_heads, m.adapter.d_head
    sae = build(DictConfig(arch="relu", d_in=h * dh, d_sae=16, site=SITE))
    with torch.no_grad():   # latent 5 writes only into head 2's block
        w = torch.zeros(h, dh)
        w[2] = torch.randn(dh)
        sae.W_dec[5] = w.flatten()
    assert attn_layer(SITE) == 1 and attn_layer("blocks.1.resid_post") is None
    assert head_shares(sae, h, 5, k=1) == [(2, pytest.approx(1.0))]
    tokens = m.tokenizer("the apple and the pear are red", add_special_tokens=False)["input_ids"]
    p = len(tokens) - 2
    src = dfa_sources(m, sae, 3, tokens, p, k=len(tokens))
    assert len(src) == p + 1 and all(i <= p for i, _ in src)          # only sources up to the destination
    assert [v for _, v in src] == sorted((v for _, v in src), reverse=True)
    z = m.record(torch.tensor([tokens]), [SITE])[SITE][0, p].flatten().float()
    with torch.no_grad():
        bias = float(sae.b_enc[3] - sae.W_enc[3] @ sae.centre_bias())
        pre = float(sae.pre_acts(z[None])[0, 3])
    assert sum(v for _, v in src) + bias == pytest.approx(pre, abs=1e-4)
    texts = [f"doc {i}: the apple and the pear, {i * 7} cake" for i in range(12)]
    c = build_cache(TextRows(m, SITE, texts), DictionaryLatents(sae), tmp_path / "c", CacheConfig(progress=False))
    j = int(c.count.argmax())
    card = feature_card(c, j, m.tokenizer, model=m, decoder=sae.W_dec.detach(), dictionary=sae)
    assert "heads    h" in card and "DFA from" in card
    assert "heads" not in feature_card(c, j, m.tokenizer, model=m, decoder=sae.W_dec.detach())
