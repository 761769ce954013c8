"""Gradient-aware TopK SAE (g-SAE, "Features that Make a Difference", arXiv 2411.10397).

Latent selection uses ``s = z * (1 + beta * |W_dec g| / mean|W_dec g|)`` where ``g`` is the downstream loss
gradient at the site for that token (detached: it only changes which latents fire); kept latents use their plain
values ``z``. ``beta = 0`` is exactly TopK. Without a gradient (inference) it falls back to plain TopK.
"""
from __future__ import annotations

import torch

from actlab.dictionary.base import register_arch
from actlab.dictionary.sparse_ops import Selector, topk_selector
from actlab.dictionary.topk import TopKSAE


def gradient_selector(k: int, beta: float, grad: torch.Tensor, W_dec: torch.Tensor) -> Selector:
    """Top-k by gradient-weighted score; returns the plain ReLU values at the chosen latents."""
    with torch.no_grad():
        a = (grad.to(W_dec.dtype) @ W_dec.detach().t()).abs_()          # [B, n] = |d_i . g|
        a /= a.mean().clamp_min(1e-12)

    def select(pre: torch.Tensor):
        z = pre.relu_()
        score = z * (1 + beta * a)
        _, idx = score.topk(k, dim=-1, sorted=False)
        return z.gather(-1, idx), idx
    return select


@register_arch
class GradientSAE(TopKSAE):
    """TopK SAE whose training selection weights latents by their effect on the downstream loss."""

    arch = "gsae"

    def selector(self, grad: torch.Tensor | None = None, **kw) -> Selector:
        if grad is None or self.cfg.gsae_beta == 0:
            return topk_selector(self.cfg.k)
        return gradient_selector(self.cfg.k, self.cfg.gsae_beta, grad, self.W_dec)

    def step(self, x, y, dead=None, grad=None, **kw):
        if grad is None and self.cfg.gsae_beta != 0:
            raise ValueError("g-SAE training needs the downstream-loss gradient with every batch ((x, y, grad) "
                             "batches: model_source(..., with_grad=True), or train on the fly with --model/--data); "
                             "without it the selection is plain TopK (use --arch topk for that)")
        if grad is not None:
            grad = grad.to(x.device, x.dtype)
        return super().step(x, y, dead=dead, grad=grad, **kw)

    def encode_with_grad(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Dense acts using the gradient-aware selection (the paper's inference mode with labels)."""
        x = self.check_input(x)
        pre = self.pre_acts(x)
        vals, idx = self.selector(grad=grad)(pre.clone())
        return torch.zeros_like(pre).scatter_(-1, idx, vals)
