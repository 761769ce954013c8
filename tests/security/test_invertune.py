"""InverTune on the CLIP-like digits toy (MiniLM captions): the adversarial-landing histogram peaks at the planted
target (and not on the clean twin), the inverted trigger is the planted corner patch with high ASR on the original
encoder, and activation tuning removes the real backdoor with zero-shot accuracy kept; bad input raises."""
from __future__ import annotations

import pytest
import torch

from actlab.security import (
    ClipConfig,
    InverTuneConfig,
    activation_tune,
    additive_rate,
    cluster_units,
    identify_target,
    invert_trigger,
    invertune,
)


def test_clip_fixture_backdoor(clip_bd, clip_clean):
    # measured: CA 0.981, ASR 1.000; clean twin CA 0.983, ASR 0.000
    assert clip_bd.metrics["ca"].value > 0.95 and clip_bd.metrics["asr"].value > 0.95
    assert clip_clean.metrics["ca"].value > 0.95 and clip_clean.metrics["asr"].value < 0.1
    assert clip_bd.text.shape == (10, 384) and torch.allclose(clip_bd.text.norm(dim=1), torch.ones(10))


def test_landing_histogram_peaks_at_target(clip_bd, clip_clean):
    est = identify_target(clip_bd.encoder, clip_bd.text, clip_bd.x_val)
    # measured: 95 of 194 flipped images land in class 3 (next: 26), anomaly index 8.1
    assert est.target == clip_bd.cfg.target and est.flagged and est.anomaly_index > 4
    assert est.shares[est.target] > 2 * sorted(est.shares)[-2]
    clean = identify_target(clip_clean.encoder, clip_clean.text, clip_clean.x_val)
    assert not clean.flagged   # measured: anomaly index 1.5, largest share 0.18


def test_inverted_trigger_is_the_patch_and_tuning_removes_backdoor(clip_bd):
    fx, cfg = clip_bd, InverTuneConfig()
    t = fx.cfg.target
    delta, rate = invert_trigger(fx.encoder, fx.text, fx.x_val, t, cfg)
    # measured: the whole norm sits on the planted 2x2 corner, rate 1.00 on the clean set, 0.99 on held-out test
    assert float(delta[0, -2:, -2:].norm() / delta.norm()) > 0.8 and rate > 0.8
    assert additive_rate(fx.encoder, fx.text, fx.x_test, fx.y_test, delta, t).value > 0.8
    units, purity = cluster_units(fx.encoder, fx.x_val, delta, cfg.units)
    assert len(units) == 16 and purity > 0.8
    new = activation_tune(fx.encoder, fx.x_val, delta, units, cfg)
    # measured: real-patch ASR 1.000 -> 0.050, CA 0.981 -> 0.972
    assert fx.asr(new).value < 0.1 and fx.ca(new).value > fx.ca().value - 0.03
    assert fx.asr().value > 0.95   # the original encoder is untouched


def test_inverted_trigger_weak_on_clean_twin(clip_clean):
    fx = clip_clean
    _, rate = invert_trigger(fx.encoder, fx.text, fx.x_val, 3)
    assert rate < 0.4   # measured: 0.13


def test_invertune_bad_input(clip_bd):
    fx = clip_bd
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        identify_target(fx.encoder, fx.text, fx.x_val[0])
    with pytest.raises(ValueError, match="target 12"):
        invert_trigger(fx.encoder, fx.text, fx.x_val, 12)
    with pytest.raises(ValueError, match="units share"):
        cluster_units(fx.encoder, fx.x_val, torch.zeros(1, 8, 8), 0.0)
    with pytest.raises(ValueError, match="faint"):
        ClipConfig(faint=0.0)


def test_invertune_rounds_continue_only_while_the_trigger_works(clip_bd):
    fx = clip_bd
    quick = {"pgd_steps": 2, "trigger_steps": 30, "tune_steps": 5}
    r = invertune(fx.encoder, fx.text, fx.x_val, InverTuneConfig(rounds=3, stop_rate=0.0, **quick))
    assert [x["tuned"] for x in r.extra["rounds"]] == [True, True, True]   # stop_rate 0: every round tunes
    r = invertune(fx.encoder, fx.text, fx.x_val, InverTuneConfig(rounds=3, stop_rate=1.01, **quick))
    assert [x["tuned"] for x in r.extra["rounds"]] == [True, False]        # unreachable rate: stop after round 0
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        invertune(fx.encoder, fx.text, fx.x_val, InverTuneConfig(rounds=0))
