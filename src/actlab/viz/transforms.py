"""The random transformations of activation maximisation (jitter = translation, scaling), reflected borders.

``random_transform`` is the reference: one ``affine_grid`` + bilinear ``grid_sample`` per call. ``TransformPlan`` is
the fast path ``maximize`` uses: an axis-aligned affine bilinear resampling is separable, so each step's transform is
two small interpolation matrices ``Ry [H, H]`` and ``Rx [W, W]`` (``out = Ry @ x @ Rx^T``), built for every step at once
before the loop. On small images ``grid_sample``'s CPU backward and ``affine_grid`` cost more than the model's own
step; two matmuls cost a few microseconds. ``tests/viz`` holds the two equal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def draw(jitter: int, scale: float, gen: torch.Generator) -> tuple[float, int, int]:
    """One step's (scale factor, tx, ty): a factor in ``[1 - scale, 1 + scale]``, shifts in ``[-jitter, jitter]``."""
    s = 1.0 + (2 * torch.rand((), generator=gen).item() - 1) * scale
    tx, ty = (torch.randint(-jitter, jitter + 1, (2,), generator=gen) if jitter else torch.zeros(2)).tolist()
    return s, int(tx), int(ty)


def random_transform(x: torch.Tensor, jitter: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Translate by up to ``jitter`` pixels and scale by ``1 +- scale`` (one draw per batch), reflected borders."""
    if not jitter and not scale:
        return x
    h, w = x.shape[-2:]
    s, tx, ty = draw(jitter, scale, gen)
    theta = torch.tensor([[1 / s, 0, 2 * tx / w], [0, 1 / s, 2 * ty / h]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def interp_matrices(n: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``[k, n, n]``: row ``j`` of matrix ``i`` holds the bilinear weights with which output pixel ``j`` reads the input
    along one axis of length ``n`` after scaling by ``s[i]`` and shifting by ``t[i]`` pixels, exactly as
    ``grid_sample(align_corners=False, padding_mode="reflection")`` samples (reflect about the outer pixel edges, clip
    to the pixel centres, zero weight outside)."""
    s, t = s.double()[:, None], t.double()[:, None]
    base = (2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1           # pixel centres in [-1, 1]
    c = ((base / s + 2 * t / n + 1) * n - 1) / 2                             # source coordinate in pixels
    d = (c + 0.5).abs()                                                     # reflect about -0.5 and n - 0.5
    flips, extra = torch.floor(d / n), torch.fmod(d, n)
    c = torch.where(flips % 2 == 0, extra - 0.5, n - extra - 0.5).clamp(0, n - 1)
    i0 = c.floor()
    w1 = (c - i0)[..., None]                    # 0 at the last pixel (c is clipped to n - 1), so i1 may repeat it
    i0 = i0.long()[..., None]
    r = torch.zeros(*c.shape, n, dtype=torch.float64)
    return r.scatter_add_(-1, i0, 1 - w1).scatter_add_(-1, (i0 + 1).clamp_(max=n - 1), w1)


class TransformPlan:
    """The transforms of ``steps`` steps drawn up front (the same draws, in the same order, as ``steps`` calls of
    ``random_transform`` with ``gen``), applied as ``Ry @ x @ Rx^T``."""

    def __init__(self, steps: int, h: int, w: int, jitter: int, scale: float, gen: torch.Generator, *,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.active = bool(jitter or scale) and steps > 0
        if not self.active:
            return
        s, tx, ty = (torch.tensor(v) for v in zip(*(draw(jitter, scale, gen) for _ in range(steps))))
        if h == w:                                  # both axes in one call
            ry, rx = interp_matrices(h, torch.cat([s, s]), torch.cat([ty, tx])).to(dtype=dtype, device=device).split(steps)
        else:
            ry = interp_matrices(h, s, ty).to(dtype=dtype, device=device)
            rx = interp_matrices(w, s, tx).to(dtype=dtype, device=device)
        self.ry, self.rx = ry.unbind(0), rx.unbind(0)
        self.ryt, self.rxt = ry.transpose(1, 2).contiguous().unbind(0), rx.transpose(1, 2).contiguous().unbind(0)

    def matrices(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(Ry [H, H], Rx^T [W, W])`` of step ``step`` (``(None, None)``: no transform)."""
        return (self.ry[step], self.rxt[step]) if self.active else (None, None)

    def adjoint(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ry^T, Rx)`` of step ``step``, contiguous: ``Ry^T @ g @ Rx`` maps a gradient back through the transform."""
        return self.ryt[step], self.rx[step]

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Step ``step``'s transform of ``x`` [n, C, H, W]."""
        if not self.active:
            return x
        return torch.matmul(torch.matmul(self.ry[step], x), self.rxt[step])
