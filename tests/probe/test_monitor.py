"""Probe monitors during generate(): the streamed per-step scores equal the probe applied to a recording of the
finished sequence, a stop bound ends the row at the first crossing, and a probe of another width is refused."""
from __future__ import annotations

import pytest
import torch

from actlab.probe import LinearProbe, fit_probe, monitor_generate, probe_acts

SITE = "blocks.1.resid_post"


@pytest.fixture
def probe(tiny):
    m = tiny("tiny-gpt2")
    g = torch.Generator().manual_seed(0)
    return LinearProbe(torch.randn(m.d_model, generator=g), 0.1, "mean_diff", site=SITE, model=m.name)


def test_streamed_scores_equal_recorded(tiny, probe):
    m = tiny("tiny-gpt2")
    res = monitor_generate(m, ["hello there", "a"], probe, max_new_tokens=5)
    assert res.scores.shape == (2, 5)
    ids = res.ids
    enc = {"input_ids": ids, "attention_mask": (ids != m.tokenizer.pad_token_id).long()}
    n_prompt = ids.shape[1] - 5
    # pads the model generated itself would be masked above: the byte tokenizer's pad id 0 is never generated here
    acts = m.record(enc, [SITE])[SITE]
    want = probe.score(acts[:, n_prompt - 1:-1])
    torch.testing.assert_close(res.scores, want, atol=1e-4, rtol=1e-4)


def test_stop_at_first_crossing(tiny, probe):
    m = tiny("tiny-gpt2")
    free = monitor_generate(m, "hello there", probe, max_new_tokens=8)
    s = free.scores[0]
    k = int(s[1:].argmax()) + 1
    thr = float(s[k]) - 1e-6
    first = int((s >= thr).nonzero()[0])
    res = monitor_generate(m, "hello there", probe, max_new_tokens=8, stop_above=thr)
    assert res.stopped_at == [first]
    n_new = res.ids.shape[1] - (free.ids.shape[1] - 8)
    assert n_new == first + 1 and torch.equal(res.ids[0], free.ids[0, :res.ids.shape[1]])
    assert free.stopped_at == [-1]


def test_probe_from_another_model_refused(tiny):
    m = tiny("tiny-gpt2")
    p = LinearProbe(torch.randn(32), 0.0, "mean_diff", site=SITE, model="other")
    with pytest.raises(ValueError, match="d_model=32.*d_model=64"):
        monitor_generate(m, "hi", p, max_new_tokens=2)
    p = LinearProbe(torch.randn(64), 0.0, "mean_diff", site="blocks.9.resid_post")
    with pytest.raises(KeyError):
        monitor_generate(m, "hi", p, max_new_tokens=2)


def test_probe_acts_positions_and_training(tiny):
    m = tiny("tiny-gpt2")
    texts = ["abc", "a longer text here", "zz"]
    last = probe_acts(m, texts, SITE, position="last")[SITE]
    mean = probe_acts(m, texts, SITE, position="mean")[SITE]   # one left-padded batch
    for i, t in enumerate(texts):   # batched (left-padded) == one at a time
        a = m.record(t, [SITE])[SITE][0]
        torch.testing.assert_close(last[i], a[-1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(mean[i], a.mean(0), atol=1e-4, rtol=1e-4)
    p = fit_probe(torch.cat([last, last + 1]), [0, 0, 0, 1, 1, 1], "mean_diff", site=SITE)
    assert p.predict(last + 1).all() and not p.predict(last).any()
