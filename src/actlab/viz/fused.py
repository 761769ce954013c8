"""The fast path of ``maximize``: the chain in front of the model (render, sigmoid, random transform, penalties) with
its adjoint written by hand, outside autograd.

On a tiny CNN a step of the model is ~2 ms, and the eager chain in front of it (a Fourier render, a sigmoid, a
transform, TV and L2 penalties: ~60 small tensor ops and their autograd records) cost a third of that again. Here the
forward is four ops (``spec @ basis``, sigmoid, ``Ry @ x @ Rx^T``) run without autograd; the model's input is a fresh
leaf, so autograd stops there, and ``backward`` maps its gradient back to the parameters by the adjoints (``Ry^T g Rx``,
plus the penalties' gradient ``penalty.penalty_grad``, times the sigmoid's derivative, then the render's adjoint:
``@ basis^T`` for a dense basis, else ``rfft2`` with the columns whose mirror lies outside the half spectrum doubled,
as torch's own ``irfft2`` backward does). The penalties enter only through their gradient: ``maximize`` never reads
their value. ``tests/viz`` holds it equal to the eager reference (``MaximizeConfig(fast=False)``).
"""
from __future__ import annotations

import torch

from actlab.viz.param import COLOR_SQRT, ImageParam
from actlab.viz.penalty import penalty_grad
from actlab.viz.transforms import TransformPlan


class Pipeline:
    """``forward(step)``: step ``step``'s transformed images as a leaf that requires grad; ``backward(grad of that
    leaf)``: the gradient of ``-f(...)`` plus the penalties' with respect to the parameters ``p.data_``."""

    def __init__(self, p: ImageParam, plan: TransformPlan, tv: float, l2: float, centre: float) -> None:
        self.data, self.plan, self.squash, self.shape = p.data_, plan, p.squash, p.shape
        self.basis = p.basis if p.dense else None
        self.basis_t = self.basis.t().contiguous() if self.basis is not None else None
        self.scale = p.scale if p.kind == "fourier" and not p.dense else None
        self.color = COLOR_SQRT.to(p.data_) if p.color else None
        self.pen = (float(tv), float(l2), float(centre))
        self._saved: tuple = ()
        z = torch.zeros(p.shape, dtype=p.data_.dtype, device=p.data_.device)
        self._buf = [z, z.clone(), z.clone(), z.clone()]   # reused every step: no per-step allocation of images

    def forward(self, step: int) -> torch.Tensor:
        n, c = self.shape[:2]
        with torch.no_grad():
            x = self.data
            if self.basis is not None:
                x = torch.mm(x.view(n * c, -1), self.basis).view(self.shape)
            elif self.scale is not None:
                x = torch.fft.irfft2(torch.view_as_complex(x) * self.scale, s=self.shape[-2:], norm="ortho")
            if self.color is not None:
                x = torch.einsum("nchw,cd->ndhw", x, self.color)
            img = torch.sigmoid(x, out=self._buf[0]) if self.squash else x
            ry, rxt = self.plan.matrices(step)
            out = img if ry is None else torch.matmul(torch.matmul(ry, img, out=self._buf[1]), rxt, out=self._buf[2])
        self._saved = (img, step if ry is not None else None)
        return out.detach().requires_grad_(True)

    def backward(self, g: torch.Tensor | None) -> torch.Tensor:
        img, step = self._saved
        self._saved = ()
        tv, l2, centre = self.pen
        n, c = self.shape[:2]
        with torch.no_grad():
            if g is None:                                   # the objective did not depend on the input
                g = torch.zeros_like(img)
            elif step is not None:
                ryt, rx = self.plan.adjoint(step)
                g = torch.matmul(torch.matmul(ryt, g, out=self._buf[1]), rx, out=self._buf[3])
            if tv or l2:
                penalty_grad(img, tv, l2, centre, out=g)
            if self.squash:
                g = torch.ops.aten.sigmoid_backward(g, img)     # g * img * (1 - img) in one op
            if self.color is not None:
                g = torch.einsum("ndhw,cd->nchw", g, self.color)
            if self.basis_t is not None:
                g = torch.mm(g.reshape(n * c, -1), self.basis_t)
            elif self.scale is not None:                    # adjoint of irfft2: rfft2, the mirrored columns doubled
                w = self.shape[-1]
                spec = torch.fft.rfft2(g, norm="ortho")
                spec[..., 1:w - spec.shape[-1] + 1].mul_(2)
                g = torch.view_as_real(spec.mul_(self.scale))
            return g.reshape(self.data.shape)
