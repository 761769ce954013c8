"""Semi-NMF of MLP activations (arXiv 2506.10920): A [neurons x tokens] ~ F G^T with F unconstrained (features in
neuron space, winner-take-all sparse columns) and G >= 0 (per-token coefficients), by Ding et al.'s multiplicative
updates; k-means / SVD / random initialisation, best of several restarts by reconstruction loss."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass
class SNMFResult:
    F: torch.Tensor
    """[d, K] features in neuron space (sparse columns)."""
    G: torch.Tensor
    """[n, K] non-negative coefficients per token."""
    loss: float
    """Best ||A - F G^T||_F^2 reached."""
    history: list[float] = field(default_factory=list)
    """Loss per iteration of the returned run (not best-so-far)."""
    g_min: list[float] = field(default_factory=list)
    """Smallest entry of G after each iteration of the returned run (the G >= 0 invariant, checked every step)."""


def _pos(m):
    return (m.abs() + m) / 2


def _neg(m):
    return (m.abs() - m) / 2


def _kmeans(X: torch.Tensor, K: int, g: torch.Generator, iters: int = 30) -> torch.Tensor:
    """Labels of k-means (k-means++ seeding) on the rows of X."""
    n = X.shape[0]
    cent = X[torch.randint(0, n, (1,), generator=g)]
    for _ in range(1, K):
        d2 = torch.cdist(X, cent).min(1).values.pow(2)
        cent = torch.cat([cent, X[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
    for _ in range(iters):
        lab = torch.cdist(X, cent).argmin(1)
        for k in range(K):
            sel = lab == k
            if sel.any():
                cent[k] = X[sel].mean(0)
    return torch.cdist(X, cent).argmin(1)


def _init(A: torch.Tensor, K: int, how: str, g: torch.Generator) -> torch.Tensor:
    n = A.shape[1]
    if how == "kmeans":
        lab = _kmeans(A.t(), K, g)
        G = torch.nn.functional.one_hot(lab, K).to(A.dtype) + 0.2
    elif how == "svd":
        _, S, Vh = torch.linalg.svd(A, full_matrices=False)
        G = Vh[:K].t().abs() * S[:K] + 0.2 * S[:K].mean() / math.sqrt(n)
    elif how == "random":
        G = torch.rand(n, K, generator=g, dtype=A.dtype) + 0.1
    else:
        raise ValueError(f"init must be kmeans, svd or random; got {how!r}")
    return G


def snmf_run(A: torch.Tensor, K: int, sparsity: float = 0.01, iters: int = 500, patience: int = 1500,
             init: str = "kmeans", seed: int = 0, eps: float = 1e-6) -> SNMFResult:
    """One factorisation; returns the best iterate (the WTA step makes the objective non-monotone)."""
    if A.dim() != 2:
        raise ValueError(f"A must be [neurons, tokens]; got shape {list(A.shape)}")
    if not bool(torch.isfinite(A).all()):
        raise ValueError("A contains NaN/inf")
    A = A.double()
    d = A.shape[0]
    g = torch.Generator().manual_seed(seed)
    G = _init(A, K, init, g)
    keep = max(1, math.ceil(sparsity * d))
    eye = eps * torch.eye(K, dtype=A.dtype)
    best, best_FG, since, hist, g_min = math.inf, None, 0, [], []
    for _ in range(iters):
        F = A @ G @ torch.linalg.inv(G.t() @ G + eye)
        if keep < d:
            thr = F.abs().topk(keep, dim=0).values[-1:]
            F = F * (F.abs() >= thr)
        norms = G.norm(dim=0).clamp_min(1e-12)
        G = G / norms
        F = F * norms
        AtF, FtF = A.t() @ F, F.t() @ F
        G = G * torch.sqrt((_pos(AtF) + G @ _neg(FtF)) / (_neg(AtF) + G @ _pos(FtF) + 1e-6))
        loss = float((A - F @ G.t()).pow(2).sum())
        hist.append(loss)
        g_min.append(float(G.min()))
        if loss < best:
            best, best_FG, since = loss, (F.clone(), G.clone()), 0
        else:
            since += 1
            if since >= patience:
                break
    if best_FG is None:
        raise ValueError(f"semi-NMF diverged: no finite reconstruction loss in {len(hist)} iterations (G min "
                         f"{min(g_min, default=float('nan')):.3g}; A norm {float(A.norm()):.3g})")
    return SNMFResult(best_FG[0], best_FG[1], best, hist, g_min)


def snmf(A: torch.Tensor, K: int, restarts: int = 5, seed: int = 0, **kw) -> SNMFResult:
    """Best of ``restarts`` runs (different seeds) by reconstruction loss. A is neurons x tokens."""
    runs = [snmf_run(A, K, seed=seed + r, **kw) for r in range(restarts)]
    return min(runs, key=lambda r: r.loss)
