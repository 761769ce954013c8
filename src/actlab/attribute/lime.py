"""LIME-style perturbation attributions with a choice of masking: layer masking vs grey/black/mean fill.

Random subsets of image segments are removed; a kernel-weighted ridge regression of the target on the kept-segment
indicators gives one weight per segment. Running it with each masking shows how much the fill colour (missingness
bias) changes the explanation (the comparison of patching.md section 4).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from actlab.attribute.layer_masking import LayerMaskConfig, fill_mask, layer_masked_forward

if TYPE_CHECKING:
    from actlab.models import Model

MASKINGS = ("layer", "black", "grey", "mean")


def grid_segments(h: int, w: int, n: int) -> torch.Tensor:
    """[h, w] segment labels of an ``n x n`` grid (row-major)."""
    if n < 1 or n > min(h, w):
        raise ValueError(f"grid size must be in [1, {min(h, w)}], got {n}")
    rows = torch.arange(h) * n // h
    cols = torch.arange(w) * n // w
    return rows[:, None] * n + cols[None, :]


def masked_predictor(model: Model | torch.nn.Module, target: Callable, masking: str = "layer",
                     cfg: LayerMaskConfig | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``predict(x [1, C, H, W], masks [r, H, W]) -> [r]`` removing the masked pixels with ``masking``."""
    if masking not in MASKINGS:
        raise ValueError(f"unknown masking {masking!r}; use one of {MASKINGS}")
    module = model.module if hasattr(model, "module") else model

    def predict(x, masks):
        xb = x.expand(masks.shape[0], *x.shape[1:])
        with torch.no_grad():
            if masking == "layer":
                out = layer_masked_forward(model, xb, masks[:, None], cfg)
            else:
                out = module(fill_mask(xb, masks[:, None], masking))
            return target(out).float()
    return predict


def lime_attribution(predict: Callable, x: torch.Tensor, segments: torch.Tensor, *, n_samples: int = 200,
                     keep_prob: float = 0.5, kernel_width: float = 0.25, ridge: float = 1e-3, seed: int = 0,
                     batch_size: int = 32) -> torch.Tensor:
    """One weight per segment: ridge fit of ``predict`` on kept-segment indicators, LIME's cosine-distance kernel."""
    n_seg = int(segments.max()) + 1
    if n_samples < n_seg + 1:
        raise ValueError(f"n_samples={n_samples} is too few for {n_seg} segments (need > {n_seg})")
    g = torch.Generator().manual_seed(seed)
    z = (torch.rand(n_samples, n_seg, generator=g) < keep_prob).float()
    z[0] = 1.0  # the unperturbed image
    z[z.sum(1) == 0, 0] = 1.0  # never remove everything
    seg = segments.to(x.device).long()
    ys = []
    for lo in range(0, n_samples, batch_size):
        masks = z[lo:lo + batch_size].to(x.device)[:, seg]  # [r, H, W]
        ys.append(predict(x, masks).cpu())
    y = torch.cat(ys).double()
    dist = 1 - z.sum(1) / torch.sqrt(z.sum(1) * n_seg)  # cosine distance to the all-kept vector
    wts = torch.exp(-(dist ** 2) / kernel_width ** 2).double()
    zz = torch.cat([z.double(), torch.ones(n_samples, 1, dtype=torch.float64)], 1)
    a = zz.T @ (wts[:, None] * zz) + ridge * torch.eye(n_seg + 1, dtype=torch.float64)
    beta = torch.linalg.solve(a, zz.T @ (wts * y))
    return beta[:n_seg].float()


def compare_masking(model: Model | torch.nn.Module, x: torch.Tensor, segments: torch.Tensor, target: Callable, *,
                    maskings=("layer", "grey", "black"), **lime_kw) -> dict[str, torch.Tensor]:
    """LIME weights per masking method (same random perturbations for each), for side-by-side comparison."""
    return {mk: lime_attribution(masked_predictor(model, target, mk), x, segments, **lime_kw) for mk in maskings}


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of two weight vectors (how much two maskings agree on the explanation)."""
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum())) or 1.0
    return float((ra * rb).sum()) / den
