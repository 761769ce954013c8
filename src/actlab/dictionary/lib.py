"""Local Interaction Basis (LIB, arXiv 2405.10928) for small sequential networks: computed backwards from the
output, each layer is whitened (Gram eigenbasis), rotated onto the eigenvectors of E[J^T J] of the map to the next
layer's LIB coordinates, and scaled by sqrt(Lambda); directions without variance or without downstream effect are
dropped. Float64 throughout (the reference needed it). Biases are not folded in (no constant coordinate)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class LIBLayer:
    C: torch.Tensor
    """[k, d] LIB transform: f_hat = C f (rows = kept directions, most important first)."""
    importance: torch.Tensor
    """[k] Lambda of each kept direction (for the final layer: its Gram eigenvalues)."""
    gram_eigvals: torch.Tensor
    """[d] eigenvalues of E[f f^T] (descending), before dropping."""


def _eigh_desc(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w, V = torch.linalg.eigh(M)
    return w.flip(0), V.flip(1)


def lib(acts: Sequence[torch.Tensor], maps: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        gram_tol: float = 1e-5, lam_tol: float = 1e-8) -> list[LIBLayer]:
    """``acts[l]`` = activations [n, d_l] of layer l (l = 0..L), ``maps[l]`` maps layer l to l+1 (one sample
    ``[d_l] -> [d_{l+1}]``, differentiable). Returns one LIBLayer per layer."""
    if len(maps) != len(acts) - 1:
        raise ValueError(f"need len(maps) == len(acts) - 1; got {len(maps)} maps for {len(acts)} layers")
    acts = [a.double() for a in acts]
    L = len(acts) - 1
    out: list[LIBLayer | None] = [None] * (L + 1)
    G = acts[L].t() @ acts[L] / acts[L].shape[0]
    D, U = _eigh_desc(G)
    keep = D > gram_tol * D[0].clamp_min(1e-300)
    out[L] = LIBLayer(C=U[:, keep].t().contiguous(), importance=D[keep], gram_eigvals=D)
    for l in range(L - 1, -1, -1):
        f = acts[l]
        G = f.t() @ f / f.shape[0]
        D, U = _eigh_desc(G)
        keep = D > gram_tol * D[0].clamp_min(1e-300)
        Uk, Dk = U[:, keep], D[keep]
        C_next = out[l + 1].C
        fn = maps[l]
        jac = torch.func.vmap(torch.func.jacrev(lambda v: fn(v).double()))(f)       # [n, d_{l+1}, d_l]
        A = C_next @ jac @ (Uk * Dk.sqrt())                                          # d f_hat_{l+1} / d f_tilde
        M = torch.einsum("nij,nik->jk", A, A) / f.shape[0]
        lam, V = _eigh_desc(M)
        kept = lam > lam_tol * lam[0].clamp_min(1e-300)
        C = (lam[kept].sqrt()[:, None] * V[:, kept].t()) @ (Uk / Dk.sqrt()).t()
        out[l] = LIBLayer(C=C, importance=lam[kept], gram_eigvals=D)
    return out  # type: ignore[return-value]


def interaction_graph(layers: list[LIBLayer], acts: Sequence[torch.Tensor], maps, l: int) -> torch.Tensor:
    """E_ij = E[(d f_hat_{l+1, j} / d f_hat_{l, i} * f_hat_{l, i})^2], shape [k_l, k_{l+1}]."""
    f = acts[l].double()
    C, C_next = layers[l].C, layers[l + 1].C
    jac = torch.func.vmap(torch.func.jacrev(lambda v: maps[l](v).double()))(f)
    d = C_next @ jac @ torch.linalg.pinv(C)                                          # [n, k_{l+1}, k_l]
    fh = f @ C.t()                                                                   # [n, k_l]
    return (d * fh[:, None, :]).pow(2).mean(0).t()
