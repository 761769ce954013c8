"""Neurofeedback paradigm helpers (arXiv 2505.13763): target axes (logistic-regression axis or principal components of
mean-pooled sentence states), labels from the model's own projections (binarised at the median), and the control
effect size: the model-agnostic pieces, checked on synthetic activations. The tasks on a model (in-context
reporting, explicit and implicit control) are in ``nf_tasks`` / ``nf_run``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from actlab.probe.acts import probe_acts
from actlab.probe.linear import fit_probe

if TYPE_CHECKING:
    from actlab.models import Model


def sentence_states(model: Model, texts: Sequence[str], site: str) -> torch.Tensor:
    """``[n, d]`` mean over tokens of the site's activations (the paradigm's sentence representation)."""
    return probe_acts(model, texts, site, position="mean")[site]


def unit(axis: torch.Tensor) -> torch.Tensor:
    n = float(axis.norm())
    if n == 0.0:
        raise ValueError("the axis is the zero vector")
    return axis / n


def project(h: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Projection of ``[n, d]`` states on the unit-normalised axis."""
    if h.shape[-1] != axis.shape[-1]:
        raise ValueError(f"states have width {h.shape[-1]}, the axis {axis.shape[-1]}")
    return h.float() @ unit(axis.float())


def median_labels(proj: torch.Tensor) -> torch.Tensor:
    """Binary labels ``proj > median`` made exactly balanced (ties broken by rank): n//2 ones."""
    if proj.dim() != 1 or len(proj) < 2:
        raise ValueError(f"need a 1-D projection of >= 2 values; got shape {list(proj.shape)}")
    order = torch.argsort(proj, stable=True)
    y = torch.zeros(len(proj), dtype=torch.long)
    y[order[len(proj) - len(proj) // 2:]] = 1
    return y


def effect_size(proj_1: torch.Tensor, proj_0: torch.Tensor) -> float:
    """Cohen's d: ``(mean_1 - mean_0) / pooled std`` of projections under target 1 vs target 0."""
    n1, n0 = len(proj_1), len(proj_0)
    if n1 < 2 or n0 < 2:
        raise ValueError(f"effect size needs >= 2 values per condition; got {n1} and {n0}")
    a, b = proj_1.double(), proj_0.double()
    v = ((n1 - 1) * a.var() + (n0 - 1) * b.var()) / (n1 + n0 - 2)
    return float((a.mean() - b.mean()) / v.sqrt())


def control_effect(h_1: torch.Tensor, h_0: torch.Tensor, axis: torch.Tensor) -> float:
    """Effect size of the projections on the axis normalised first (an unnormalised LR axis would scale by |w|)."""
    return effect_size(project(h_1, axis), project(h_0, axis))


def pca_axes(h: torch.Tensor, k: int, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``([k, d] unit axes, [k] explained-variance ratios)`` of centred states in decreasing variance; each axis
    sign-aligned to ``reference`` (``[k, d]`` or ``[d]``), else so its largest-magnitude entry is positive."""
    x = h.float() - h.float().mean(0)
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"k={k} must be in [1, {min(x.shape)}]")
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    axes, var = vt[:k].clone(), (s**2 / (s**2).sum())[:k]
    for i in range(k):
        ref = None if reference is None else (reference[i] if reference.dim() == 2 else reference)
        sign = torch.sign(axes[i] @ ref) if ref is not None else torch.sign(axes[i][axes[i].abs().argmax()])
        axes[i] *= sign if float(sign) != 0 else 1.0
    return axes, var


def lr_axis(h: torch.Tensor, y: torch.Tensor | Sequence[int], C: float = 1.0) -> torch.Tensor:
    """The logistic-regression axis predicting the dataset label (unit-normalised)."""
    return unit(fit_probe(h, y, "logistic", C=C).w)
