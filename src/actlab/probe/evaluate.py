"""Probe evaluation: k-fold cross-validated AUROC (out-of-fold scores, bootstrap 95% interval), balanced accuracy,
and the controls every probe report should carry (shuffled labels, random direction)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from actlab.probe.linear import LinearProbe, fit_probe
from actlab.probe.metrics import (
    Interval,
    auroc,
    balanced_accuracy,
    bootstrap_auroc,
    check_labels,
    stratified_folds,
)


@dataclass
class ProbeEval:
    """``auroc`` with its bootstrap interval, balanced accuracy at the probe's threshold, and the scores used."""

    auroc: Interval
    balanced_accuracy: float
    n: int
    scores: torch.Tensor
    labels: torch.Tensor
    controls: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"auroc": self.auroc.to_json(), "balanced_accuracy": self.balanced_accuracy, "n": self.n,
                "n_positive": int(self.labels.sum()), "controls": self.controls}


def evaluate(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor | np.ndarray | list, *, n_boot: int = 1000,
             seed: int = 0) -> ProbeEval:
    """AUROC (bootstrap interval) and balanced accuracy of a trained probe on held-out activations."""
    yy = torch.as_tensor(check_labels(y))
    s = probe.score(x).detach().cpu()
    return ProbeEval(bootstrap_auroc(s, yy, n_boot=n_boot, seed=seed),
                     balanced_accuracy(s >= probe.threshold, yy), len(yy), s, yy)


def cross_validate(x: torch.Tensor, y: torch.Tensor | np.ndarray | list, method: str = "logistic", *, folds: int = 5,
                   seed: int = 0, n_boot: int = 1000, controls: bool = True, **fit_kw: Any) -> ProbeEval:
    """Stratified ``folds``-fold CV: each row scored by a probe that never saw it; AUROC over the pooled out-of-fold
    scores with a bootstrap interval. ``controls`` adds the shuffled-label CV AUROC and a random direction's AUROC
    (both should sit near 0.5)."""
    yy = torch.as_tensor(check_labels(y))
    oof, pred = _oof(x, yy, method, folds, seed, fit_kw)
    out = ProbeEval(bootstrap_auroc(oof, yy, n_boot=n_boot, seed=seed), balanced_accuracy(pred, yy), len(yy), oof, yy)
    if controls:
        g = torch.Generator().manual_seed(seed + 1)
        perm = torch.randperm(len(yy), generator=g)
        shuf, _ = _oof(x, yy[perm], method, folds, seed, fit_kw)
        out.controls["shuffled_labels_auroc"] = auroc(shuf, yy[perm])
        rand = torch.randn(x.shape[1], generator=g)
        out.controls["random_direction_auroc"] = auroc(x.float() @ rand, yy)
    return out


def _oof(x: torch.Tensor, y: torch.Tensor, method: str, folds: int, seed: int,
         fit_kw: dict) -> tuple[torch.Tensor, torch.Tensor]:
    oof = torch.empty(len(y))
    pred = torch.empty(len(y), dtype=torch.bool)
    for test in stratified_folds(y, folds, seed):
        t = torch.as_tensor(test)
        train = torch.ones(len(y), dtype=torch.bool)
        train[t] = False
        p = fit_probe(x[train], y[train], method, **fit_kw)
        oof[t] = p.score(x[t]).cpu()
        pred[t] = oof[t] >= p.threshold
    return oof, pred
