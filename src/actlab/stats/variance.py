"""Variance of a layer explained by each latent feature of the data (Lampinen et al., representation biases).

``R²_f = sum_c n_c |mean_c - mean|² / sum_i |h_i - mean|²``: the share of (centred) activation variance carried by
the class-conditional means of feature f (a linear regression of H on the one-hot of f). Also joint R², the
alignment of the top principal components with each feature, and linear decoding accuracy.
"""
from __future__ import annotations

from itertools import product

import torch


def variance_explained(h: torch.Tensor, labels: torch.Tensor) -> float:
    """R² of ``h`` ``[n, d]`` explained by the discrete feature ``labels`` ``[n]`` (between-class / total SS)."""
    h = torch.as_tensor(h).double()
    labels = torch.as_tensor(labels).reshape(-1)
    if h.dim() != 2 or h.shape[0] != labels.shape[0]:
        raise ValueError(f"need h [n, d] and labels [n]; got {list(h.shape)} and {list(labels.shape)}")
    hc = h - h.mean(0)
    total = float((hc ** 2).sum())
    if total == 0:
        return 0.0
    between = 0.0
    for c in torch.unique(labels):
        sel = labels == c
        between += int(sel.sum()) * float((hc[sel].mean(0) ** 2).sum())
    return between / total


def joint_labels(*features: torch.Tensor) -> torch.Tensor:
    """One label per combination of several discrete features (for the joint R²)."""
    out = torch.zeros_like(torch.as_tensor(features[0]).reshape(-1))
    for f in features:
        f = torch.as_tensor(f).reshape(-1)
        out = out * (int(f.max()) + 1) + f
    return out


def pc_alignment(h: torch.Tensor, features: dict[str, torch.Tensor], n_pcs: int = 5) -> dict[str, list[float]]:
    """For each of the top ``n_pcs`` principal components, the R² of its scores explained by each feature."""
    h = torch.as_tensor(h).double()
    hc = h - h.mean(0)
    _, _, v = torch.linalg.svd(hc, full_matrices=False)
    scores = hc @ v[:n_pcs].T
    return {name: [variance_explained(scores[:, i:i + 1], f) for i in range(scores.shape[1])]
            for name, f in features.items()}


def decoding_accuracy(h: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3) -> float:
    """Accuracy of a least-squares linear read-out of the one-hot labels from ``h`` (fit and scored on the same
    set: a check that the feature is linearly present, not a generalisation estimate)."""
    h = torch.as_tensor(h).double()
    labels = torch.as_tensor(labels).reshape(-1)
    classes, inv = torch.unique(labels, return_inverse=True)
    x = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
    y = torch.nn.functional.one_hot(inv, len(classes)).double()
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=h.dtype), x.T @ y)
    return float(((x @ w).argmax(1) == inv).double().mean())


def feature_report(h: torch.Tensor, features: dict[str, torch.Tensor], n_pcs: int = 5) -> dict:
    """R² per feature, joint R², PC alignment and decoding accuracy, as a JSON-able dict."""
    return {
        "r2": {k: variance_explained(h, f) for k, f in features.items()},
        "r2_joint": variance_explained(h, joint_labels(*features.values())),
        "pc_alignment": pc_alignment(h, features, n_pcs),
        "decoding_accuracy": {k: decoding_accuracy(h, f) for k, f in features.items()},
    }


def all_bit_patterns(n_bits: int) -> torch.Tensor:
    """All ``2**n_bits`` {0,1} patterns as floats ``[2**n, n]``."""
    return torch.tensor(list(product([0.0, 1.0], repeat=n_bits)))
