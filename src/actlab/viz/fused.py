"""The fast path of ``maximize``: the chain in front of the model (render, sigmoid, random transform, penalties) with
its adjoint written by hand, outside autograd.

On a tiny CNN the eager chain in front of the model (a Fourier render, a sigmoid, a transform, TV and L2 penalties:
~60 small tensor ops and their autograd records) cost a third of the model's step. Here the forward runs without
autograd and the model's input is a fresh leaf, so autograd stops there; ``backward`` maps the leaf's gradient back to
the parameters by the adjoints. Everything that does not depend on the model's gradient is done in the forward,
while the image is still in cache: the penalties' gradient (``penalty.PenaltyGrad``) and the sigmoid's derivative
``s (1 - s)``, both taken through the sigmoid there (``P' = dpen/dimg * s (1 - s)``). The backward, which runs
after the model's backward has evicted everything small, is then four ops: the transform's adjoint ``Ry^T g Rx``
(two small matmuls), ``P' + g * s (1 - s)`` (one ``addcmul``) and the render's adjoint (``@ basis^T`` for a dense
basis, read through a transposed view of the one matrix the forward uses; else ``rfft2`` with the columns whose
mirror lies outside the half spectrum doubled, as torch's own ``irfft2`` backward does). Every buffer is allocated
once. ``tests/viz`` holds it equal to the eager reference (``MaximizeConfig(fast=False)``).
"""
from __future__ import annotations

import torch

from actlab.viz.param import COLOR_SQRT, ImageParam
from actlab.viz.penalty import PenaltyGrad
from actlab.viz.transforms import TransformPlan


class Pipeline:
    """``forward(step)``: step ``step``'s transformed images as a leaf that requires grad; ``backward(grad of that
    leaf)``: the gradient of ``-f(...)`` plus the penalties' with respect to the parameters ``p.data_``."""

    def __init__(self, p: ImageParam, plan: TransformPlan, tv: float, l2: float, centre: float) -> None:
        self.data, self.plan, self.squash, self.shape = p.data_, plan, p.squash, p.shape
        self.basis = p.basis if p.dense else None
        self.scale = p.scale if p.kind == "fourier" and not p.dense else None
        self.color = COLOR_SQRT.to(p.data_) if p.color else None
        kw = {"dtype": p.data_.dtype, "device": p.data_.device}
        self.pen = PenaltyGrad(p.shape, tv, l2, centre, **kw) if tv or l2 else None
        n, c, h, w = p.shape
        self._rows = n * c
        # the rendered (squashed) images of the current step, in the penalty's own buffer when there is one
        self._img = self.pen.image if self.pen is not None else torch.zeros(p.shape, **kw)
        self._raw = torch.zeros(p.shape, **kw)       # the render before the sigmoid
        self._deriv = torch.zeros(p.shape, **kw)     # s (1 - s) of them
        self._tmp = torch.zeros(p.shape, **kw)       # transform intermediates and the backward's image gradient
        self._out = torch.zeros(p.shape, **kw)
        self._gimg = torch.zeros(p.shape, **kw)
        self._grad = torch.zeros(self._rows, self.basis.shape[0], **kw) if self.basis is not None else None
        self._grad_view = self._grad.view(p.data_.shape) if self._grad is not None else None
        self._pen: torch.Tensor | None = None
        self._step: int | None = None

    def forward(self, step: int) -> torch.Tensor:
        n, c = self.shape[:2]
        with torch.no_grad():
            x = self.data
            if self.basis is not None:
                x = torch.mm(x.view(self._rows, -1), self.basis, out=self._raw.view(self._rows, -1)).view(self.shape)
            elif self.scale is not None:
                x = torch.fft.irfft2(torch.view_as_complex(x) * self.scale, s=self.shape[-2:], norm="ortho")
            if self.color is not None:
                x = torch.einsum("nchw,cd->ndhw", x, self.color)
            img = torch.sigmoid(x, out=self._img) if self.squash else x
            if self.pen is not None:
                self._pen = self.pen(img)                   # d penalty / d img, in the penalty's buffer
            if self.squash:
                torch.addcmul(img, img, img, value=-1, out=self._deriv)     # s - s^2
                if self._pen is not None:
                    self._pen.mul_(self._deriv)             # through the sigmoid: d penalty / d pre-sigmoid
            ry, rxt = self.plan.matrices(step)
            out = img if ry is None else torch.matmul(torch.matmul(ry, img, out=self._tmp), rxt, out=self._out)
        self._step = step if ry is not None else None
        return out.detach().requires_grad_(True)

    def backward(self, g: torch.Tensor | None) -> torch.Tensor:
        step, pen = self._step, self._pen
        self._step = self._pen = None
        n, c = self.shape[:2]
        with torch.no_grad():
            if g is None:                                   # the objective did not depend on the input
                g = torch.zeros(self.shape, dtype=self._img.dtype, device=self._img.device)
            elif step is not None:
                ryt, rx = self.plan.adjoint(step)
                g = torch.matmul(torch.matmul(ryt, g, out=self._tmp), rx, out=self._gimg)
            if self.squash:                                 # pen already went through the sigmoid
                g = (torch.addcmul(pen, g, self._deriv, out=self._tmp) if pen is not None
                     else torch.mul(g, self._deriv, out=self._tmp))
            elif pen is not None:
                g = torch.add(g, pen, out=self._tmp)
            if self.color is not None:
                g = torch.einsum("ndhw,cd->nchw", g, self.color)
            if self.basis is not None:
                torch.mm(g.reshape(self._rows, -1), self.basis.t(), out=self._grad)
                return self._grad_view
            elif self.scale is not None:                    # adjoint of irfft2: rfft2, the mirrored columns doubled
                w = self.shape[-1]
                spec = torch.fft.rfft2(g, norm="ortho")
                spec[..., 1:w - spec.shape[-1] + 1].mul_(2)
                g = torch.view_as_real(spec.mul_(self.scale))
            return g.reshape(self.data.shape)
