"""Trigger scan on the BadNets digits fixture: finds the planted class (0) and the planted bottom-right 2x2 patch,
with an anomaly index far above 2; the anomaly index itself against a hand computation."""
from __future__ import annotations

import pytest
import torch

from actlab.security import anomaly_index, mask_overlap, scan


def test_anomaly_index_by_hand():
    v = [1.0, 10.0, 11.0, 9.0, 10.0]   # median 10, MAD 1 -> (10 - 1) / 1.4826
    assert anomaly_index(v) == pytest.approx(9 / 1.4826, rel=1e-6)
    with pytest.raises(ValueError, match="at least 3"):
        anomaly_index([1.0, 2.0])


def test_scan_finds_planted_class_and_patch(digits_bd):
    fx = digits_bd
    r = scan(fx.model, fx.x_val, 10, y_clean=fx.y_val)
    # measured: class 0, L1 4.1 vs 10-13.5 for the others, anomaly index 9.2, inverted-trigger ASR 0.98
    assert r.target == fx.cfg.target and r.flagged and r.anomaly_index > 4
    assert mask_overlap(r.trigger, fx.trigger) == 1.0
    assert r.asr.value > 0.9
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        scan(fx.model, fx.x_val[0], 10)
    assert torch.isfinite(torch.tensor(r.l1)).all()
