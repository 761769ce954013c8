"""Background activation suppression (BAS) for weakly supervised localisation: a foreground map ``M`` should hold the
class activation ``A``; ``L_bg = sum(A * (1 - M)) / sum(A)`` (background activation ratio) plus ``beta * mean(M)``
(area). Here: the objective, an exhaustive search over axis-aligned boxes (integral image, every box at once), and
localisation on a real classifier from its Grad-CAM map read through ``model.recording(..., grad=True)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model


def bas_loss(act_map: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``L_bg + beta * L_area`` for a non-negative activation map and a (soft) foreground mask of the same shape."""
    if act_map.shape != mask.shape:
        raise ValueError(f"activation map {list(act_map.shape)} and mask {list(mask.shape)} differ in shape")
    total = act_map.sum().clamp_min(1e-12)
    return (act_map * (1 - mask)).sum() / total + beta * mask.mean()


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """``[h, w]`` mask of ``box = (top, left, bottom, right)`` (inclusive-exclusive)."""
    m = torch.zeros(h, w)
    t, le, b, r = box
    m[t:b, le:r] = 1
    return m


def box_losses(act_map: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses [n], boxes [n, 4]) of ``bas_loss`` for every axis-aligned box of the map (float64)."""
    a = act_map.double().clamp_min(0)
    h, w = a.shape
    ii = torch.zeros(h + 1, w + 1, dtype=torch.float64)
    ii[1:, 1:] = a.cumsum(0).cumsum(1)
    t, b = torch.triu_indices(h + 1, h + 1, 1)                          # 0 <= t < b <= h
    le, r = torch.triu_indices(w + 1, w + 1, 1)
    T, L = t[:, None].expand(-1, len(le)).reshape(-1), le[None].expand(len(t), -1).reshape(-1)
    B, R = b[:, None].expand(-1, len(le)).reshape(-1), r[None].expand(len(t), -1).reshape(-1)
    inside = ii[B, R] - ii[T, R] - ii[B, L] + ii[T, L]
    area = ((B - T) * (R - L)).double() / (h * w)
    loss = 1 - inside / ii[h, w].clamp_min(1e-12) + beta * area
    return loss, torch.stack([T, L, B, R], 1)


def best_box(act_map: torch.Tensor, beta: float, atol: float = 1e-12) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """(the minimising box, every box tied with it within ``atol``) of ``L_bg + beta * L_area``."""
    loss, boxes = box_losses(act_map, beta)
    lo = loss.min()
    ties = boxes[loss <= lo + atol]
    best = boxes[int(loss.argmin())]
    return tuple(best.tolist()), [tuple(b) for b in ties.tolist()]


def grad_cam(model: Model, x: torch.Tensor, cls: int, site: str) -> torch.Tensor:
    """``[H, W]`` Grad-CAM map of class ``cls`` at a conv ``site`` (channels weighted by their mean gradient,
    ReLU), upsampled to the input's size."""
    with model.recording([site], grad=True) as rec:
        out = model.module(x)
        out = out.logits if hasattr(out, "logits") else out
        out[0, cls].backward()
    act, g = rec[site].detach(), rec.grad(site)
    if act.dim() != 4:
        raise ValueError(f"grad_cam needs a conv site [batch, C, H, W]; {site} gives {list(act.shape)}")
    cam = torch.relu((g.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    return torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def bas_localize(model: Model, x: torch.Tensor, cls: int, site: str, beta: float = 0.2) -> tuple[int, ...]:
    """The box minimising the BAS objective on the model's Grad-CAM map of ``cls`` at ``site`` for ``x`` [1, ...]."""
    return best_box(grad_cam(model, x, cls, site), beta)[0]
