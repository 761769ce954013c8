"""Massive activations: exact detection of a planted value, nothing on noise, the two-clause rule, and zero vs
mean patching on a toy model."""
import pytest
import torch

from actlab import Fn
from actlab.stats.massive import (LayerMassive, MassivePatch, ablation_test, detect_massive, first_massive_layer,
                                  mask_channels, massive_mask)


def test_planted_value_found_exactly():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(64, 256, generator=g)
    h[0, 7] = 2000.0
    assert detect_massive(h) == {(0, 7)}
    h[3, 9] = -2000.0          # sign does not matter: |h| is used
    assert detect_massive(h) == {(0, 7), (3, 9)}


def test_nothing_on_pure_noise_and_second_clause():
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        assert detect_massive(torch.randn(64, 256, generator=g)) == set()
    h = 50.0 * torch.randn(64, 256, generator=g)
    h[5, 5] = 150.0            # passes |h| > 100 but not |h| >= 1000 * median
    assert (h.abs() > 100).sum() > 0
    assert detect_massive(h) == set()


def test_median_is_per_sequence():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 16, 32, generator=g)
    h[1] *= 1000.0             # a loud second sequence must not hide the first one's planted value
    h[0, 0, 3] = 5000.0
    m = massive_mask(h)
    assert m[0].nonzero().tolist() == [[0, 3]]
    assert not m[1].any()


def test_bad_shape_message():
    with pytest.raises(ValueError, match="one sequence"):
        detect_massive(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="'zero' or 'mean'"):
        MassivePatch(mode="half")


def test_layer_accumulator_tables():
    g = torch.Generator().manual_seed(3)
    acc = LayerMassive(d=32, top_k=3)
    for b in range(3):
        h = torch.randn(4, 16, 32, generator=g)
        h[:, 0, 5] = 900.0 + b
        ids = torch.arange(16).repeat(4, 1)
        acc.update(h, ids)
    s = acc.summary()
    assert s["n_seq"] == 12 and s["frac_seq_with_massive"] == 1.0
    assert s["recurring_channels"] == [5] and s["top_positions"] == [(0, 12)]
    assert s["top"][0]["channel"] == 5 and s["top"][0]["magnitude"] == pytest.approx(902.0)
    assert acc.channel_means()[5] == pytest.approx(901.0)
    assert torch.isnan(acc.channel_means()[4])
    assert first_massive_layer([{"frac_seq_with_massive": 0.0}, s]) == 1
    x = torch.ones(3, 32)
    assert mask_channels(x, [5])[:, 5].eq(0).all() and mask_channels(x, [5]).sum() == 3 * 31


def _plant(act, ctx):
    """A big first-token bias on channel 7 that varies slightly with the input (so 'set to mean' is not a no-op)."""
    out = act.clone()
    out[:, 0, 7] += 1000.0 + 20.0 * torch.tanh(100.0 * act[:, 1:, 1].mean(1))
    return out


def test_zero_vs_mean_patching_on_toy(tiny, one_thread):
    m = tiny("tiny-llama")
    site = "blocks.0.resid_post"
    texts = ["the cat sat on the mat", "a quick brown fox jumps", "hello world, how are you", "massive bias test one",
             "another sentence of text", "numbers 12345 and more"]
    ids = m.tokenize(texts)["input_ids"][:, -8:]                 # equal-length rows, no padding
    ids[:, 0] = 1
    acc = LayerMassive(m.d_model)
    with m.intervene({site: Fn(fn=_plant)}):
        h = m.record(ids, [site])[site]
        acc.update(h, ids)
        assert all(detect_massive(h[i]) == {(0, 7)} for i in range(len(ids)))
        res = ablation_test(m, site, ids, acc.channel_means(), batch_size=3)
    assert res.logit_change_mean > 0                      # mean patching does something ...
    assert res.logit_change_zero > 10 * res.logit_change_mean   # ... but far less than zeroing
    assert abs(res.ppl_mean - res.ppl_base) < abs(res.ppl_zero - res.ppl_base)
