"""Soft-prompt maximisation on a tiny causal LM, with the nearest tokens reported."""
from __future__ import annotations

import pytest
import torch

from actlab.viz.objectives import Unit
from actlab.viz.text import soft_prompt


def test_zero_steps_report_the_starting_tokens(tiny):
    m = tiny("tiny-gpt2")
    ids = [65, 66, 67]
    r = soft_prompt(m, Unit(neuron=70), n_tokens=3, steps=0, init_ids=ids)
    assert r.nearest_ids[:, 0].tolist() == ids
    assert torch.allclose(r.similarity[:, 0], torch.ones(3), atol=1e-5)
    assert len(r.nearest) == 3 and len(r.nearest[0]) == 5


def test_embedding_direction_recovers_the_planted_token(tiny):
    """Maximising <embed at the last position, W_E[k]> must land nearest token k there."""
    m = tiny("tiny-gpt2")
    k = 90
    d = m.adapter.W_E[k].detach().clone()
    r = soft_prompt(m, Unit("embed", direction=d), n_tokens=2, steps=60, lr=0.1, init_ids=[65, 66])
    assert int(r.nearest_ids[-1, 0]) == k
    assert int(r.nearest_ids[0, 0]) == 65  # the first position does not enter the objective


def test_logit_rises_and_errors(tiny):
    m = tiny("tiny-gpt2")
    r = soft_prompt(m, Unit(neuron=100), n_tokens=3, steps=30, lr=0.05, seed=1)
    assert r.value > r.trace[0] + 0.5
    with pytest.raises(ValueError, match="init_ids"):
        soft_prompt(m, Unit(neuron=1), steps=0, init_ids=[10 ** 9])
