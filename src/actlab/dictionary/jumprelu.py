"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre * H(pre - theta) with a learned per-latent threshold,
trained on MSE + l1_coef * L0 through straight-through (rectangle kernel) estimates of d/d theta."""
from __future__ import annotations

import math

import torch

from actlab.dictionary.base import Dictionary, StepOut, register_arch
from actlab.dictionary.topk import fvu


def _rect(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFn(torch.autograd.Function):
    """pre * H(pre - theta); d/dpre = H, d/dtheta = -(theta/eps) K((pre - theta)/eps)."""

    @staticmethod
    def forward(ctx, pre, theta, eps: float):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = g * (pre > theta)
        g_theta = (-(theta / eps) * _rect((pre - theta) / eps) * g).sum(0)
        return g_pre, g_theta, None


class StepFn(torch.autograd.Function):
    """H(pre - theta); d/dpre = 0, d/dtheta = -(1/eps) K((pre - theta)/eps)."""

    @staticmethod
    def forward(ctx, pre, theta, eps: float):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        return None, (-(1.0 / eps) * _rect((pre - theta) / eps) * g).sum(0), None


@register_arch
class JumpReLUSAE(Dictionary):
    arch = "jumprelu"
    normalize_decoder = True

    def __init__(self, cfg, generator=None):
        super().__init__(cfg, generator)
        self.log_threshold = torch.nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.jump_init_threshold), dtype=self.W_enc.dtype))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def encode(self, x):
        pre = self.pre_acts(self.check_input(x))
        return pre * (pre > self.threshold)

    def step(self, x, y, dead=None, **kw) -> StepOut:
        pre = self.pre_acts(x)
        theta = self.threshold
        eps = self.cfg.jump_bandwidth
        z = JumpReLUFn.apply(pre, theta, eps)
        recon = self.decode(z, x)
        err = recon - y
        mse = err.pow(2).sum(-1).mean()
        l0 = StepFn.apply(pre, theta, eps).sum(-1).mean()
        loss = mse + self.cfg.l1_coef * l0
        active = z > 0
        return StepOut(loss, recon, active.any(0), float(l0.detach()), {"fvu": float(fvu(err.detach(), y))})

    def _fold_extra(self, s_in, s_out):
        # thresholds compare pre-activations, which are unchanged by the fold: nothing to do
        return None
