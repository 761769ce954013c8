"""JumpReLU's straight-through estimators equal the paper's formulas (rectangle kernel of width eps)."""
import torch

from actlab.dictionary.jumprelu import JumpReLUFn, StepFn


def test_straight_through_gradients():
    eps = 0.1
    pre = torch.tensor([[0.48, 0.52, 0.9, 0.2], [0.56, 0.5, 0.44, 0.7]], requires_grad=True)
    theta = torch.full((4,), 0.5, requires_grad=True)
    hits = ((pre - theta).abs() < eps / 2).float()            # inside the kernel window
    JumpReLUFn.apply(pre, theta, eps).sum().backward()
    # d(pre * H(pre - theta))/d theta = -(theta / eps) K((pre - theta) / eps); d/d pre = H(pre - theta)
    torch.testing.assert_close(theta.grad, (-(0.5 / eps) * hits).sum(0))
    torch.testing.assert_close(pre.grad, (pre > theta).float())
    theta.grad = None
    StepFn.apply(pre, theta, eps).sum().backward()
    torch.testing.assert_close(theta.grad, (-(1 / eps) * hits).sum(0))      # d H(pre - theta) / d theta
    assert bool((theta.grad != 0).any())
