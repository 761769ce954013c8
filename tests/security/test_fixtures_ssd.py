"""BadNets digits fixture (CA close to clean, ASR > 95%, cached as an artifact) and SSD: the spec's property tests,
bad input, and the corrective-unlearning run (defaults leave the backdoor; the CA-budgeted selection removes it)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from actlab.security import (
    BackdoorConfig,
    dampen,
    digits_backdoor,
    importances,
    patch_trigger,
    select_ssd,
    ssd,
)


def test_fixture_planted_backdoor_and_cache(digits_bd, fixture_cache):
    fx = digits_bd
    assert fx.metrics["ca"].value > 0.95 and fx.metrics["asr"].value > 0.95
    assert int(fx.poisoned.sum()) == round(0.1 * len(fx.y_train))
    assert (fx.y_train[fx.poisoned] == 0).all()
    again = digits_backdoor(BackdoorConfig(), cache=fixture_cache)   # loads the artifact: same weights
    for (n, a), (_, b) in zip(fx.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), n


def test_trigger_bad_input():
    with pytest.raises(ValueError, match="does not fit in a 8x8 image"):
        patch_trigger((1, 8, 8), 9)
    t = patch_trigger((1, 8, 8), 2)
    with pytest.raises(ValueError, match="cannot stamp"):
        t.stamp(torch.zeros(3, 1, 16, 16))
    assert t.mask.sum() == 4 and t.stamp(torch.zeros(1, 1, 8, 8))[0, 0, 7, 7] == 1.0


def _mlp_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m, x, y


def test_ssd_properties():
    m, x, y = _mlp_data()
    i_d = importances(m, x, y, batch_size=64)
    i_f = importances(m, x[:40], y[:40], batch_size=64)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    out = {}
    for lam in (1.0, 0.1):
        mm = copy.deepcopy(m)
        st = dampen(mm, i_d, i_f, alpha=0.5, lam=lam)
        assert st.selected > 0 and st.min_beta <= 1.0
        for n, p in mm.named_parameters():   # every beta <= 1: no weight grows
            assert (p.abs() <= before[n].abs() + 1e-7).all()
        out[lam] = mm
    for (n, a), (_, b) in zip(out[1.0].named_parameters(), out[0.1].named_parameters()):   # higher lambda, less
        assert (a.abs() >= b.abs() - 1e-7).all()
    mm = copy.deepcopy(m)
    assert dampen(mm, i_d, i_f, alpha=float("inf")).selected == 0
    assert all(torch.equal(p, before[n]) for n, p in mm.named_parameters())
    # D_f = D (same batches): I_Df == I_D, nothing exceeds alpha * I_D for alpha >= 1
    _, st = ssd(m, x, y, x, y, alpha=1.0)
    assert st.selected == 0


def test_ssd_bad_input():
    m, x, y = _mlp_data()
    with pytest.raises(ValueError, match="forget set is empty"):
        ssd(m, x[:0], y[:0], x, y)
    with pytest.raises(ValueError, match="forget set is empty"):
        select_ssd(m, x[:0], y[:0], x, y, x, y)
    with pytest.raises(ValueError, match="alpha and lambda"):
        dampen(m, {}, {}, alpha=-1)


def test_ssd_corrective_unlearning_digits(digits_bd):
    fx = digits_bd
    forget = fx.poisoned.nonzero().flatten()[:30]   # a quarter of the poisoned rows identified
    xf, yf = fx.x_train[forget], fx.y_train[forget]
    ca0, asr0 = fx.ca().value, fx.asr().value
    default, _ = ssd(fx.model, xf, yf, fx.x_train, fx.y_train)          # paper defaults alpha=10, lambda=1
    assert fx.asr(default).value > 0.8                                    # ... leave the backdoor in place
    m, sel = select_ssd(fx.model, xf, yf, fx.x_train, fx.y_train, fx.x_val, fx.y_val, ca_budget=0.02)
    asr, ca = fx.asr(m), fx.ca(m)
    # measured: alpha 1, lambda 0.5 -> ASR 0.07, CA 0.969 (from 0.988 / 0.981)
    assert asr.value < 0.3 and asr.value < asr0 - 0.6
    assert ca.value >= ca0 - 0.03
    assert sel.alpha < 10 and all(r["retain_acc"] >= sel.base_retain_acc - 0.02 for r in sel.rows
                                  if r["alpha"] == sel.alpha and r["lambda"] == sel.lam)
