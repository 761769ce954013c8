"""Gradient attributions: saliency (|grad|), gradient x input, and SmoothGrad (gradients averaged over noise).

Cheap first-order alternatives to integrated gradients: one backward (saliency, grad x input) or ``n_samples``
backwards batched ``batch_size`` at a time (SmoothGrad).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from actlab.attribute.common import Attribution, InputSpace, grads, reduce_scores

if TYPE_CHECKING:
    from actlab.models import Model

METHODS = ("grad_x_input", "saliency", "smoothgrad")


def gradient_attribution(m: Model, inputs, target: Callable, *, method: str = "grad_x_input", n_samples: int = 32,
                         noise: float = 0.1, multiply_by_input: bool = True, batch_size: int = 16,
                         seed: int = 0) -> Attribution:
    """Attributions of ``target(output) -> [rows]`` for one example (text over embeddings, or pixels).

    ``grad_x_input``: ``grad * x`` (signed). ``saliency``: ``|grad|``. ``smoothgrad``: the mean gradient at
    ``x + N(0, (noise * (max(x) - min(x)))^2)`` over ``n_samples``, times ``x`` when ``multiply_by_input``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    space = InputSpace(m, inputs)
    x = space.x0
    if method in ("grad_x_input", "saliency"):
        g, f = grads(space, x, target)
        attr = (g * x if method == "grad_x_input" else g.abs())[0]
        meta = {}
    else:
        if n_samples < 1 or noise < 0:
            raise ValueError(f"smoothgrad needs n_samples >= 1 and noise >= 0; got {n_samples}, {noise}")
        sigma = noise * float(x.max() - x.min())
        gen = torch.Generator(device="cpu").manual_seed(seed)
        total = torch.zeros_like(x, dtype=torch.float64)
        for lo in range(0, n_samples, batch_size):
            r = min(batch_size, n_samples - lo)
            eps = torch.randn((r,) + tuple(x.shape[1:]), generator=gen).to(x) * sigma
            g, _ = grads(space, x + eps, target)
            total += g.double().sum(0, keepdim=True)
        g = (total / n_samples).to(x.dtype)
        attr = (g * x if multiply_by_input else g)[0]
        with torch.no_grad():
            f = target(space.run(x)).float()
        meta = {"n_samples": n_samples, "noise": noise, "sigma": sigma, "multiply_by_input": multiply_by_input}
    return Attribution(attr.float(), reduce_scores(attr.float(), space.text), method, float(f[0]), None, None,
                       space.tokens, meta)
