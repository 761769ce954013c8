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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SmolLM2, a demo-corpus store, a TopK SAE trained on it, and its latent cache (shared by the tests)."""
    tmp_path = tmp_path_factory.mktemp("real")
    t0 = time.time()
    m = load_model("smollm2-135m-instruct")
    store = harvest(m, HarvestConfig(data="demo", sites=[SITE], out=str(tmp_path / "store"), tokens=4096,
                                     context_length=64, exclude_bos=True, store_dtype="fp32", progress=False))
    t_harvest = time.time() - t0
    torch.manual_seed(0)
    sae = train(DictConfig(arch="topk", d_in=m.adapter.d_model, d_sae=1024, k=16, site=SITE),
                TrainConfig(total_tokens=256 * 300, batch_size=256, warmup_steps=20, progress=False, seed=0,
                            lr=8e-4),  # the pre-2026-11-30 default at 1024 latents: the latents the tests pick
                store_source(store, SITE, 256))
    t_train = time.time() - t0 - t_harvest
    cache = build_cache(StoreRows(store, SITE, 1024), DictionaryLatents(sae), tmp_path / "cache")
    return tmp_path, t0, m, store, sae, cache, t_harvest, t_train


def shared_token_latents(cache):
    """Latents firing on >= 5 tokens whose top-5 windows all peak on the same token."""
    alive = (cache.count >= 5).nonzero().squeeze(1).tolist()
    shared = []
    for j in alive:
        top = activating_windows(cache, j, ExampleConfig(), limit=5)
        if len(top) == 5 and len({x.tokens[x.focus] for x in top}) == 1:
            shared.append(j)
    return alive, shared


@pytest.mark.real
def test_smollm2_sae_features_share_tokens(trained, capsys):
    tmp_path, t0, m, store, sae, cache, t_harvest, t_train = trained
    # exact: cached values equal encode on the same store rows
    rows = torch.arange(0, 4096, 7)
    z = sae.encode(store.read(SITE, rows, dtype=torch.float32))
    for j in (int(cache.count.argmax()), 5, 100):
        assert torch.equal(cache.dense(j, rows), z[:, j])
    alive, shared = shared_token_latents(cache)
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


@pytest.mark.real
def test_smollm2_explain_and_score(trained, capsys):
    """A shared-token feature explained by the bundled SmolLM2 (chat template, in-process), then scored: detection
    judged by SmolLM2 (P(Yes) from the first answer token), surprisal on SmolLM2, embedding on MiniLM,
    intervention (steering the latent's decoder direction)."""
    from actlab.explain import (
        DetectionScorer,
        EmbeddingScorer,
        InterventionScorer,
        ModelExplainer,
        SurprisalScorer,
        latent_intervention,
        minilm_embedder,
        model_logprob,
        steered_generators,
    )
    from actlab.explain.pipeline import explain_latents, score_explanations

    _, _, m, _, sae, cache, _, _ = trained
    _, shared = shared_token_latents(cache)
    # the most frequent shared-token latent on a word (enough windows for disjoint train and test sets)

    def word(i):
        x = activating_windows(cache, i, limit=1)[0]
        return m.tokenizer.decode([x.tokens[x.focus]]).strip()
    words = [i for i in shared if word(i).isalpha() and len(word(i)) >= 3]
    j = max(words or shared, key=lambda i: int(cache.count[i]))
    t0 = time.time()
    cfg = ExampleConfig(n_train=8, n_test=6, n_non_activating=6, ctx_len=24, after=4)
    llm = ModelExplainer(m, max_tokens=24)
    exps = explain_latents(cache, [j], llm, m.tokenizer, cfg)
    t_explain = time.time() - t0
    assert len(exps) == 1 and exps[0].text and exps[0].latent == j
    e = exps[0]
    plain, steered = steered_generators(m, SITE, latent_intervention(sae, j, "add", 8.0), max_new_tokens=10)
    prompts = ["The weather today is", "My favourite thing to do is"]
    scorers = {"detection": DetectionScorer(llm.judge("detection")),   # fuzzing: same judge path, stub-tested
               "surprisal": SurprisalScorer(model_logprob(m)),
               "embedding": EmbeddingScorer(minilm_embedder()),
               "intervention": InterventionScorer(plain, steered, model_logprob(m), prompts, latent=j)}
    res = score_explanations(cache, exps, scorers, m.tokenizer, cfg, sae.W_dec.detach())
    t_score = time.time() - t0 - t_explain
    by = {r.scorer: r for r in res}
    assert set(by) == set(scorers)
    for name in ("detection",):
        r = by[name]
        assert 0.0 <= r.balanced_accuracy <= 1.0 and r.auroc is not None and r.n_activating >= 1
        assert all(0.0 <= x["prob"] <= 1.0 for x in r.records)
    assert 0.0 <= by["surprisal"].auroc <= 1.0 and 0.0 <= by["embedding"].auroc <= 1.0
    assert by["intervention"].value == by["intervention"].value   # finite, computed
    assert any(x["plain"] != x["steered"] for x in by["intervention"].records)
    tok = m.tokenizer.decode([activating_windows(cache, j, limit=1)[0].tokens[activating_windows(cache, j,
                                                                                                 limit=1)[0].focus]])
    with capsys.disabled():
        print(f"\n[explain e2e] latent {j} (top examples on {tok!r}, {int(cache.count[j])} tokens): "
              f"explanation {e.text!r} (raw {e.response!r}); explain {t_explain:.1f}s, score {t_score:.1f}s")
        for r in res:
            print(f"  {r.scorer:12s} value {r.value:.3f}  bal_acc {r.balanced_accuracy}  auroc {r.auroc}")
