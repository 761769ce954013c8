"""Planted sparse-dictionary data and recovery scores (the family's shared synthetic benchmark)."""
from __future__ import annotations

import torch


def planted(n: int, d: int = 32, m: int = 128, p: float = 0.03, noise: float = 0.01, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x = c D* + noise with unit-norm atoms D* [m, d] and codes c >= 0 (each active w.p. p, |N(1, 0.25)|).
    Returns (x [n, d], D* [m, d], c [n, m])."""
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
    active = torch.rand(n, m, generator=g) < p
    mag = (1 + 0.25 * torch.randn(n, m, generator=g)).abs()
    c = active * mag
    x = c @ D + noise * torch.randn(n, d, generator=g)
    return x, D, c


def mmcs(true: torch.Tensor, learned: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean over true atoms of the max cosine with any learned row; also the per-atom max cosines."""
    t = torch.nn.functional.normalize(true.float(), dim=1)
    lrn = torch.nn.functional.normalize(learned.float(), dim=1)
    best = (t @ lrn.t()).max(1).values
    return float(best.mean()), best


def recovered(true: torch.Tensor, learned: torch.Tensor, cos: float = 0.9) -> float:
    """Fraction of true atoms matched by some learned row at cosine > ``cos``."""
    return float((mmcs(true, learned)[1] > cos).float().mean())
