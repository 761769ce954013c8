"""The fast path of ``maximize``: the chain in front of the model (render, sigmoid, random transform, penalties) with
its adjoint written by hand, outside autograd.

On a tiny CNN a step of the model is ~2 ms, and the eager chain in front of it (a Fourier render, a sigmoid, a
transform, TV and L2 penalties: ~60 small tensor ops and their autograd records) cost a third of that again. Here the
forward is four ops (``spec @ basis``, sigmoid, ``Ry @ x @ Rx^T``) run without autograd; the model's input is a fresh
leaf, so autograd stops there, and ``backward`` maps its gradient back to the parameters by the adjoints (``Ry^T g Rx``,
plus the penalties' gradient ``penalty.penalty_grad``, times the sigmoid's derivative, ``@ basis^T``). The penalties
enter only through their gradient: ``maximize`` never reads their value. For pixel parameters and dense Fourier bases
(``ImageParam.dense``); ``tests/viz`` holds it equal to the eager reference (``MaximizeConfig(fast=False)``).
"""
from __future__ import annotations

import torch

from actlab.viz.param import COLOR_SQRT, ImageParam
from actlab.viz.penalty import penalty_grad
from actlab.viz.transforms import TransformPlan


def can_fuse(p: ImageParam) -> bool:
    """Whether ``p`` renders by a matmul (or is pixels), so its adjoint can be written by hand."""
    return p.kind == "pixel" or p.dense


class Pipeline:
    """``forward(step)``: step ``step``'s transformed images as a leaf that requires grad; ``backward(grad of that
    leaf)``: the gradient of ``-f(...)`` plus the penalties' with respect to the parameters ``p.data_``."""

    def __init__(self, p: ImageParam, plan: TransformPlan, tv: float, l2: float, centre: float) -> None:
        if not can_fuse(p):
            raise ValueError("the fused pipeline needs pixel parameters or a dense Fourier basis")
        self.data, self.plan, self.squash, self.shape = p.data_, plan, p.squash, p.shape
        self.basis = p.basis if p.kind != "pixel" else None
        self.basis_t = self.basis.t().contiguous() if self.basis is not None else None
        self.color = COLOR_SQRT.to(p.data_) if p.color else None
        self.pen = (float(tv), float(l2), float(centre))
        self._saved: tuple = ()

    def forward(self, step: int) -> torch.Tensor:
        n, c = self.shape[:2]
        with torch.no_grad():
            x = self.data
            if self.basis is not None:
                x = torch.mm(x.view(n * c, -1), self.basis).view(self.shape)
            if self.color is not None:
                x = torch.einsum("nchw,cd->ndhw", x, self.color)
            img = torch.sigmoid(x) if self.squash else x
            ry, rxt = self.plan.matrices(step)
            out = img if ry is None else torch.matmul(torch.matmul(ry, img), rxt)
        self._saved = (img, ry, rxt)
        return out.detach().requires_grad_(True)

    def backward(self, g: torch.Tensor | None) -> torch.Tensor:
        img, ry, rxt = self._saved
        self._saved = ()
        tv, l2, centre = self.pen
        n, c = self.shape[:2]
        with torch.no_grad():
            if g is None:                                   # the objective did not depend on the input
                g = torch.zeros_like(img)
            elif ry is not None:
                g = torch.matmul(torch.matmul(ry.t(), g), rxt.t())
            if tv or l2:
                penalty_grad(img, tv, l2, centre, out=g)
            if self.squash:
                g = torch.ops.aten.sigmoid_backward(g, img)     # g * img * (1 - img) in one op
            if self.color is not None:
                g = torch.einsum("ndhw,cd->nchw", g, self.color)
            if self.basis_t is not None:
                g = torch.mm(g.reshape(n * c, -1), self.basis_t)
            return g.reshape(self.data.shape)
