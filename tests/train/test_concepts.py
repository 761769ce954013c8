"""Concept-space trajectories and hidden capabilities on the spec's planted generator (§2): over-prompting shows an
earlier onset and a positive elicitation gap in between; stronger concept signal is learned first; classifiers
refuse real data that lacks a combination."""
import pytest
import torch

from actlab.train.concepts import ConceptClassifiers, kappa, run_concepts
from actlab.train.configs import ConceptConfig

FAST = {"n_checkpoints": 16, "samples": 100}


def test_over_prompting_shows_an_earlier_onset_and_a_positive_gap():
    cfg = ConceptConfig(**FAST)
    rep = run_concepts(cfg)
    plain, over = rep["onset"]["plain"], rep["onset"]["over"]
    assert over is not None and plain is not None and over < plain
    # closed form: the held-out (1, 1) needs kappa * (1 - mix) * scale > theta
    need = {m: cfg.theta / ((1 - cfg.mix) * s) for m, s in (("plain", 1.0), ("over", cfg.over_scale))}
    steps = rep["steps"]
    for m, s in (("plain", plain), ("over", over)):
        i = steps.index(s)
        assert kappa(s, cfg) > need[m] * 0.9 and (i == 0 or kappa(steps[i - 1], cfg) < need[m] * 1.1)
    between = [g for s, g in zip(steps, rep["gap"]) if over <= s < plain]
    assert between and min(between) > 0 and rep["checks"]["max_gap"] > 0.5
    assert rep["gap"][-1] == pytest.approx(0.0, abs=0.05) and rep["gap"][0] == 0.0  # no gap before or after


def test_no_over_prompting_no_gap_and_signal_sets_learning_order():
    same = run_concepts(ConceptConfig(over_scale=1.0, **FAST))
    assert max(abs(g) for g in same["gap"]) <= 0.1  # same conditioning: only sampling noise
    order = run_concepts(ConceptConfig(signal=(2.0, 1.0), **FAST))["first_on"]
    assert order["concept0"] < order["concept1"]


def test_classifiers_need_every_combination():
    c = torch.tensor([[0, 0], [1, 0], [0, 1]], dtype=torch.float64).repeat(10, 1)
    with pytest.raises(ValueError, match="every combination"):
        ConceptClassifiers(c, c)
