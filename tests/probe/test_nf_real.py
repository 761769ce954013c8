"""Neurofeedback on SmolLM2-135M-Instruct (real activations, bundled sentiment set, block 15, mean pooling): the
labels are balanced on the train split, the logistic-regression axis' held-out labels follow the sentiment, reporting
with no example (N = 0, chat prompt) is at chance within its interval, and with 16 plain few-shot examples the model
ranks held-out sentences by their label above chance for every context seed tried (see docs/probe.md)."""
from __future__ import annotations

import pytest

from actlab.probe import nf_reporting, nf_sentences, nf_setup

pytestmark = pytest.mark.real


def test_neurofeedback_smollm2(smollm2):
    m = smollm2
    texts, y = nf_sentences("sentiment")
    s = nf_setup(m, texts, y, "blocks.15.resid_post", n_test=32, pcs=(1, 2))
    for a in ("lr", "pc1", "pc2"):
        assert int(s.labels[a][s.train].sum()) == len(s.train) // 2   # exactly balanced at the train median
    assert float((s.labels["lr"][s.test] == s.y_data[s.test]).float().mean()) >= 0.9
    r0 = nf_reporting(m, s, "lr", (0,), (0,), fmt="chat", n_boot=500)[0]
    assert r0.auroc.lo < 0.5 < r0.auroc.hi
    for r in nf_reporting(m, s, "lr", (16,), (0, 1), fmt="plain", n_boot=500):
        assert r.auroc.lo > 0.5, r
