"""End to end on SmolLM2: harvest demo-corpus tokens, train a tiny TopK SAE, cache it, and find features whose top
examples share their activating token (the numbers are in docs/explain.md)."""
from __future__ import annotations

import time

import pytest
import torch

from actlab import load_model
from actlab.dictionary import DictConfig, TrainConfig, store_source, train
from actlab.explain import (
    DictionaryLatents,
    ExampleConfig,
    LatentCache,
    StoreRows,
    activating_windows,
    build_cache,
    highlight,
    promoted_tokens,
    token_pieces,
)
from actlab.explain.run import feature_card
from actlab.store import HarvestConfig, harvest

SITE = "blocks.3.resid_post"


@pytest.mark.real
def test_smollm2_sae_features_share_tokens(tmp_path, capsys):
    t0 = time.time()
    m = load_model("smollm2-135m-instruct")
    store = harvest(m, HarvestConfig(data="demo", sites=[SITE], out=str(tmp_path / "store"), tokens=4096,
                                     context_length=64, exclude_bos=True, store_dtype="fp32", progress=False))
    t_harvest = time.time() - t0
    torch.manual_seed(0)
    sae = train(DictConfig(arch="topk", d_in=m.adapter.d_model, d_sae=1024, k=16, site=SITE),
                TrainConfig(total_tokens=256 * 300, batch_size=256, warmup_steps=20, progress=False, seed=0),
                store_source(store, SITE, 256))
    t_train = time.time() - t0 - t_harvest
    cache = build_cache(StoreRows(store, SITE, 1024), DictionaryLatents(sae), tmp_path / "cache")
    # exact: cached values equal encode on the same store rows
    rows = torch.arange(0, 4096, 7)
    z = sae.encode(store.read(SITE, rows, dtype=torch.float32))
    for j in (int(cache.count.argmax()), 5, 100):
        assert torch.equal(cache.dense(j, rows), z[:, j])
    alive = (cache.count >= 5).nonzero().squeeze(1).tolist()
    shared = []
    for j in alive:
        top = activating_windows(cache, j, ExampleConfig(), limit=5)
        if len(top) == 5 and len({x.tokens[x.focus] for x in top}) == 1:
            shared.append(j)
    elapsed = time.time() - t0
    j = shared[0]
    card = feature_card(cache, j, m.tokenizer, model=m, decoder=sae.W_dec.detach())
    tok = m.tokenizer.decode([activating_windows(cache, j, limit=1)[0].tokens[activating_windows(cache, j,
                                                                                                 limit=1)[0].focus]])
    p = promoted_tokens(m, sae.W_dec[j].detach(), 5)
    with capsys.disabled():
        print(f"\n[explain e2e] harvest {t_harvest:.1f}s train {t_train:.1f}s total {elapsed:.1f}s; fvu "
              f"{sae.cfg.train.get('final', sae.cfg.train)}; alive(>=5 tokens) {len(alive)} of 1024; features whose "
              f"top-5 examples share the token: {len(shared)}; e.g. #{j} on {tok!r}, promotes {p.top_tokens}\n{card}")
    assert len(shared) >= 1
    assert f"latent {j}" in card and "<<" in card
    assert LatentCache(tmp_path / "cache").n_rows == 4096
    # SmolLM2's byte-level BPE: pieces decoded with the tokenizer join to the text, no half characters
    text = "café ☕ naïve — 日本語 🍎 apple"
    ids = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces, group = token_pieces(m.tokenizer, ids)
    assert "".join(pieces) == m.tokenizer.decode(ids) == text and "\ufffd" not in "".join(pieces)
    assert any(g != i for i, g in enumerate(group))   # some character did span several tokens
    marked = [p == " apple" for p in pieces]
    assert highlight(pieces, group, marked).endswith("🍎<< apple>>")
