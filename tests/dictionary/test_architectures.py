"""The dictionary family's public entry points on every tiny architecture: on-the-fly sources (plain and with
the loss gradient), training, evaluation, spliced CE (batched == one text at a time); a clear error where an
architecture cannot support one."""
import pytest
import torch

from actlab.dictionary import (
    DictConfig,
    TrainConfig,
    Trainer,
    evaluate,
    model_source,
    site_width,
    splice_ce,
    tensor_source,
)
from actlab.models.tiny import TINY

TEXTS = ["The cat sat on the mat.", "A much longer sentence about dictionaries, sites and sparse features here.",
         "Short one.", "Numbers 1 2 3 4 5 6 7 8 9 and words."]


@pytest.mark.parametrize("name", list(TINY))
def test_entry_points(tiny, name):
    m = tiny(name)
    site = "blocks.0.resid_post"
    d = site_width(m, site)
    assert d == m.adapter.d_model
    assert site_width(m, "blocks.0.attn.z") == m.adapter.n_heads * m.adapter.d_head   # heads flattened
    if "blocks.0.mlp_act" in m.sites:
        assert site_width(m, "blocks.0.mlp_act") == m.adapter.d_mlp
    src = model_source(m, site, TEXTS * 4, batch_size=64, context_length=16, contexts_per_forward=4)
    dc = DictConfig(arch="topk", d_in=d, d_sae=2 * d, k=4, site=site, model=m.name)
    sae = Trainer(dc, TrainConfig(total_tokens=64 * 6, batch_size=64, lr=3e-3, warmup_steps=2, progress=False),
                  src).fit()
    res = evaluate(sae, src(1))
    assert 0 < res.l0 <= 4 and res.fvu < 1.5
    if not m.is_causal_lm:
        with pytest.raises(ValueError, match=f"needs a causal LM; {name} \\({m.family}\\)"):
            splice_ce(m, sae, TEXTS)
        with pytest.raises(ValueError, match="needs a causal LM"):
            model_source(m, site, TEXTS, batch_size=8, with_grad=True)
        return
    batched = splice_ce(m, sae, TEXTS, batch_size=4)
    single = splice_ce(m, sae, TEXTS, batch_size=1)        # left-padded rows equal their unpadded selves
    assert batched.tokens == single.tokens > 0
    for k in ("ce_clean", "ce_spliced", "ce_zero"):
        assert abs(getattr(batched, k) - getattr(single, k)) < 1e-4, (k, batched, single)
    x, y, g = next(iter(model_source(m, site, TEXTS * 4, batch_size=32, context_length=16, with_grad=True)(0)))
    assert x.shape == g.shape == (32, d) and torch.equal(x, y) and bool(g.abs().sum() > 0)
    gs = Trainer(DictConfig(arch="gsae", d_in=d, d_sae=2 * d, k=4, site=site),
                 TrainConfig(total_tokens=64, batch_size=32, progress=False), tensor_source(x, 32)).model
    assert gs.encode_with_grad(x, g).shape == (32, 2 * d)


def test_model_source_rows_are_the_recorded_rows(tiny):
    """Every row of an epoch is a recorded activation of one context position >= skip_first, each exactly once."""
    from actlab.data.pack import iter_contexts
    m = tiny("tiny-llama")
    site, texts = "blocks.1.resid_post", TEXTS * 3
    rows = torch.cat(list(model_source(m, site, texts, batch_size=1, context_length=16, seed=5)(0)))
    ctx = torch.stack([c for c, _d, _p in iter_contexts(m.tokenizer, texts, 16, seed=5)])
    ref = m.record(ctx, sites=[site])[site][:, 1:].reshape(-1, m.d_model)
    assert rows.shape == ref.shape
    key = lambda t: t[torch.argsort(t[:, 0])]
    torch.testing.assert_close(key(rows), key(ref))
