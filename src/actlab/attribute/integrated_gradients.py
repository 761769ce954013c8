"""Integrated gradients over token embeddings (text) or pixels, with the completeness error reported.

``IG = (x - b) * integral_0^1 grad f(b + a (x - b)) da``; the integral uses Gauss-Legendre (default), trapezoid or
right Riemann nodes, batched ``batch_size`` interpolation points per forward. ``delta = sum(IG) - (f(x) - f(b))``.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from actlab.attribute.common import Attribution, InputSpace, grads, reduce_scores

log = logging.getLogger(__name__)

RULES = ("gausslegendre", "trapezoid", "riemann_right")


def quadrature(steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``a`` in [0, 1] and weights summing to 1 for the path integral."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((x + 1) / 2, dtype=torch.float64), torch.tensor(w / 2, dtype=torch.float64)
    if rule == "trapezoid":
        a = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        w = torch.full((steps + 1,), 1.0 / steps, dtype=torch.float64)
        w[0] = w[-1] = 0.5 / steps
        return a, w
    if rule == "riemann_right":
        return torch.arange(1, steps + 1, dtype=torch.float64) / steps, torch.full((steps,), 1.0 / steps,
                                                                                  dtype=torch.float64)
    raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")


def integrated_gradients(m, inputs, target: Callable, *, baseline="zero", steps: int = 64,
                         rule: str = "gausslegendre", batch_size: int = 16, positions=None) -> Attribution:
    """IG attributions of ``target(output) -> [rows]`` for one example.

    ``inputs``: a text / token ids (attributed over token embeddings) or a float tensor ``[1, ...]`` (pixels).
    ``baseline``: see ``InputSpace.baseline`` (``'zero'``, ``'pad'``, ``'unk'``, ``'mask'``, a token id, a tensor).
    ``positions``: for text, the token indices to attribute (the others keep their embedding, so completeness
    then holds against that partial baseline); default all.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    space = InputSpace(m, inputs)
    x = space.x0
    b = space.baseline(baseline)
    if positions is not None:
        if not space.text:
            raise ValueError("positions applies to text inputs only")
        keep = torch.ones(x.shape[1], dtype=torch.bool)
        keep[list(positions)] = False
        b[:, keep] = x[:, keep]
    alphas, weights = quadrature(steps, rule)
    diff = x - b
    total = torch.zeros_like(x, dtype=torch.float64)
    for lo in range(0, len(alphas), batch_size):
        a = alphas[lo:lo + batch_size].to(x.device)
        shape = (-1,) + (1,) * (x.dim() - 1)
        xb = b + a.view(shape).to(x.dtype) * diff
        g, _ = grads(space, xb, target)
        total += (g.double() * weights[lo:lo + batch_size].to(x.device).view(shape)).sum(0, keepdim=True)
    attr = (diff.double() * total).to(torch.float32)[0]
    with torch.no_grad():
        f_x = float(target(space.run(x)).float()[0])
        f_b = float(target(space.run(b)).float()[0])
    delta = float(attr.double().sum()) - (f_x - f_b)
    log.info("IG: f(x)=%.4f f(b)=%.4f sum=%.4f delta=%.3g", f_x, f_b, float(attr.sum()), delta)
    if abs(delta) > 0.05 * abs(f_x - f_b) + 1e-6:
        log.warning("IG completeness error %.3g is large against f(x)-f(b)=%.3g: raise steps, or change the baseline "
                    "(a zero embedding is singular for RMSNorm models)", delta, f_x - f_b)
    return Attribution(attr, reduce_scores(attr, space.text), "integrated_gradients", f_x, f_b, delta, space.tokens,
                       {"baseline": baseline if isinstance(baseline, (str, int)) else "tensor", "steps": steps,
                        "rule": rule})
