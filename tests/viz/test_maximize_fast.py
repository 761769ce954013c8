"""The fast path of activation maximisation equals its eager reference: separable transform matrices == affine_grid +
grid_sample, the dense Fourier basis == irfft2, the hand-written penalty gradient == autograd, and whole runs of
``maximize(fast=True)`` == ``maximize(fast=False)``."""
from __future__ import annotations

import pytest
import torch

from actlab.viz.fused import Pipeline
from actlab.viz.maximize import MaximizeConfig, maximize
from actlab.viz.param import ImageParam
from actlab.viz.penalty import penalty, penalty_grad
from actlab.viz.transforms import TransformPlan, random_transform


@pytest.mark.parametrize("h,w,jitter,scale", [(16, 16, 2, 0.1), (12, 9, 3, 0.3), (8, 8, 0, 0.5), (16, 16, 1, 0.0),
                                              (5, 7, 4, 0.2)])
def test_transform_plan_equals_grid_sample_with_the_same_draws(h, w, jitter, scale):
    x = torch.rand(3, 2, h, w, generator=torch.Generator().manual_seed(0))
    plan = TransformPlan(12, h, w, jitter, scale, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    for step in range(12):
        ref = random_transform(x, jitter, scale, gen)
        assert torch.allclose(plan(x, step), ref, atol=1e-5), step
    # a linear map: its adjoint (used in the fused backward) is the gradient grid_sample's backward gives
    ry, rxt = plan.matrices(11)
    xg = x.clone().requires_grad_(True)
    g = torch.rand(3, 2, h, w)
    gen = torch.Generator().manual_seed(3)
    for _ in range(11):
        random_transform(x, jitter, scale, gen)
    (random_transform(xg, jitter, scale, gen) * g).sum().backward()
    assert torch.allclose(torch.matmul(torch.matmul(ry.t(), g), rxt.t()), xg.grad, atol=1e-5)


def test_inactive_plan_is_the_identity():
    plan = TransformPlan(4, 8, 8, 0, 0.0, torch.Generator())
    x = torch.rand(1, 1, 8, 8)
    assert plan(x, 2) is x and plan.matrices(0) == (None, None)


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (3, 3, 12, 9), (1, 1, 7, 8)])
def test_dense_fourier_basis_equals_irfft2_forward_and_gradient(shape):
    img = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    a = ImageParam(shape, init=img, dense=True)
    b = ImageParam(shape, init=img, dense=False)
    assert a.dense and not b.dense and torch.equal(a.data_, b.data_)
    assert torch.allclose(a(), b(), atol=1e-6)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    (a() * g).sum().backward()
    (b() * g).sum().backward()
    assert torch.allclose(a.data_.grad, b.data_.grad, atol=1e-5)
    assert ImageParam((1, 1, 64, 64)).dense is False                       # past DENSE_MAX: the FFT


def test_penalty_gradient_equals_autograd():
    x = torch.rand(4, 3, 9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for tv, l2, centre in [(0.7, 0.3, 0.5), (1.0, 0.0, 0.0), (0.0, 2.0, 0.5)]:
        xg = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(penalty(xg, tv, l2, centre), xg)
        assert torch.allclose(penalty_grad(x, tv, l2, centre), ref, atol=1e-12), (tv, l2)
        out = torch.full_like(x, 2.0)                                      # added into a given gradient in place
        assert penalty_grad(x, tv, l2, centre, out=out) is out and torch.allclose(out, 2.0 + ref, atol=1e-12)


@pytest.mark.parametrize("param,c,dense,w", [("fourier", 1, True, 10), ("fourier", 3, True, 10), ("pixel", 1, None, 10),
                                             ("fourier", 1, False, 10), ("fourier", 3, False, 9)])
def test_pipeline_gradient_equals_autograd_of_the_eager_chain(param, c, dense, w):
    """One step: the hand-written adjoint of render (dense basis or FFT, even and odd widths) -> sigmoid -> transform
    (+ penalties) == autograd's."""
    shape = (2, c, 12, w)
    plan = TransformPlan(3, 12, w, 2, 0.2, torch.Generator().manual_seed(5))
    p = ImageParam(shape, param=param, noise=0.5, seed=3, dense=dense)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    pipe = Pipeline(p, plan, 0.3, 0.2, 0.5)
    x = pipe.forward(2)
    (-(x * w).sum()).backward()
    fast = pipe.backward(x.grad)
    img = p()
    loss = -(plan(img, 2) * w).sum() + penalty(img, 0.3, 0.2, 0.5)
    loss.backward()
    assert torch.allclose(fast, p.data_.grad, atol=1e-5)


def test_fast_maximize_equals_the_eager_reference(digits_cnn):
    from actlab.viz.objectives import Unit, objective

    f = objective(digits_cnn, Unit("module:conv3", channel=5))
    for kw in ({"param": "fourier", "jitter": 2, "scale": 0.1, "l2": 0.1, "steps": 15},   # whole runs agree closely
               {"param": "pixel", "jitter": 1, "scale": 0.05, "l2": 0.05, "squash": False, "steps": 15}):
        a = maximize(f, (2, 1, 16, 16), MaximizeConfig(**kw))
        b = maximize(f, (2, 1, 16, 16), MaximizeConfig(fast=False, **kw))
        assert torch.allclose(a.images, b.images, atol=1e-4), kw
        assert torch.allclose(torch.tensor(a.trace), torch.tensor(b.trace), atol=1e-4)
    # with TV: one plain-gradient step is exactly the same step (longer runs drift: the sign of a near-zero pixel
    # difference flips with float rounding)
    kw = {"param": "fourier", "jitter": 2, "scale": 0.1, "tv": 0.5, "l2": 0.1, "steps": 1, "optimizer": "sgd",
          "lr": 5.0}
    a = maximize(f, (2, 1, 16, 16), MaximizeConfig(**kw))
    b = maximize(f, (2, 1, 16, 16), MaximizeConfig(fast=False, **kw))
    start = maximize(f, (2, 1, 16, 16), MaximizeConfig(**{**kw, "steps": 0}))
    assert (a.images - start.images).abs().max() > 1e-2                      # the step moved the images
    assert torch.allclose(a.images, b.images, atol=1e-5)
