"""Variance explained per feature: exact R² on a planted representation; the simple feature (x1) explains more
variance than the parity feature in a trained MLP although both are decoded perfectly."""
import pytest
import torch

from actlab.stats.variance import all_bit_patterns, decoding_accuracy, feature_report, joint_labels, variance_explained


def test_planted_r2_exact():
    g = torch.Generator().manual_seed(0)
    f = torch.randint(2, (2000,), generator=g)
    noise = torch.randn(2000, 3, generator=g)
    h = torch.cat([(2.0 * f - 1.0)[:, None] * 3.0, noise], 1)
    # between-class SS = 9 per sample, total = 9 + per-sample noise variance
    expect = 9.0 / (9.0 + float((noise - noise.mean(0)).pow(2).sum(1).mean()) + 9.0 * 0)
    r2 = variance_explained(h, f)
    assert r2 == pytest.approx(expect, rel=0.01)
    assert variance_explained(h, torch.randint(2, (2000,), generator=g)) < 0.01
    assert variance_explained(torch.ones(10, 2), torch.arange(10) % 2) == 0.0
    assert joint_labels(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="labels"):
        variance_explained(h, f[:10])


def test_simple_feature_explains_more_variance(one_thread):
    # Calibrated (docs/stats.md): full-batch Adam lr 3e-3, 300 steps, seeds 0-4 -> 100% accuracy on both features,
    # R²(x1) 0.40-0.69 vs R²(parity) 0.03-0.11 (the spec's minibatch 6k-step setting is ~20x slower here; with
    # minibatch 128 and 1000 steps seeds 0-4 gave ratios 2.4-4.1).
    torch.manual_seed(0)
    x = all_bit_patterns(10)
    f1, f2 = x[:, 0], x[:, 1:5].sum(1) % 2
    y = torch.stack([f1, f2], 1)
    net = torch.nn.Sequential(torch.nn.Linear(10, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU())
    head = torch.nn.Linear(128, 2)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(300):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(net(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        h = net(x)
        acc = ((head(h) > 0).float() == y).float().mean(0)
    assert acc.tolist() == [1.0, 1.0]
    rep = feature_report(h, {"x1": f1.long(), "parity": f2.long()})
    assert rep["r2"]["x1"] > 1.5 * rep["r2"]["parity"]
    assert rep["decoding_accuracy"]["x1"] == 1.0
    assert rep["r2_joint"] >= max(rep["r2"].values())
    assert len(rep["pc_alignment"]["x1"]) == 5
    assert decoding_accuracy(h, f1.long()) == 1.0
