"""The smoothness penalties of activation maximisation: total variation and L2 decay.

``penalty`` is the reference (an autograd expression: value and gradient). ``with_penalty_grad`` is the fast path
``maximize`` uses: an identity node whose backward adds the penalty's gradient, written by hand (the sign of each
neighbour difference scattered back onto both neighbours, plus the linear L2 term): about ten small ops per step in one
node instead of ~40 autograd records, and no forward work (the optimiser needs the gradient, never the value).
``tests/viz`` holds the two gradients equal.
"""
from __future__ import annotations

import torch

from actlab.viz.param import total_variation


def penalty(img: torch.Tensor, tv: float, l2: float, centre: float) -> torch.Tensor:
    """``tv * sum_n TV(img_n) + l2 * sum_n mean((img_n - centre)^2)`` over the batch ``[n, C, H, W]`` (a scalar)."""
    loss = img.new_zeros(())
    if tv:
        loss = loss + tv * total_variation(img).sum()
    if l2:
        loss = loss + l2 * ((img - centre) ** 2).flatten(1).mean(1).sum()
    return loss


def penalty_grad(img: torch.Tensor, tv: float, l2: float, centre: float, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The gradient of ``penalty`` with respect to ``img`` (added into ``out`` in place when given)."""
    c, h, w = img.shape[-3:]
    if out is None:
        out = torch.zeros_like(img)
    if l2:
        q = 2 * l2 / (c * h * w)
        out.add_(img, alpha=q)
        if centre:
            out.sub_(q * centre)
    if tv:
        a, b = tv / (c * (h - 1) * w), tv / (c * h * (w - 1))
        sh = (img[..., 1:, :] - img[..., :-1, :]).sign_()
        out[..., 1:, :].add_(sh, alpha=a)
        out[..., :-1, :].sub_(sh, alpha=a)
        sw = (img[..., :, 1:] - img[..., :, :-1]).sign_()
        out[..., :, 1:].add_(sw, alpha=b)
        out[..., :, :-1].sub_(sw, alpha=b)
    return out


class _PenaltyGrad(torch.autograd.Function):
    """Identity forward; backward returns the incoming gradient plus ``penalty_grad``."""

    @staticmethod
    def forward(ctx, img: torch.Tensor, tv: float, l2: float, centre: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(img)
        ctx.args = (tv, l2, centre)
        return img.view_as(img)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (img,) = ctx.saved_tensors
        return penalty_grad(img, *ctx.args, out=g.clone(memory_format=torch.contiguous_format)), None, None, None


def with_penalty_grad(img: torch.Tensor, tv: float, l2: float, centre: float) -> torch.Tensor:
    """``img`` itself, whose gradient in backward gains that of ``penalty(img, tv, l2, centre)``: maximising
    ``f(with_penalty_grad(img, ...))`` steps exactly as maximising ``f(img) - penalty(img, ...)`` would."""
    if img.dim() != 4 or min(img.shape[-2:]) < 2:
        raise ValueError(f"the smoothness penalty needs images [n, C, H, W] with H, W >= 2; got {list(img.shape)}")
    if not tv and not l2:
        return img
    return _PenaltyGrad.apply(img, float(tv), float(l2), float(centre))
