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
        rows = n * c
        # the rendered (squashed) images of the current step, in the penalty's own buffer when there is one
        self._img = self.pen.image if self.pen is not None else torch.zeros(p.shape, **kw)
        self._raw = torch.zeros(p.shape, **kw)       # the render before the sigmoid
        self._tmp = torch.zeros(p.shape, **kw)       # transform intermediates
        self._out = torch.zeros(p.shape, **kw)
        self._gimg = torch.zeros(p.shape, **kw)      # the gradient with respect to the images
        # the views every step uses, made once (a view costs as much as a small op here)
        self._data2d, self._raw2d, self._tmp_rows = self.data.view(rows, -1), self._raw.view(rows, -1), \
            self._tmp.view(rows, -1)
        self._tmp_w, self._gimg_w = self._tmp.view(-1, w), self._gimg.view(-1, w)
        self._pen_w = self.pen.out.view(-1, w) if self.pen is not None else None
        self._basis_t = self.basis.t() if self.basis is not None else None
        self._grad = torch.zeros(rows, self.basis.shape[0], **kw) if self.basis is not None else None
        self._grad_view = self._grad.view(p.data_.shape) if self._grad is not None else None
        self._ry, self._rxt = (plan.ry, plan.rxt) if plan.active else (None, None)
        self._ryt, self._rx = (plan.ryt, plan.rx) if plan.active else (None, None)
        self._step: int | None = None
        self._pen_now = self._img_now = None

    def forward(self, step: int) -> torch.Tensor:
        x = self.data
        if self.basis is not None:
            torch.mm(self._data2d, self.basis, out=self._raw2d)
            x = self._raw
        elif self.scale is not None:
            x = torch.fft.irfft2(torch.view_as_complex(x) * self.scale, s=self.shape[-2:], norm="ortho")
        if self.color is not None:
            x = torch.einsum("nchw,cd->ndhw", x, self.color)
        img = torch.sigmoid(x, out=self._img) if self.squash else x
        self._pen_now = self.pen(img) if self.pen is not None else None    # d penalty / d img
        if self._ry is None:
            out, self._step = img, None
        else:
            torch.matmul(self._ry[step], img, out=self._tmp)
            out, self._step = torch.matmul(self._tmp, self._rxt[step], out=self._out), step
        self._img_now = img
        return out.detach().requires_grad_(True)

    def backward(self, g: torch.Tensor | None) -> torch.Tensor:
        step, pen, img = self._step, self._pen_now, self._img_now
        self._step = self._pen_now = self._img_now = None
        if g is None:                                       # the objective did not depend on the input
            g = torch.zeros(self.shape, dtype=img.dtype, device=img.device)
        if step is not None:                                # Ry^T g Rx (+ the penalty gradient, in the same op)
            torch.matmul(self._ryt[step], g, out=self._tmp)
            if pen is not None:
                torch.addmm(self._pen_w, self._tmp_w, self._rx[step], out=self._gimg_w)
            else:
                torch.mm(self._tmp_w, self._rx[step], out=self._gimg_w)
            g = self._gimg
        elif pen is not None:
            g = torch.add(g, pen, out=self._gimg)
        if self.squash:
            g = torch.ops.aten.sigmoid_backward.grad_input(g, img, grad_input=self._tmp)   # g * s (1 - s)
        if self.color is not None:
            g = torch.einsum("ndhw,cd->nchw", g, self.color)
        if self.basis is not None:
            torch.mm(self._tmp_rows if g is self._tmp else g.reshape(self._grad.shape[0], -1), self._basis_t,
                     out=self._grad)
            return self._grad_view
        if self.scale is not None:                          # adjoint of irfft2: rfft2, the mirrored columns doubled
            w = self.shape[-1]
            spec = torch.fft.rfft2(g, norm="ortho")
            spec[..., 1:w - spec.shape[-1] + 1].mul_(2)
            g = torch.view_as_real(spec.mul_(self.scale))
        return g.reshape(self.data.shape)
