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


def planted_mlp(n: int, d: int = 32, m: int = 64, bias: float = -1.5, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transcoder benchmark: ``y = W_out ReLU(W_in x + b_in)`` on ``x ~ N(0, I)``, unit-norm rows of W_in and
    columns of W_out, a negative bias so hidden units are sparse (bias -1.5: ~6.7% active, ~4 per row).
    Returns (x [n, d], y [n, d], W_in [m, d], W_out [d, m])."""
    g = torch.Generator().manual_seed(seed)
    W_in = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
    W_out = torch.nn.functional.normalize(torch.randn(d, m, generator=g), dim=0)
    x = torch.randn(n, d, generator=g)
    y = (x @ W_in.t() + bias).relu() @ W_out.t()
    return x, y, W_in, W_out


def planted_quiet(n: int, d: int = 32, n_loud: int = 32, n_quiet: int = 16, p_loud: float = 0.1,
                  p_quiet: float = 0.15, loud: float = 3.0, align: float = 0.8, seed: int = 0) -> dict:
    """The g-SAE benchmark: loud atoms (magnitude ``loud``x) orthogonal to a readout ``w``, quiet atoms with
    component ``align`` along it; downstream loss ``L = (w . x_hat - y)^2`` with ``y = w . x + eps`` (fresh noise), so
    the gradient at the clean input is ``g = -2 eps w``. Returns dict(x, grad, y, w, loud_atoms, quiet_atoms)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(d)
    w[0] = 1.0

    def orth(m):
        a = torch.randn(m, d, generator=g)
        a[:, 0] = 0
        return torch.nn.functional.normalize(a, dim=1)
    L = orth(n_loud)
    Q = align * w + (1 - align ** 2) ** 0.5 * orth(n_quiet)
    cl = (torch.rand(n, n_loud, generator=g) < p_loud) * loud * (1 + 0.25 * torch.randn(n, n_loud, generator=g)).abs()
    cq = (torch.rand(n, n_quiet, generator=g) < p_quiet) * (1 + 0.25 * torch.randn(n, n_quiet, generator=g)).abs()
    x = cl @ L + cq @ Q + 0.01 * torch.randn(n, d, generator=g)
    eps = torch.randn(n, generator=g)
    return {"x": x, "grad": (-2 * eps)[:, None] * w[None], "y": x @ w + eps, "w": w, "loud_atoms": L,
            "quiet_atoms": Q}
