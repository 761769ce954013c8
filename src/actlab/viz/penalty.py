"""The smoothness penalties of activation maximisation: total variation and L2 decay.

``penalty`` is the reference (an autograd expression: value and gradient). ``penalty_grad`` is its gradient written
by hand (the sign of each neighbour difference scattered back onto both neighbours, plus the linear L2 term), which
``maximize``'s fast path (``fused.Pipeline``) adds in its backward: about ten small ops per step instead of ~40
autograd records, and no forward work (the optimiser needs the gradient, never the value). ``tests/viz`` holds the two
gradients equal.
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
