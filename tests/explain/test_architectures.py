"""The explain entry points on every tiny architecture: a cache over texts (model.record, batched with left padding)
equals encode of each text recorded alone, and promoted tokens work or name why not (BERT: no unembedding)."""
from __future__ import annotations

import pytest
import torch

from actlab import load_model
from actlab.dictionary import DictConfig, build
from actlab.explain import DictionaryLatents, TextRows, build_cache, promoted_tokens
from actlab.models import TINY, Unsupported

TEXTS = ["the apple fell", "a much longer text about pears and apples, and more", "x", "café ☕ and tea"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_text_cache_equals_encode_of_record(name, tmp_path):
    m = load_model(name)
    site = f"blocks.{m.adapter.n_layers - 1}.resid_post"
    sae = build(DictConfig(arch="topk", d_in=m.adapter.d_model, d_sae=96, k=6, site=site), seed=0)
    c = build_cache(TextRows(m, site, TEXTS, batch_texts=3), DictionaryLatents(sae), tmp_path / "c")
    ref, toks, docs, poss = [], [], [], []
    for i, t in enumerate(TEXTS):   # one text at a time: no padding
        enc = m.tokenize([t])
        ref.append(sae.encode(m.record(enc, [site])[site][0].float()))
        toks.append(enc["input_ids"][0])
        docs.append(torch.full((enc["input_ids"].shape[1],), i))
        poss.append(torch.arange(enc["input_ids"].shape[1]))
    ref = torch.cat(ref)
    assert c.n_rows == ref.shape[0]
    assert torch.equal(c.row_table("tokens"), torch.cat(toks)) and torch.equal(c.row_table("doc"), torch.cat(docs))
    assert torch.equal(c.row_table("pos"), torch.cat(poss))
    dense = torch.stack([c.dense(j) for j in range(96)], 1)
    assert (dense > 0).sum() == (ref > 0).sum()
    assert torch.allclose(dense, ref, atol=1e-4)   # batched with left padding vs alone: float noise only
    if m.adapter.unembed is None:
        with pytest.raises(Unsupported, match="bert"):
            promoted_tokens(m, sae.W_dec[0].detach())
    else:
        assert len(promoted_tokens(m, sae.W_dec[0].detach(), 3).top_ids) == 3
