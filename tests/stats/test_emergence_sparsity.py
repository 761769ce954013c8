"""Curve-fit parameter recovery on Pythia's checkpoint grid; sparsity metric and the Top-k intervention."""
import numpy as np
import pytest
import torch

from actlab.stats.emergence import EXP_LOG, CurveFamily, exp_log_curve, fit_curve, pythia_steps
from actlab.stats.sparsity import SparsityStats, TopK, active_fraction, flop_savings, topk_mask


def test_curve_fit_recovers_parameters():
    t = pythia_steps()
    assert len(t) == 154
    true = dict(A=40.0, lam=2e-5, log_tau=np.log(3000.0), t0=500.0, K=5.0)
    y = exp_log_curve(t, **true)
    rng = np.random.default_rng(0)
    fit = fit_curve(t, y * (1 + 0.02 * rng.standard_normal(len(t))))
    assert fit.r2 > 0.95
    for k in ("A", "lam", "log_tau", "K"):
        assert fit.params[k] == pytest.approx(true[k], rel=0.1), k
    assert np.allclose(fit.predict(t), y, rtol=0.05, atol=0.5)


def test_curve_family_is_pluggable_and_checks_input():
    lin = CurveFamily(lambda t, a, b: a * t + b, ("a", "b"), lambda t, y: ([[1.0, 0.0]], ([-np.inf] * 2, [np.inf] * 2)))
    t = np.arange(10.0)
    fit = fit_curve(t, 3 * t + 1, lin, "linear")
    assert fit.params["a"] == pytest.approx(3.0) and fit.r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal length"):
        fit_curve(t, t[:5], EXP_LOG)


def test_active_fraction_exact():
    a = -torch.rand(8, 100)
    for r in range(8):
        a[r, torch.randperm(100)[: r + 3]] = torch.rand(r + 3) + 0.1
    assert torch.allclose(active_fraction(a), (torch.arange(8) + 3) / 100.0)
    st = SparsityStats(100)
    st.update(a[:4])
    st.update(a[4:])
    assert st.mean == pytest.approx(float(((torch.arange(8) + 3) / 100.0).mean()))
    # GELU-like: tiny nonzero values count only above eps
    b = torch.full((2, 10), 1e-4)
    b[:, :2] = 1.0
    assert active_fraction(b).tolist() == [1.0, 1.0]
    assert torch.allclose(active_fraction(b, eps=1e-2), torch.tensor([0.2, 0.2]))
    assert flop_savings(0.25, gated=True) == {"down_proj": 0.75, "mlp_total": 0.25}


def test_topk_exact_count_ties_and_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(16, 64, generator=g)
    a[0] = 1.0                                       # all tied: lowest indices win
    m = topk_mask(a, 5)
    assert (m.sum(1) == 5).all()
    assert m[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    x = a.clone().requires_grad_(True)
    TopK(k=5).edit(x, None).sum().backward()
    assert torch.equal(x.grad, m)                    # gradient flows only through the kept entries
    with pytest.raises(ValueError, match="k must be >= 1"):
        TopK(k=0)


def test_topk_on_model_mlp(tiny, one_thread):
    m = tiny("tiny-llama")
    site = "blocks.1.mlp_act"
    with m.intervene({site: TopK(k=7, by="abs")}):
        act = m.record("sparse mlp please", [site])[site]
    assert ((act != 0).sum(-1) == 7).all()
    with pytest.raises(ValueError, match="exceeds the width"):
        with m.intervene({site: TopK(k=10_000)}):
            m.record("x", [site])


def test_lazy_neurons_sparsity_falls_during_training(one_thread):
    """Spec section 2 (Lazy Neuron): on random labels, Adam at lr 1e-2 lowers the non-zero fraction of the ReLU
    units from ~50% by more than 5 points (measured: 50.1% -> 35% by step 300); plain SGD leaves it near 50%."""
    from actlab.stats.lazy import lazy_neuron_toy

    adam = lazy_neuron_toy("adam", lr=1e-2, steps=300, record_every=100)
    assert adam.steps == [0, 100, 200, 300]
    assert 0.45 < adam.active_frac[0] < 0.55                  # ReLU of a random layer: about half fire
    g = torch.Generator().manual_seed(0)                       # the same data and initialisation, measured here
    torch.manual_seed(0)
    x = torch.randn(4000, 64, generator=g)
    l1 = torch.nn.Linear(64, 512)
    with torch.no_grad():
        assert adam.active_frac[0] == pytest.approx(float((l1(x) > 0).float().mean()), abs=1e-6)
    assert adam.drop > 0.05 and adam.active_frac[-1] < 0.45
    sgd = lazy_neuron_toy("sgd", lr=0.05, steps=300, record_every=300)
    assert sgd.active_frac[0] == pytest.approx(adam.active_frac[0])   # same seed, same initialisation
    assert abs(sgd.drop) < 0.02
    with pytest.raises(ValueError, match="optimizer"):
        lazy_neuron_toy("rmsprop")
