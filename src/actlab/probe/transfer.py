"""Cross-model probe transfer by subspace alignment (ComnHallu, probes.md §4): each model's hidden states are
projected on their own top-k PCA basis, an orthogonal Procrustes map aligns the target's k coordinates to the
source's on paired inputs (the same texts through both models, any width), and a probe trained on source coordinates
scores target states mapped into the source frame."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from actlab.probe.linear import LinearProbe, fit_probe


def pca_basis(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean [d], P [d, k])``: the top-``k`` principal axes of ``x`` (orthonormal columns, variance order, each
    column's largest-magnitude entry positive so the basis is reproducible)."""
    if x.dim() != 2 or not 1 <= k <= min(x.shape):
        raise ValueError(f"PCA needs [n, d] rows and 1 <= k <= min(n, d); got shape {list(x.shape)}, k={k}")
    xx = x.double()
    mu = xx.mean(0)
    _, _, vh = torch.linalg.svd(xx - mu, full_matrices=False)
    p = vh[:k].T
    sign = torch.sign(p.gather(0, p.abs().argmax(0, keepdim=True)))
    return mu.float(), (p * sign).float()


def procrustes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The orthogonal ``R`` minimising ``|a R - b|_F`` (``U V^T`` from the SVD of ``a^T b``); rows paired."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"Procrustes needs paired [n, k] rows of equal shape; got {list(a.shape)} and {list(b.shape)}")
    u, _, vh = torch.linalg.svd(a.double().T @ b.double())
    return (u @ vh).float()


@dataclass
class SubspaceMap:
    """Source and target PCA frames and the Procrustes rotation from target coordinates to source coordinates."""

    mu_s: torch.Tensor
    P_s: torch.Tensor
    mu_t: torch.Tensor
    P_t: torch.Tensor
    R: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.R.shape[0])

    def source(self, x_s: torch.Tensor) -> torch.Tensor:
        """Source states -> their k PCA coordinates."""
        _width(x_s, self.P_s, "source")
        return (x_s.float() - self.mu_s) @ self.P_s

    def target(self, x_t: torch.Tensor) -> torch.Tensor:
        """Target states -> k coordinates in the source frame (PCA, then the Procrustes rotation)."""
        _width(x_t, self.P_t, "target")
        return ((x_t.float() - self.mu_t) @ self.P_t) @ self.R

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "d_source": int(self.P_s.shape[0]), "d_target": int(self.P_t.shape[0])}


def _width(x: torch.Tensor, p: torch.Tensor, what: str) -> None:
    if x.dim() != 2 or x.shape[1] != p.shape[0]:
        raise ValueError(f"{what} states have shape {list(x.shape)}; the map's {what} frame has width {p.shape[0]}")


def fit_subspace_map(x_s: torch.Tensor, x_t: torch.Tensor, k: int = 16) -> SubspaceMap:
    """PCA (k) of each model's paired states, then Procrustes from target to source coordinates."""
    if len(x_s) != len(x_t):
        raise ValueError(f"paired inputs: {len(x_s)} source rows but {len(x_t)} target rows")
    mu_s, p_s = pca_basis(x_s, k)
    mu_t, p_t = pca_basis(x_t, k)
    zs, zt = (x_s.float() - mu_s) @ p_s, (x_t.float() - mu_t) @ p_t
    return SubspaceMap(mu_s, p_s, mu_t, p_t, procrustes(zt, zs))


def transfer_probe(smap: SubspaceMap, x_s: torch.Tensor, y_s: torch.Tensor, method: str = "logistic",
                   **fit_kw: Any) -> LinearProbe:
    """A probe on the source's k coordinates, returned as a probe on raw target states
    (``w_t = P_t R w``, ``b_t = b - mu_t . w_t``), so it scores target activations directly."""
    p = fit_probe(smap.source(x_s), y_s, method, **fit_kw)
    w_t = smap.P_t @ (smap.R @ p.w)
    return LinearProbe(w_t, p.b - float(smap.mu_t @ w_t), method, position="token",
                       meta={"transfer": smap.to_json()})
