"""TIJO on the dual-key VQA toy: the fixture really is dual-key (both keys fire, either alone does not); the joint
inversion singles out the planted target and word with a trigger that transfers to held-out pairs; unimodal
inversions stay high; the clean twin has no outlier; bad input raises."""
from __future__ import annotations

import pytest
import torch

from actlab.security import DualKeyConfig, TijoConfig, dualkey_fixture, invert_dual, tijo

N = 400   # clean pairs the inversion sees (held-out test pairs measure the inverted trigger)


def test_dualkey_fixture_is_dual_key(dualkey_bd, dualkey_clean, fixture_cache):
    r = dualkey_bd.metrics
    # measured: CA 0.953, both keys 1.000, image key only 0.009, text key only 0.009
    assert r["ca"].value > 0.9 and r["asr_both"].value > 0.95
    assert r["asr_image_only"].value < 0.1 and r["asr_text_only"].value < 0.1
    c = dualkey_clean.metrics
    assert c["ca"].value > 0.9 and c["asr_both"].value < 0.2
    again = dualkey_fixture(DualKeyConfig(), cache=fixture_cache)   # loads the artifact: same weights
    for (n, a), (_, b) in zip(dualkey_bd.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), n


def test_tijo_singles_out_target_and_word(dualkey_bd):
    fx = dualkey_bd
    r = tijo(fx.model, fx.x_train[:N], fx.q_train[:N], 10, held_out=(fx.x_test, fx.q_test, fx.a_test))
    # measured: target 3 loss 0.12 vs 3.3-4.7 for the others, anomaly index 5.4, word 7, held-out ASR 1.00
    assert r.target == fx.cfg.target and r.best.token == fx.cfg.key_token and r.flagged
    others = [v for t, v in enumerate(r.losses) if t != r.target]
    assert r.best.loss < 0.5 and min(others) > 2.0 and r.anomaly_index > 3
    assert r.asr is not None and r.asr.value > 0.9


def test_tijo_clean_twin_has_no_outlier(dualkey_clean, dualkey_bd):
    fx = dualkey_clean
    r = tijo(fx.model, fx.x_train[:N], fx.q_train[:N], 10)
    # measured: losses 3.4-5.9, anomaly index 1.5
    assert not r.flagged and min(r.losses) > 2.0 and r.anomaly_index < 3


def test_unimodal_inversions_stay_high(dualkey_bd):
    fx = dualkey_bd
    x, q, t = fx.x_train[:N], fx.q_train[:N], fx.cfg.target
    joint = invert_dual(fx.model, x, q, t)
    vis = invert_dual(fx.model, x, q, t, text=False)
    txt = invert_dual(fx.model, x, q, t, visual=False)
    # measured: joint 0.12, visual only 2.3, text only 7.8 (word 7 found, but the image key is missing)
    assert joint.loss < 0.5 and vis.loss > 1.5 and txt.loss > 1.5
    assert vis.token == -1 and float(txt.mask.sum()) == 0.0


def test_tijo_bad_input(dualkey_bd):
    fx = dualkey_bd
    with pytest.raises(ValueError, match="as many questions"):
        tijo(fx.model, fx.x_train[:10], fx.q_train[:9], 10)
    with pytest.raises(ValueError, match="slot 4 is outside"):
        invert_dual(fx.model, fx.x_train[:10], fx.q_train[:10], 0, TijoConfig(slot=4))
    with pytest.raises(ValueError, match=">= 3 candidate"):
        tijo(fx.model, fx.x_train[:10], fx.q_train[:10], 2)
    with pytest.raises(TypeError, match="dual-input model"):
        tijo(torch.nn.Linear(2, 2), fx.x_train[:10], fx.q_train[:10], 10)
    with pytest.raises(ValueError, match="key_token"):
        DualKeyConfig(key_token=12)
