"""Linear probes: logistic equals scikit-learn's LogisticRegression, planted directions recovered by every method,
AUROC/bootstrap/CV against references, artifact round trip, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actlab.probe import (
    LinearProbe,
    auroc,
    bootstrap_auroc,
    cross_validate,
    evaluate,
    fit_probe,
    stratified_folds,
    wilson,
)


def planted(n=400, d=16, sep=1.5, seed=0, cov=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    if cov:
        u[1] = 2.0   # much of the signal lies on the noisy axis
    u /= u.norm()
    y = (torch.arange(n) % 2).long()
    x = torch.randn(n, d, generator=g)
    if cov:   # anisotropic noise: a large-variance nuisance axis that LDA must whiten away
        x[:, 1] *= 6.0
    x += sep * (2 * y[:, None].float() - 1) * u
    if cov:   # the Bayes-optimal direction is Sigma^-1 u
        u = u.clone()
        u[1] /= 36.0
        u /= u.norm()
    return x, y, u


def test_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    x, y, _ = planted(sep=0.6)
    for C in (1.0, 0.05):
        p = fit_probe(x, y, "logistic", C=C)
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(x.double().numpy(), y.numpy())
        np.testing.assert_allclose(p.w.numpy(), ref.coef_[0], rtol=1e-3, atol=1e-4)
        assert abs(p.b - ref.intercept_[0]) < 1e-4
        np.testing.assert_allclose(p.score(x).numpy(), ref.decision_function(x.double().numpy()), atol=1e-3)


@pytest.mark.parametrize("method", ["logistic", "mean_diff", "lda"])
def test_planted_direction_recovered(method):
    x, y, u = planted(cov=method == "lda")
    p = fit_probe(x, y, method)
    cos = float(torch.nn.functional.cosine_similarity(p.w, u, dim=0))
    assert cos > 0.9, cos
    assert (p.predict(x) == y.bool()).float().mean() > 0.85


def test_lda_beats_mean_diff_under_anisotropic_noise():
    x, y, u = planted(cov=True, sep=0.5, n=2000)
    xt, yt, _ = planted(cov=True, sep=0.5, seed=1, n=2000)
    lda, md = fit_probe(x, y, "lda"), fit_probe(x, y, "mean_diff")
    cos = lambda w: float(torch.nn.functional.cosine_similarity(w, u, dim=0))
    assert cos(lda.w) > 0.9 and cos(lda.w) > cos(md.w) + 0.05
    assert auroc(lda.score(xt), yt) > auroc(md.score(xt), yt) + 0.02


def test_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(0)
    s = g.integers(0, 5, 200).astype(float)
    y = g.integers(0, 2, 200)
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc(-s, y) == pytest.approx(1 - roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_interval_brackets_and_shrinks():
    x, y, u = planted(sep=0.3)
    s = x @ u
    small = bootstrap_auroc(s[:80], y[:80], n_boot=500)
    big = bootstrap_auroc(s, y, n_boot=500)
    assert small.lo <= small.value <= small.hi and big.lo <= big.value <= big.hi
    assert (big.hi - big.lo) < (small.hi - small.lo)


def test_wilson_interval():
    w = wilson(0, 50)
    assert w.value == 0 and w.lo == pytest.approx(0, abs=1e-12) and w.hi == pytest.approx(0.0713, abs=1e-3)
    w = wilson(50, 100)
    assert w.lo == pytest.approx(0.4038, abs=1e-3) and w.hi == pytest.approx(0.5962, abs=1e-3)
    with pytest.raises(ValueError, match="n > 0"):
        wilson(0, 0)


def test_cross_validation_and_controls():
    x, y, _ = planted(sep=1.5)   # Bayes AUROC Phi(3 / sqrt 2) = 0.983
    ev = cross_validate(x, y, "logistic", folds=5, n_boot=300)
    assert ev.auroc.value > 0.9 and ev.auroc.lo > 0.85
    assert abs(ev.controls["shuffled_labels_auroc"] - 0.5) < 0.12
    folds = stratified_folds(y, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))
    # out-of-fold scores: a probe trained on all rows scores its own rows better than CV does on pure noise
    xn = torch.randn(200, 64)
    yn = torch.arange(200) % 2
    assert cross_validate(xn, yn, "logistic", n_boot=100).auroc.value < 0.65


def test_shuffled_labels_kill_the_probe():
    x, y, _ = planted(sep=1.0)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    assert cross_validate(x, y[perm], "mean_diff", n_boot=100, controls=False).auroc.value < 0.65


def test_save_load_round_trip(tmp_path):
    x, y, _ = planted()
    p = fit_probe(x, y, "lda", site="blocks.1.resid_post", model="tiny", position="last")
    p.threshold = 0.25
    q = LinearProbe.load(p.save(tmp_path / "probe"))
    assert torch.equal(q.w, p.w) and q.b == p.b and q.site == p.site and q.threshold == 0.25 and q.method == "lda"
    ev = evaluate(q, x, y, n_boot=100)
    assert ev.auroc.value > 0.95


def test_bad_input():
    x, y, _ = planted(d=16)
    with pytest.raises(ValueError, match="one class"):
        fit_probe(x, torch.zeros(len(y)), "logistic")
    with pytest.raises(ValueError, match="0/1"):
        fit_probe(x, y * 3, "mean_diff")
    with pytest.raises(ValueError, match="labels"):
        fit_probe(x, y[:-1], "lda")
    with pytest.raises(ValueError, match="unknown probe method"):
        fit_probe(x, y, "svm")
    p = fit_probe(x, y, "mean_diff", site="blocks.0.resid_post")
    with pytest.raises(ValueError, match="d_model=16.*width 8"):
        p.score(torch.randn(3, 8))
    with pytest.raises(ValueError, match="at least k examples per class"):
        cross_validate(x[:6], y[:6], folds=5)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_probe(bad, y)


def test_bootstrap_resamples_both_classes():
    """Swapping the roles of the classes (scores negated) leaves the AUROC's uncertainty unchanged: an interval that
    resampled one class only would be narrow one way round and wide the other."""
    g = torch.Generator().manual_seed(5)
    s = torch.cat([torch.randn(200, generator=g) + 1.0, torch.randn(20, generator=g)])
    y = torch.tensor([1] * 200 + [0] * 20)
    a = bootstrap_auroc(s, y, n_boot=2000)
    b = bootstrap_auroc(-s, 1 - y, n_boot=2000)
    assert a.value == pytest.approx(b.value)
    ratio = (a.hi - a.lo) / (b.hi - b.lo)
    assert 0.7 < ratio < 1.4, ratio
