"""Planted-backdoor image classifier: a small CNN on scikit-learn's bundled digits (actlab.data.load_digits) trained
with BadNets poisoning (a share of training images of other classes get a corner patch and the target label).
Deterministic for a seed, trained in seconds on a CPU, and cached as an actlab artifact keyed by its config."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from actlab.artifact import ArtifactError, load_artifact, save_artifact
from actlab.probe import Interval
from actlab.security.trigger import Trigger, attack_success_rate, clean_accuracy, patch_trigger


def load_cached(folder: Path | None, kind: str, load: Callable[[dict], object]) -> dict | None:
    """The tensors of a fixture cached as an artifact in ``folder``, once ``load(tensors)`` took them; None when the
    cache is absent, stale or corrupt (the caller retrains and overwrites it)."""
    if folder is None or not (folder / "cfg.json").exists():
        return None
    try:
        tensors = load_artifact(folder, kind).tensors
        load(tensors)
        return tensors
    except (ArtifactError, RuntimeError, KeyError):
        return None

KIND = "security_fixture"


class DigitsCNN(nn.Module):
    """conv(1->16) - ReLU - conv(16->32) - ReLU - maxpool 2 - fc(->64) - ReLU - fc(->10), for 8x8 inputs."""

    def __init__(self, size: int = 8, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * (size // 2) ** 2, 64), nn.ReLU(),
                                  nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class BackdoorConfig:
    """The poisoned training run (everything that defines the cached fixture)."""

    target: int = 0
    """label the trigger maps to"""
    poison_fraction: float = 0.1
    """share of the training set that is poisoned (taken from non-target images)"""
    patch: int = 2
    """side of the square corner trigger, pixels"""
    corner: str = "br"
    """trigger corner: tl, tr, bl, br"""
    epochs: int = 40
    """training epochs (Adam)"""
    lr: float = 3e-3
    """Adam learning rate"""
    batch_size: int = 64
    """training batch size"""
    val_fraction: float = 0.15
    """share of the training split held out (clean, never trained on) for choosing defence settings"""
    seed: int = 0
    """seed of poisoning, initialisation and batch order"""

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class BackdoorFixture:
    """A trained backdoored classifier with its data: ``poisoned`` marks the poisoned training rows (ground truth)."""

    model: nn.Module
    cfg: BackdoorConfig
    trigger: Trigger
    x_train: torch.Tensor
    y_train: torch.Tensor
    poisoned: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    metrics: dict[str, Interval] = field(default_factory=dict)

    def ca(self, model: nn.Module | None = None) -> Interval:
        return clean_accuracy(model or self.model, self.x_test, self.y_test)

    def asr(self, model: nn.Module | None = None) -> Interval:
        return attack_success_rate(model or self.model, self.x_test, self.y_test, self.trigger, self.cfg.target)


def poison(x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int, fraction: float,
           seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, poisoned mask): ``fraction`` of all rows, drawn from non-target rows, stamped and relabelled."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"poison_fraction must be in (0, 1); got {fraction}")
    g = torch.Generator().manual_seed(seed)
    cand = (y != target).nonzero().flatten()
    k = round(fraction * len(y))
    if k < 1 or k > len(cand):
        raise ValueError(f"cannot poison {k} of {len(cand)} non-target rows")
    idx = cand[torch.randperm(len(cand), generator=g)[:k]]
    x, y = x.clone(), y.clone()
    x[idx] = trigger.stamp(x[idx])
    y[idx] = target
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[idx] = True
    return x, y, mask


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                     batch_size: int, seed: int) -> nn.Module:
    """Plain cross-entropy training with Adam, deterministic batch order for ``seed``."""
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            b = perm[i:i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    model.eval()
    return model


def digits_backdoor(cfg: BackdoorConfig | None = None, cache: str | Path | None = None) -> BackdoorFixture:
    """The BadNets digits fixture for ``cfg``: trained, or loaded from ``cache/<key>`` when present."""
    from actlab.data import load_digits

    cfg = cfg or BackdoorConfig()
    tr, te = load_digits("train", seed=cfg.seed), load_digits("test", seed=cfg.seed)
    trigger = patch_trigger(tr.x.shape[1:], cfg.patch, corner=cfg.corner)
    perm = torch.randperm(len(tr.y), generator=torch.Generator().manual_seed(cfg.seed + 7))
    n_val = round(cfg.val_fraction * len(tr.y))
    val, fit = perm[:n_val].sort().values, perm[n_val:].sort().values
    x, y, mask = poison(tr.x[fit], tr.y[fit], trigger, cfg.target, cfg.poison_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = DigitsCNN(tr.x.shape[-1])
    folder = Path(cache) / f"digits_badnets_{cfg.key()}" if cache is not None else None
    loaded = load_cached(folder, KIND, model.load_state_dict) is not None
    if not loaded:
        train_classifier(model, x, y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed)
        if folder is not None:
            save_artifact(folder, KIND, {"fixture": "digits_badnets", "config": asdict(cfg)}, model.state_dict())
    model.eval()
    fx = BackdoorFixture(model, cfg, trigger, x, y, mask, te.x, te.y, tr.x[val], tr.y[val])
    fx.metrics = {"ca": fx.ca(), "asr": fx.asr()}
    return fx
