"""Logit lens: the last layer reads out the model's own logits; an identity tuned lens is the logit lens; batched
rows equal one-at-a-time runs; models without an unembedding refuse with Unsupported."""
from pathlib import Path

import pytest
import torch

from actlab import load_model
from actlab.lens import TunedLens, logit_lens, readout, resid_sites
from actlab.models import Unsupported

from .conftest import CAUSAL, TEXTS


@pytest.mark.parametrize("name", CAUSAL)
def test_last_layer_is_the_models_logits(biased, name):
    m = biased(name)
    r = logit_lens(m, TEXTS)
    real = r.mask
    torch.testing.assert_close(r.logits[-1][real], r.final_logits[real], atol=1e-4, rtol=1e-5)
    assert r.kl[-1][real].abs().max() < 1e-5
    assert (r.rank[-1][real] == 0).all()
    # the earlier layer is a different distribution (the lens is not reading the last layer everywhere)
    assert r.mean_kl()[0] > 1e-4
    # independently of record(): unembed(final_norm(h_last)) == the HF forward's logits
    enc = m.tokenize(TEXTS)
    out = m(enc).logits
    h = m.record(enc, f"blocks.{m.n_layers - 1}.resid_post")[f"blocks.{m.n_layers - 1}.resid_post"]
    torch.testing.assert_close(readout(m, h)[enc["attention_mask"].bool()], out[enc["attention_mask"].bool()],
                               atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_identity_tuned_lens_equals_logit_lens(biased, name):
    m = biased(name)
    lens = TunedLens.for_model(m)
    a = logit_lens(m, TEXTS)
    b = logit_lens(m, TEXTS, lens=lens)
    torch.testing.assert_close(a.logits, b.logits)
    assert b.lens == "tuned"


@pytest.mark.parametrize("name", CAUSAL)
def test_batched_equals_one_at_a_time(biased, name):
    m = biased(name)
    sites = resid_sites(m) + ["blocks.0.resid_pre", "blocks.1.attn_out"]
    batch = logit_lens(m, TEXTS, sites)
    for i, t in enumerate(TEXTS):
        one = logit_lens(m, t, sites)
        n = int(one.mask.sum())
        torch.testing.assert_close(batch.logits[:, i, -n:], one.logits[:, 0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batch.kl[:, i, -n:], one.kl[:, 0], atol=1e-4, rtol=1e-3)


def test_translator_is_applied(biased):
    """A non-identity translator changes the read-out by exactly h @ W + b."""
    m = biased("tiny-llama")
    lens = TunedLens.for_model(m, ["blocks.0.resid_post"])
    with torch.no_grad():
        lens.weight["blocks_0_resid_post"].mul_(2.0)
        lens.bias["blocks_0_resid_post"].add_(0.5)
    r = logit_lens(m, TEXTS[:1], "blocks.0.resid_post", lens=lens)
    h = m.record(TEXTS[:1], "blocks.0.resid_post")["blocks.0.resid_post"]
    torch.testing.assert_close(r.logits[0], readout(m, 2.0 * h + 0.5).float())


def test_errors(biased):
    m = biased("tiny-gpt2")
    with pytest.raises(ValueError, match="d_model=64"):
        logit_lens(m, TEXTS, "blocks.0.mlp_act")
    with pytest.raises(KeyError, match="no translator"):
        logit_lens(m, TEXTS, "blocks.1.resid_post", lens=TunedLens.for_model(m, ["blocks.0.resid_post"]))
    with pytest.raises(Unsupported, match="bert: no unembedding"):
        logit_lens(load_model("tiny-bert"), TEXTS)


def test_token_table_and_plot(biased, tmp_path):
    m = biased("tiny-gpt2")
    r = logit_lens(m, TEXTS)
    table = r.token_table(m.tokenizer, row=0, k=3)
    assert table.count("\n") == len(r.sites) + 2 and "blocks.1.resid_post" in table
    with pytest.raises(ValueError, match="padding"):
        r.token_table(m.tokenizer, row=1, position=0)
    p = r.plot(str(tmp_path / "lens.png"))
    assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
