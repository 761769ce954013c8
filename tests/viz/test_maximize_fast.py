"""The fast path of activation maximisation equals its eager reference: separable transform matrices == affine_grid +
grid_sample, the dense Fourier basis == irfft2, the hand-written penalty gradient == autograd, and whole runs of
``maximize(fast=True)`` == ``maximize(fast=False)``."""
from __future__ import annotations

import pytest
import torch

from actlab.viz.fused import Pipeline
from actlab.viz.maximize import MaximizeConfig, maximize
from actlab.viz.param import ImageParam, cached_basis, fourier_basis, rfft_scale
from actlab.viz.penalty import PenaltyGrad, penalty, penalty_grad
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


@pytest.mark.parametrize("shape", [(4, 3, 9, 7), (8, 1, 16, 16), (2, 2, 1, 6), (3, 1, 5, 1), (1, 1, 2, 2)])
def test_flat_penalty_gradient_equals_autograd_for_every_shape_and_term(shape):
    """The buffered TV + L2 gradient (one flat array for the whole batch, masks for the pairs that cross a row or an
    image) == autograd of the reference ``penalty``: odd sizes, colour, a single row / column, every term alone, and
    called again on other images (the padded buffers must not keep anything from the last call)."""
    gen = torch.Generator().manual_seed(7)
    for tv, l2, centre in [(0.7, 0.3, 0.5), (1.3, 0.0, 0.0), (0.0, 2.0, 0.5), (0.0, 0.0, 0.5)]:
        pg = PenaltyGrad(shape, tv, l2, centre, dtype=torch.float64)
        for _ in range(3):
            x = torch.rand(shape, generator=gen, dtype=torch.float64)
            x[..., :1, :] = x[..., 1:2, :] if shape[-2] > 1 else x[..., :1, :]   # exact ties: sign(0) = 0, as autograd
            xg = x.clone().requires_grad_(True)
            loss = penalty(xg, tv, l2, centre)
            (ref,) = torch.autograd.grad(loss, xg, allow_unused=True) if loss.requires_grad else (None,)
            ref = torch.zeros_like(x) if ref is None else ref
            assert torch.allclose(pg(x), ref, atol=1e-12), (shape, tv, l2)
            pg.image.copy_(torch.rand(shape, generator=gen, dtype=torch.float64))   # rendered in place: no copy
            xg = pg.image.clone().requires_grad_(True)
            loss = penalty(xg, tv, l2, centre)
            (ref,) = torch.autograd.grad(loss, xg) if loss.requires_grad else (torch.zeros_like(xg),)
            assert torch.allclose(pg(pg.image), ref, atol=1e-12), (shape, tv, l2)
    with pytest.raises(ValueError, match=r"built for images \[8, 1, 16, 16\]"):
        PenaltyGrad((8, 1, 16, 16), 1.0, 0.0, 0.5)(torch.zeros(8, 1, 16, 15))


def test_cached_basis_is_built_once_per_shape_and_decay():
    a = ImageParam((2, 1, 12, 10), decay=1.0)
    b = ImageParam((5, 3, 12, 10), decay=1.0)
    c = ImageParam((2, 1, 12, 10), decay=1.5)
    assert a.basis is b.basis and a.basis is not c.basis                  # shared, read-only
    for p, decay in ((a, 1.0), (c, 1.5)):
        assert torch.equal(p.basis, fourier_basis(12, 10, rfft_scale(12, 10, decay)))
    assert cached_basis(12, 10, 1.5) is c.basis


@pytest.mark.parametrize("jitter,scale,tv,l2,squash,param", [
    (2, 0.2, 0.3, 0.2, True, "fourier"), (0, 0.0, 0.3, 0.2, True, "fourier"), (0, 0.0, 0.3, 0.0, False, "pixel"),
    (1, 0.1, 0.0, 0.4, False, "pixel"), (1, 0.1, 0.0, 0.0, True, "pixel"), (0, 0.0, 0.0, 0.0, False, "pixel")])
def test_pipeline_steps_in_a_row_equal_autograd_with_every_branch(jitter, scale, tv, l2, squash, param):
    """Several steps through one Pipeline (its buffers reused, the parameters changed between steps as the optimiser
    does), with and without transform / squash / each penalty: every gradient == autograd of the eager chain."""
    shape = (3, 1, 10, 10)
    plan = TransformPlan(4, 10, 10, jitter, scale, torch.Generator().manual_seed(2))
    p = ImageParam(shape, param=param, squash=squash, noise=0.5, seed=1)
    pipe = Pipeline(p, plan, tv, l2, 0.5)
    gen = torch.Generator().manual_seed(3)
    for step in range(4):
        w = torch.randn(shape, generator=gen)
        x = pipe.forward(step)
        assert torch.allclose(x, plan(p(), step), atol=1e-6)
        (-(x * w).sum()).backward()
        fast = pipe.backward(x.grad).clone()
        p.data_.grad = None
        img = p()
        (-(plan(img, step) * w).sum() + penalty(img, tv, l2, 0.5)).backward()
        assert torch.allclose(fast, p.data_.grad, atol=1e-5), step
        p.data_.grad = None
        with torch.no_grad():
            p.data_.add_(torch.randn(p.data_.shape, generator=gen), alpha=0.3)
    x = pipe.forward(0)                            # an objective that ignores its input: only the penalties remain
    img = p()
    ref = torch.autograd.grad(penalty(img, tv, l2, 0.5) + 0 * img.sum(), p.data_)[0]
    assert torch.allclose(pipe.backward(None), ref, atol=1e-6)


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
