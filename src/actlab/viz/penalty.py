"""The smoothness penalties of activation maximisation: total variation and L2 decay.

``penalty`` is the reference (an autograd expression: value and gradient). ``PenaltyGrad`` is its gradient written by
hand for one image shape, with its buffers allocated once: the sign of each neighbour difference scattered back onto
both neighbours, plus the linear L2 term, in seven elementwise ops per call over the whole batch (see the class).
``maximize``'s fast path (``fused.Pipeline``) calls it in the forward pass, right after the render while the image is
still in cache; the optimiser needs the gradient, never the value. ``penalty_grad`` is the one-call form. ``tests/viz`` holds it equal to autograd of ``penalty``.
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


class PenaltyGrad:
    """``self(img)``: the gradient of ``penalty(img, tv, l2, centre)`` for images of ``shape`` ``[n, C, H, W]``, written
    into a buffer this object owns (overwritten by the next call). ``image`` is a buffer of that shape the caller may
    render into directly (then ``self(self.image)`` copies nothing).

    The batch is one flat array ``x`` of ``M = n C H W`` values behind ``W`` zeros; one subtraction of two strided views
    gives both neighbour differences of every value, ``d[0, k] = x[k] - x[k - W]`` and ``d[1, k] = x[k] - x[k - 1]``;
    ``sign(d)`` times a mask (the TV weight where ``(k - W, k)`` / ``(k - 1, k)`` is a pair inside one image plane /
    one row, else 0) is ``s``, and ``d TV / d x[k] = s[0, k] - s[0, k + W] + s[1, k] - s[1, k + 1]``: one more
    subtraction of ``s`` and its shifted view (``s`` has ``W`` zeros after it). Seven elementwise ops in all."""

    def __init__(self, shape: tuple[int, ...], tv: float, l2: float, centre: float, *,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        if len(shape) != 4:
            raise ValueError(f"image shape must be [n, C, H, W]; got {list(shape)}")
        n, c, h, w = shape
        self.shape, self.w, self.m = tuple(shape), w, n * c * h * w
        self.tv, self.l2 = float(tv), float(l2)
        # TV = sum|vertical diffs| / (c (h-1) w) + sum|horizontal diffs| / (c h (w-1)); no pairs along a length-1 axis
        a = self.tv / (c * (h - 1) * w) if h > 1 else 0.0
        b = self.tv / (c * h * (w - 1)) if w > 1 else 0.0
        self.q = 2 * self.l2 / (c * h * w)                   # the L2 gradient is q * img - q * centre
        kw = {"dtype": dtype, "device": device}
        self._x = torch.zeros(w + self.m, **kw)
        self.image = self._x[w:].view(self.shape)
        k = torch.arange(self.m, device=device)
        self._mask = torch.zeros(2, self.m + w, **kw)
        self._mask[0, :self.m] = ((k % (h * w)) >= w).to(dtype) * a
        self._mask[1, :self.m] = ((k % w) >= 1).to(dtype) * b
        self._s = torch.zeros(2, self.m + w, **kw)
        self._t = torch.zeros(2, self.m, **kw)
        self._g = torch.zeros(self.m, **kw)
        self._offset = torch.full((), -self.q * float(centre), **kw)
        # the views every call uses, made once (a view costs as much as a small op here)
        m, x, s = self.m, self._x, self._s
        self._here, self._before = x.as_strided((2, m), (0, 1), w), x.as_strided((2, m), (w - 1, 1), 0)
        self._s_here, self._s_after = s[:, :m], s.as_strided((2, m), (m + 1, 1), w)
        self._t0, self._t1, self._xv = self._t[0], self._t[1], x[w:]
        self.out = self._g.view(self.shape)                  # what every call returns (overwritten by the next)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape != self.image.shape:
            raise ValueError(f"PenaltyGrad was built for images {list(self.shape)}; got {list(img.shape)}")
        g = self._g
        if img.data_ptr() != self.image.data_ptr():
            self.image.copy_(img)
        if self.tv:
            torch.sub(self._here, self._before, out=self._s_here)       # both differences ending at every value
            self._s.sign_().mul_(self._mask)
            torch.sub(self._s_here, self._s_after, out=self._t)         # each sign minus the next pair's
            torch.add(self._t0, self._t1, out=g)
            if self.l2:
                g.add_(self._xv, alpha=self.q).add_(self._offset)
        elif self.l2:
            torch.add(self._offset, self._xv, alpha=self.q, out=g)
        else:
            g.zero_()
        return self.out


def penalty_grad(img: torch.Tensor, tv: float, l2: float, centre: float, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The gradient of ``penalty`` with respect to ``img`` (added into ``out`` in place when given)."""
    g = PenaltyGrad(tuple(img.shape), tv, l2, centre, dtype=img.dtype, device=img.device)(img.contiguous())
    return g if out is None else out.add_(g)
