"""Comprehensive attribution with a feature detector (COMET-style selector-predictor training).

A selector ``S`` gives a soft mask ``M = S(x)``; a predictor ``P`` classifies ``x * M``; a frozen, pretrained
detector ``D`` looks at the complement ``x * (1 - M)``. ``L = CE(P(x*M), y) + lam_c * L_comp + lam_a * mean(M)`` with
``L_comp = -log(1 - p_D(y | x*(1-M)))``: evidence the detector still finds outside the mask is penalised, so the mask
must cover *all* discriminative cues, not just enough of them for the predictor (incompleteness), and the independent
detector breaks the selector-predictor loop (interlocking). Plus the spec's synthetic data with two redundant cues.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from actlab.viz.roar import Dataset


@dataclass
class CometConfig:
    """Loss weights and optimiser of the selector-predictor training."""

    complement: float = 4.0
    """lam_c: weight of the completeness (complement) term (0 = a plain selector-predictor)."""
    area: float = 0.5
    """lam_a: weight of the mask-area penalty."""
    epochs: int = 8
    """passes over the data."""
    lr: float = 5e-3
    """Adam learning rate."""
    batch_size: int = 64
    """batch size."""
    seed: int = 0
    """seed of the weights and batch order."""

    def __post_init__(self) -> None:
        if self.complement < 0 or self.area < 0 or self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError("complement, area >= 0; epochs, batch_size >= 1; lr > 0 are required")


def selector(in_ch: int = 1, width: int = 16) -> nn.Module:
    """A fully convolutional mask generator: ``[b, C, H, W] -> [b, 1, H, W]`` logits."""
    return nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1))


@dataclass
class Comet:
    """The trained ``selector`` and ``predictor`` (eval mode, frozen)."""

    selector: nn.Module
    predictor: nn.Module

    @torch.no_grad()
    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, H, W]`` soft masks in [0, 1]."""
        return torch.sigmoid(self.selector(x))[:, 0]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x * self.mask(x)[:, None]).argmax(-1)


def completeness_loss(detector_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-log(1 - p(y))`` of the detector on the complement: large when it still finds the class there."""
    p = torch.softmax(detector_logits, -1).gather(1, y[:, None])[:, 0]
    return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()


def train_comet(x: torch.Tensor, y: torch.Tensor, detector: nn.Module, make_predictor: Callable[[], nn.Module],
                cfg: CometConfig | None = None) -> Comet:
    """Train a selector and a predictor on (x, y) against the frozen ``detector``."""
    cfg = cfg or CometConfig()
    detector.eval()
    detector.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        sel, pred = selector(x.shape[1]), make_predictor()
    params = list(sel.parameters()) + list(pred.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.enable_grad():
        for _ in range(cfg.epochs):
            order = torch.randperm(len(y), generator=gen)
            for lo in range(0, len(y), cfg.batch_size):
                i = order[lo:lo + cfg.batch_size]
                xb, yb = x[i], y[i]
                m = torch.sigmoid(sel(xb))
                loss = nn.functional.cross_entropy(pred(xb * m), yb) + cfg.area * m.mean()
                if cfg.complement:
                    loss = loss + cfg.complement * completeness_loss(detector(xb * (1 - m)), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    for mod in (sel, pred):
        mod.eval()
        mod.requires_grad_(False)
    return Comet(sel, pred)


def two_cue_data(n: int, size: int = 16, noise: float = 0.2, keep_both: float = 1.0, seed: int = 0) -> Dataset:
    """Images ``[n, 1, size, size]`` with two redundant class cues at random non-overlapping positions: a 3x3 square
    and a 1x5 bar, both of value +1 (class 1) or -1 (class 0), plus Gaussian noise. ``signal`` marks the cue pixels
    (``signal_cues`` on the result: [n, 2, H, W], one plane per cue). ``keep_both < 1`` drops one of the two cues
    (at random) from that share of images (to pretrain a detector that knows both)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = noise * torch.randn(n, 1, size, size, generator=g)
    cues = torch.zeros(n, 2, size, size, dtype=torch.bool)
    for i in range(n):
        while True:
            r = torch.randint(0, size - 3 + 1, (2,), generator=g).tolist()
            b = [int(torch.randint(0, size, (1,), generator=g)), int(torch.randint(0, size - 5 + 1, (1,),
                                                                                      generator=g))]
            if b[0] < r[0] - 1 or b[0] > r[0] + 3 or b[1] + 5 < r[1] - 1 or b[1] > r[1] + 4:
                break
        cues[i, 0, r[0]:r[0] + 3, r[1]:r[1] + 3] = True
        cues[i, 1, b[0], b[1]:b[1] + 5] = True
        if keep_both < 1 and float(torch.rand((), generator=g)) > keep_both:
            cues[i, int(torch.randint(0, 2, (), generator=g))] = False
    val = (2 * y - 1).float().view(-1, 1, 1)
    x[:, 0] = torch.where(cues.any(1), val.expand(-1, size, size), x[:, 0])
    d = Dataset(x, y, cues.any(1))
    d.signal_cues = cues
    return d


def cue_coverage(masks: torch.Tensor, cues: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``[2]``: per cue, the fraction of its pixels (over all images) where the mask exceeds ``threshold``."""
    on = masks > threshold
    return torch.stack([(on & cues[:, k]).sum() / cues[:, k].sum().clamp_min(1) for k in range(cues.shape[1])]).float()
