"""DiffROAR and BlockMNIST: the spec's synthetic checks, and actlab's attributions against random on digits."""
from __future__ import annotations

import pytest
import torch

import actlab
from actlab.viz.roar import (
    attribution_scores,
    block_digits,
    diffroar,
    keep_mask,
    mlp,
    random_signal_data,
    signal_mass,
)
from actlab.viz.vision import accuracy, digits_cnn, fit_classifier


@pytest.fixture(scope="module")
def synthetic():
    return random_signal_data(1000, seed=0), random_signal_data(500, seed=1)


def test_oracle_diffroar_is_half_and_random_is_zero(synthetic):
    tr, te = synthetic
    r = diffroar(lambda: mlp(50), tr, te, tr.signal.float(), te.signal.float(), 0.1, epochs=10)
    assert r.top > 0.97 and abs(r.bottom - 0.5) < 0.06 and r.diff > 0.4
    diffs = [diffroar(lambda: mlp(50), tr, te, attribution_scores(None, tr, "random", seed=s),
                      attribution_scores(None, te, "random", seed=100 + s), 0.1, epochs=10, seed=s).diff
             for s in range(5)]
    assert abs(sum(diffs) / 5) < 0.05, diffs


def test_signal_mass_oracle_one_random_s_over_d(synthetic):
    tr, _ = synthetic
    assert torch.allclose(signal_mass(tr.signal.float(), tr.signal), torch.ones(len(tr)))
    assert abs(float(signal_mass(attribution_scores(None, tr, "random"), tr.signal).mean()) - 3 / 50) < 0.01


def test_keep_mask_counts_and_order():
    s = torch.tensor([[0.1, -5.0, 0.3, 2.0]])
    assert keep_mask(s, 0.5).tolist() == [[False, True, False, True]]          # magnitudes, not signs
    assert keep_mask(s, 0.5, top=False).tolist() == [[True, False, True, False]]
    with pytest.raises(ValueError, match="fraction"):
        keep_mask(s, 10)


def test_block_digits_layout():
    d = block_digits("test")
    assert d.x.shape[1:] == (1, 16, 8) and d.signal.shape[1:] == (16, 8)
    top = d.signal[:, 0, 0]
    assert 0.3 < float(top.float().mean()) < 0.7                                # both orders occur
    null = d.x[:, 0][~d.signal].view(len(d), 8, 8)
    assert torch.equal(null, null[:1].expand_as(null))                         # the null block is fixed


@pytest.fixture(scope="module")
def block_model():
    tr = block_digits("train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = fit_classifier(digits_cnn(8), tr.x, tr.y, epochs=8, lr=5e-3, batch_size=32)
    te = block_digits("test", seed=1)
    assert accuracy(net, te.x, te.y) > 0.8
    return actlab.wrap(net), tr, te


@pytest.mark.slow
def test_attributions_vs_random_on_block_digits(block_model):
    """IG, grad x input, SmoothGrad and layer masking put more mass on the digit block than random (0.5), and IG
    beats random in DiffROAR (top-20% kept data is far more learnable than bottom-20%, random ~ 0)."""
    m, tr, te = block_model
    sub_te = te.subset(torch.arange(80))
    masses = {meth: float(signal_mass(attribution_scores(m, sub_te, meth), sub_te.signal).mean())
              for meth in ("ig", "grad_x_input", "smoothgrad", "layer_mask", "random")}
    assert abs(masses["random"] - 0.5) < 0.02
    for meth in ("ig", "grad_x_input", "smoothgrad", "layer_mask"):
        assert masses[meth] > 0.6, masses
    a, b = tr.subset(torch.arange(400)), te.subset(torch.arange(200))
    kw = {"epochs": 10, "lr": 5e-3, "batch_size": 32}
    ig = diffroar(lambda: digits_cnn(8), a, b, attribution_scores(m, a, "ig"), attribution_scores(m, b, "ig"), 0.2,
                  **kw)
    rnd = diffroar(lambda: digits_cnn(8), a, b, attribution_scores(None, a, "random"),
                   attribution_scores(None, b, "random", seed=1), 0.2, **kw)
    assert ig.diff > 0.25 and abs(rnd.diff) < 0.15 and ig.diff > rnd.diff + 0.2, (ig, rnd)
