"""Semi-NMF recovers planted sparse neuron-space features; G stays non-negative; loss falls."""
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from actlab.dictionary.snmf import snmf, snmf_run


def planted(seed=0):
    g = torch.Generator().manual_seed(seed)
    d, K, n = 200, 10, 2000
    F = torch.zeros(d, K, dtype=torch.float64)
    for k in range(K):
        rows = torch.randperm(d, generator=g)[:2]
        F[rows, k] = torch.randn(2, generator=g, dtype=torch.float64).sign() * (1 + torch.rand(2, generator=g, dtype=torch.float64))
    G = (torch.rand(n, K, generator=g, dtype=torch.float64) < 0.2) * torch.rand(n, K, generator=g, dtype=torch.float64)
    A = F @ G.t() + 0.01 * torch.randn(d, n, generator=g, dtype=torch.float64)
    return A, F


def test_planted_recovery_kmeans_best_of_5():
    A, F = planted()
    res = snmf(A, 10, restarts=5, iters=100, sparsity=0.01, init="kmeans")
    cos = torch.nn.functional.normalize(F, dim=0).t() @ torch.nn.functional.normalize(res.F, dim=0)
    r, c = linear_sum_assignment(-cos.abs().numpy())
    matched = cos.abs()[r, c]
    good = matched > 0.95
    assert int(good.sum()) >= 7
    assert float(matched[good].mean()) >= 0.95
    assert bool((res.G >= 0).all())


def test_loss_falls_and_bad_input():
    A, _ = planted(1)
    run = snmf_run(A, 10, iters=60, init="svd")
    assert run.history[49] < run.history[0]       # a single run's loss (not the best-so-far) falls over 50 iterations
    assert len(run.g_min) == 60 and min(run.g_min) >= 0  # G >= 0 at every iteration (spec), not only at the end
    for init in ("kmeans", "random"):
        assert min(snmf_run(A, 10, iters=20, init=init).g_min) >= 0
    with pytest.raises(ValueError, match="neurons, tokens"):
        snmf_run(A[0], 3)
