"""Generic trigger scan for an image classifier (Neural-Cleanse style reverse engineering).

For every candidate target class t, optimise a mask ``m = sigmoid(mu)`` [1, H, W] and a pattern
``p = sigmoid(nu)`` [C, H, W] so that clean images stamped ``(1 - m) x + m p`` are classified as t, with an L1
penalty on m: ``CE(f(x'), t) + lam * |m|_1 / (H W)``. A backdoor target needs a far smaller mask than any other
class, so the detection score is the anomaly index of the smallest mask norm:
``(median - min) / (1.4826 * MAD)`` over classes (> 2 flags a backdoor). The winning mask locates the patch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actlab.probe import Interval, wilson
from actlab.security.trigger import Trigger, predict


@dataclass
class ScanConfig:
    """Budget of the per-class trigger optimisation."""

    steps: int = 150
    """Adam steps per class"""
    lr: float = 0.2
    """Adam learning rate on the mask/pattern logits"""
    lam: float = 8.0
    """weight of the mask L1 penalty (mean over pixels); on 8x8 digits, 8 recovers the planted 2x2 patch exactly
    while 0.5-2 lets every class draw its own digit shape"""
    batch_size: int = 64
    """clean images per step"""
    seed: int = 0
    """seed of initialisation and batches"""
    threshold: float = 2.0
    """anomaly index above which the model is flagged"""


@dataclass
class ScanResult:
    """Per-class mask L1 norms and attack rates of the inverted triggers, the flagged class and its trigger."""

    l1: list[float]
    success: list[float]
    anomaly_index: float
    flagged: bool
    target: int
    trigger: Trigger
    asr: Interval
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"l1": self.l1, "success": self.success, "anomaly_index": self.anomaly_index, "flagged": self.flagged,
                "target": self.target, "trigger": self.trigger.to_json(), "asr_inverted": self.asr.to_json(),
                **self.extra}


def anomaly_index(values: list[float] | torch.Tensor) -> float:
    """``(median - min) / (1.4826 * MAD)``: how far the smallest value sits below the rest (robust z-score)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if len(v) < 3:
        raise ValueError(f"an anomaly index needs at least 3 classes; got {len(v)}")
    med = v.median()
    mad = (v - med).abs().median() * 1.4826
    return float((med - v.min()) / (mad + 1e-12))


def invert_class(model: nn.Module, x: torch.Tensor, target: int, cfg: ScanConfig) -> tuple[Trigger, float]:
    """Reverse-engineer the smallest trigger sending clean ``x`` to ``target``; returns (trigger, success rate)."""
    _, c, h, w = x.shape
    g = torch.Generator().manual_seed(cfg.seed + 1000 * target)
    mu = torch.full((1, h, w), -2.0).add_(0.1 * torch.randn(1, h, w, generator=g)).requires_grad_(True)
    nu = (0.1 * torch.randn(c, h, w, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([mu, nu], lr=cfg.lr)
    was = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        tgt = torch.full((min(cfg.batch_size, len(x)),), target)
        for _ in range(cfg.steps):
            idx = torch.randint(0, len(x), (len(tgt),), generator=g)
            m, p = torch.sigmoid(mu), torch.sigmoid(nu)
            xs = (1 - m) * x[idx] + m * p
            loss = nn.functional.cross_entropy(model(xs), tgt) + cfg.lam * m.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was)
    trig = Trigger(torch.sigmoid(mu).detach().expand(c, h, w).clone(), torch.sigmoid(nu).detach())
    rate = float((predict(model, trig.stamp(x)) == target).float().mean())
    return trig, rate


def scan(model: nn.Module, x_clean: torch.Tensor, n_classes: int, cfg: ScanConfig | None = None,
         y_clean: torch.Tensor | None = None) -> ScanResult:
    """Invert a trigger for every class on clean images and flag the class whose mask is anomalously small."""
    cfg = cfg or ScanConfig()
    if x_clean.dim() != 4 or len(x_clean) == 0:
        raise ValueError(f"x_clean must be a non-empty [N, C, H, W] batch; got {list(x_clean.shape)}")
    if n_classes < 3:
        raise ValueError(f"a trigger scan needs >= 3 classes to find an outlier; got {n_classes}")
    trigs, l1, succ = [], [], []
    for t in range(n_classes):
        trig, rate = invert_class(model, x_clean, t, cfg)
        trigs.append(trig)
        l1.append(float(trig.mask[0].sum()))
        succ.append(rate)
    ai = anomaly_index(l1)
    t = int(torch.tensor(l1).argmin())
    keep = y_clean != t if y_clean is not None else torch.ones(len(x_clean), dtype=torch.bool)
    hits = int((predict(model, trigs[t].stamp(x_clean[keep])) == t).sum())
    return ScanResult(l1, succ, ai, ai > cfg.threshold, t, trigs[t], wilson(hits, int(keep.sum())))


def mask_overlap(found: Trigger, planted: Trigger, top: int | None = None) -> float:
    """Share of the planted patch's pixels among the ``top`` (default: patch size) highest-mask pixels found."""
    pm = planted.mask[0] > 0.5
    k = int(pm.sum()) if top is None else top
    idx = found.mask[0].flatten().topk(k).indices
    return float(pm.flatten()[idx].float().mean())
