"""The fast path of ``maximize``: the chain in front of the model (render, sigmoid, random transform, penalties) with
its adjoint written by hand, outside autograd.

On a tiny CNN the eager chain in front of the model (a Fourier render, a sigmoid, a transform, TV and L2 penalties:
~60 small tensor ops and their autograd records) cost a third of the model's step. Here the forward runs without
autograd and the model's input is a fresh leaf, so autograd stops there; ``backward`` maps the leaf's gradient back to
the parameters by the adjoints. What does not depend on the model's gradient is done in the forward, while the
image is still in cache: the penalties' gradient (``penalty.PenaltyGrad``, seven flat ops over the batch). The
backward, which runs after the model's backward has evicted everything small, is then four ops: ``Ry^T g Rx + dpen``
(a broadcast matmul and one ``addmm``, which adds the penalty gradient), the sigmoid's backward, and the render's
adjoint (``@ basis^T`` for a dense basis, read through a transposed view of the one matrix the forward uses; else
``rfft2`` with the columns whose mirror lies outside the half spectrum doubled, as torch's own ``irfft2`` backward
does). On the 16x16 digits CNN each small op costs ~10-20 us inside the loop (cold caches), so the count of ops is
what the regularisers cost. Every buffer is allocated once. ``tests/viz`` holds it equal to the eager reference
(``MaximizeConfig(fast=False)``).
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
        # a detached alias of the parameters (Adam's in-place updates show through): no op here records autograd, so
        # neither pass needs a no_grad block
        self.data, self.plan, self.squash, self.shape = p.data_.detach(), plan, p.squash, p.shape
        self.basis = p.basis if p.dense else None
        self.scale = p.scale if p.kind == "fourier" and not p.dense else None
        self.color = COLOR_SQRT.to(p.data_) if p.color else None
        kw = {"dtype": p.data_.dtype, "device": p.data_.device}
        self.pen = PenaltyGrad(p.shape, tv, l2, centre, **kw) if tv or l2 else None
        n, c, h, w = p.shape
        self._rows, self._w = n * c, w
        # the rendered (squashed) images of the current step, in the penalty's own buffer when there is one
        self._img = self.pen.image if self.pen is not None else torch.zeros(p.shape, **kw)
        self._raw = torch.zeros(p.shape, **kw)       # the render before the sigmoid
        self._tmp = torch.zeros(p.shape, **kw)       # transform intermediates
        self._out = torch.zeros(p.shape, **kw)
        self._gimg = torch.zeros(p.shape, **kw)      # the gradient with respect to the images
        self._grad = torch.zeros(self._rows, self.basis.shape[0], **kw) if self.basis is not None else None
        self._grad_view = self._grad.view(p.data_.shape) if self._grad is not None else None
        self._pen: torch.Tensor | None = None
        self._step: int | None = None

    def forward(self, step: int) -> torch.Tensor:
        x = self.data
        if self.basis is not None:
            x = torch.mm(x.view(self._rows, -1), self.basis, out=self._raw.view(self._rows, -1)).view(self.shape)
        elif self.scale is not None:
            x = torch.fft.irfft2(torch.view_as_complex(x) * self.scale, s=self.shape[-2:], norm="ortho")
        if self.color is not None:
            x = torch.einsum("nchw,cd->ndhw", x, self.color)
        img = torch.sigmoid(x, out=self._img) if self.squash else x
        self._pen = self.pen(img) if self.pen is not None else None    # d penalty / d img, in the penalty's buffer
        ry, rxt = self.plan.matrices(step)
        out = img if ry is None else torch.matmul(torch.matmul(ry, img, out=self._tmp), rxt, out=self._out)
        self._img_now, self._step = img, (step if ry is not None else None)
        return out.detach().requires_grad_(True)

    def backward(self, g: torch.Tensor | None) -> torch.Tensor:
        step, pen, img = self._step, self._pen, self._img_now
        self._step = self._pen = self._img_now = None
        w = self._w
        if g is None:                                       # the objective did not depend on the input
            g = torch.zeros(self.shape, dtype=img.dtype, device=img.device)
        if step is not None:                                # Ry^T g Rx (+ the penalty gradient, in the same op)
            ryt, rx = self.plan.adjoint(step)
            t = torch.matmul(ryt, g, out=self._tmp).view(-1, w)
            g = (torch.addmm(pen.view(-1, w), t, rx, out=self._gimg.view(-1, w)) if pen is not None
                 else torch.mm(t, rx, out=self._gimg.view(-1, w))).view(self.shape)
        elif pen is not None:
            g = torch.add(g, pen, out=self._gimg)
        if self.squash:
            g = torch.ops.aten.sigmoid_backward.grad_input(g, img, grad_input=self._tmp)   # g * s (1 - s)
        if self.color is not None:
            g = torch.einsum("ndhw,cd->nchw", g, self.color)
        if self.basis is not None:
            torch.mm(g.reshape(self._rows, -1), self.basis.t(), out=self._grad)
            return self._grad_view
        if self.scale is not None:                          # adjoint of irfft2: rfft2, the mirrored columns doubled
            spec = torch.fft.rfft2(g, norm="ortho")
            spec[..., 1:w - spec.shape[-1] + 1].mul_(2)
            g = torch.view_as_real(spec.mul_(self.scale))
        return g.reshape(self.data.shape)
