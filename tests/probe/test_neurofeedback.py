"""Neurofeedback helpers: the probes.md §3 sanity checks on synthetic activations."""
from __future__ import annotations

import pytest
import torch

from actlab.probe import control_effect, lr_axis, median_labels, pca_axes, project


def test_median_labels_balanced():
    for n in (10, 11, 101):
        y = median_labels(torch.randn(n, generator=torch.Generator().manual_seed(n)))
        assert abs(int(y.sum()) - (n - int(y.sum()))) <= 1
    y = median_labels(torch.tensor([1.0, 1.0, 1.0, 1.0]))   # ties still balanced
    assert int(y.sum()) == 2


def test_projection_invariant_to_orthogonal_additions():
    g = torch.Generator().manual_seed(0)
    h, axis = torch.randn(50, 16, generator=g), torch.randn(16, generator=g)
    o = torch.randn(16, generator=g)
    o -= (o @ axis) / (axis @ axis) * axis
    torch.testing.assert_close(project(h + 3 * o, axis), project(h, axis), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(project(h, 37 * axis), project(h, axis), atol=1e-5, rtol=1e-5)   # unit axis


def test_effect_size_is_delta_over_sigma_for_any_axis_scale():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, generator=g)
    w_unit = w / w.norm()
    sigma, delta = 2.0, 4.0
    h0 = sigma * torch.randn(4000, 32, generator=g)
    h1 = sigma * torch.randn(4000, 32, generator=g) + delta * w_unit
    for scale in (1.0, 37.0):   # an unnormalised LR-style axis gives the same d
        d = control_effect(h1, h0, scale * w)
        assert d == pytest.approx(delta / sigma, abs=0.06)


def test_pca_axes_ordered_and_sign_aligned():
    g = torch.Generator().manual_seed(2)
    basis, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    h = torch.randn(2000, 10, generator=g) * torch.tensor([5.0, 3, 1, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]) @ basis.T
    axes, var = pca_axes(h, 3)
    assert (var[:-1] >= var[1:]).all()
    for i in range(3):
        assert abs(float(axes[i] @ basis[:, i])) > 0.99
    assert all(float(axes[i][axes[i].abs().argmax()]) > 0 for i in range(3))   # default sign rule
    ref = axes * torch.tensor([1.0, -1.0, 1.0])[:, None]
    aligned, _ = pca_axes(-h, 3, reference=ref)
    assert all(float(aligned[i] @ ref[i]) > 0.99 for i in range(3))
    y = (h @ basis[:, 1] > 0).long()
    assert abs(float(lr_axis(h, y) @ basis[:, 1])) > 0.9
