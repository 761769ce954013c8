"""Induction heads under clamps (training-dynamics.md §1): the identity clamp reproduces the baseline bit for bit,
the ideal previous-token clamp brings the phase change forward, zeroing layer 0's output prevents it.
Calibrated on seeds 0-2 (onset of the previous-token clamp at steps 225-250, none for the baseline or the zero
clamp by step 400: docs/train.md); the full 2,500-step curves are a docs figure, not a test."""
import pytest
import torch

from actlab.train.configs import InductionConfig
from actlab.train.induction import clamp_interventions, make_model, run_induction, train_induction
from actlab.train.toy import repeated_sequences


def test_identity_clamp_reproduces_the_baseline_exactly_and_detached_it_differs(one_thread):
    cfg = InductionConfig(steps=30, eval_every=15, eval_batch=16)
    rep = run_induction(cfg, clamps=("none", "identity"))
    assert rep["checks"]["identity_reproduces_baseline"] is True
    assert rep["runs"]["none"]["loss"][0] != rep["runs"]["none"]["loss"][-1]
    blocked = train_induction(cfg, "identity", grad="block")  # layer-0 q/k get no gradient through the clamp
    assert blocked["loss"][0] == rep["runs"]["none"]["loss"][0] and blocked["loss"] != rep["runs"]["none"]["loss"]


def test_prev_token_clamp_speeds_the_bump_and_zero_clamp_prevents_it(one_thread):
    cfg = InductionConfig(steps=300, eval_every=50, seed=0)
    rep = run_induction(cfg, clamps=("none", "prev_token", "prev_token+zero"))
    runs = rep["runs"]
    assert runs["prev_token"]["onset"] is not None and runs["prev_token"]["onset"] <= 300
    assert runs["none"]["onset"] is None
    assert rep["checks"]["prev_token_earlier"] is True
    # even with the ideal previous-token pattern, zeroing layer 0's output keeps the copy at first-copy loss
    z = runs["prev_token+zero"]
    assert z["onset"] is None and z["second_loss"][-1] > 0.8 * z["first_loss"][-1]
    assert runs["prev_token"]["induction"][-1] > 0.5 > z["induction"][-1]


def test_zero_clamp_sends_no_gradient_to_layer_0_and_prev_clamp_is_exact():
    cfg = InductionConfig()
    m = make_model(cfg)
    x = repeated_sequences(8, cfg.context, cfg.vocab, cfg.min_len, cfg.max_len, torch.Generator().manual_seed(0)).ids
    with m.intervene(clamp_interventions("zero"), grad="block"):
        m(x).logsumexp(-1).sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in m.module.blocks[0].parameters())
    assert m.module.blocks[1].qkv.weight.grad.abs().max() > 0
    with m.intervene(clamp_interventions("zero")), m.recording(["module:blocks.0"]) as rec:
        m(x)
    assert rec["module:blocks.0"].abs().max() == 0  # the lesion writes zeros (not merely a detached value)
    with m.intervene(clamp_interventions("prev_token")), m.recording(["module:blocks.0.pattern"]) as rec:
        m(x)
    p = rec["module:blocks.0.pattern"]
    t = torch.arange(1, cfg.context)
    assert torch.equal(p[:, :, t, t - 1], torch.ones_like(p[:, :, t, t - 1])) and p[:, :, 0, 0].eq(1).all()
    with pytest.raises(ValueError, match="unknown clamp 'half'"):
        clamp_interventions("prev_token+half")
