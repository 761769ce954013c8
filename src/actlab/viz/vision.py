"""Real vision models offline: a small CNN and a small ViT-style patch transformer trained on scikit-learn's bundled
digits, deterministic, cached as an actlab artifact after the first training; and any torchvision-style module.

Sites are raw module paths through ``actlab.wrap`` (``module:conv1`` is the first conv layer, ``[batch, 16, H, W]``;
channel ``c`` of it is ``Unit("module:conv1", channel=c)``). ``conv_sites(model)`` lists them with channel counts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from actlab.artifact import ArtifactError, folder_lock, load_artifact, save_artifact

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

KIND = "viz.vision_model"
FORMAT_VERSION = 1
CACHE_ENV = "ACTLAB_VIZ_CACHE"
ARCHS = ("cnn", "vit")


@dataclass
class VisionConfig:
    """A digits classifier: architecture, input size and training (all of it keys the cache)."""

    arch: str = "cnn"
    """cnn (conv-ReLU x3, max-pool, global average pool, linear) or vit (patch transformer)."""
    size: int = 16
    """image side in pixels (the 8x8 digits upsampled bilinearly)."""
    width: int = 16
    """channels of the first conv layer (cnn) / token width (vit)."""
    epochs: int = 10
    """passes over the training split."""
    lr: float = 5e-3
    """Adam learning rate."""
    batch_size: int = 32
    """training batch size."""
    seed: int = 0
    """seed of the weights and of the batch order."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.size < 8 or (self.arch == "vit" and self.size % 4):
            raise ValueError(f"size must be >= 8 (and a multiple of 4 for vit), got {self.size}")
        if self.width < 1 or self.epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError("width, batch_size must be >= 1, epochs >= 0, lr > 0")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def digits_cnn(width: int = 16, n_classes: int = 10, in_ch: int = 1) -> nn.Sequential:
    """conv-ReLU-pool, conv-ReLU-pool, conv-ReLU, global average pool, linear: named layers, layer-maskable."""
    w = width
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_ch, w, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(w, 2 * w, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(2 * w, 4 * w, 3, padding=1)), ("relu3", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * w, n_classes))]))


class PatchViT(nn.Module):
    """A ViT-style classifier: 4x4 patches, learned positions, a class token, ``depth`` pre-LN encoder blocks."""

    def __init__(self, size: int = 16, width: int = 32, depth: int = 2, heads: int = 4, n_classes: int = 10,
                 patch: int = 4, in_ch: int = 1) -> None:
        super().__init__()
        n = (size // patch) ** 2
        self.patch = nn.Conv2d(in_ch, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                                               batch_first=True, norm_first=True)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        for b in self.blocks:
            t = b(t)
        return self.head(self.norm(t[:, 0]))


def build(cfg: VisionConfig) -> nn.Module:
    """The untrained module of ``cfg`` (weights from ``cfg.seed``)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return digits_cnn(cfg.width) if cfg.arch == "cnn" else PatchViT(cfg.size, 2 * cfg.width)


def fit_classifier(module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 3e-3,
                   batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0) -> nn.Module:
    """Train ``module`` with Adam on (x, y), deterministic for a seed (batch order from its own generator)."""
    module.train()
    module.requires_grad_(True)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for lo in range(0, len(y), batch_size):
            i = order[lo:lo + batch_size]
            loss = nn.functional.cross_entropy(module(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.eval()
    module.requires_grad_(False)
    return module


@torch.no_grad()
def accuracy(module: nn.Module | Model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of a classifier on (x, y)."""
    mod = getattr(module, "module", module)
    hits = sum(int((mod(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
               for i in range(0, len(y), batch_size))
    return hits / max(1, len(y))


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """``cache``, else ``$ACTLAB_VIZ_CACHE``, else ``~/.cache/actlab/viz``."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "actlab" / "viz"


def digits_model(arch: str = "cnn", cfg: VisionConfig | None = None, *, cache: str | os.PathLike | None = None,
                 retrain: bool = False) -> Model:
    """The trained digits classifier as an actlab Model (``model.meta``: config, test accuracy, folder).

    The first call trains it (seconds on a CPU) and saves ``<cache>/digits-<arch>-<key>``; later calls load it."""
    cfg = cfg or VisionConfig(arch=arch)
    if cfg.arch != arch and arch != "cnn":
        raise ValueError(f"arch {arch!r} disagrees with cfg.arch {cfg.arch!r}")
    folder = cache_dir(cache) / f"digits-{cfg.arch}-{cfg.key()}"
    module = build(cfg)
    art = None
    if not retrain and (folder / "cfg.json").exists():
        art = load_artifact(folder, KIND, version=FORMAT_VERSION)
    if art is None:
        with folder_lock(folder, what="training a digits model"):
            from actlab.data import load_digits

            tr, te = load_digits("train", size=cfg.size), load_digits("test", size=cfg.size)
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                fit_classifier(module, tr.x, tr.y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                               seed=cfg.seed)
            acc = accuracy(module, te.x, te.y)
            log.info("trained digits-%s: test accuracy %.3f -> %s", cfg.arch, acc, folder)
            art_cfg = {"vision": asdict(cfg), "test_accuracy": acc}
            save_artifact(folder, KIND, art_cfg, {k: v.detach().contiguous() for k, v in module.state_dict().items()},
                          version=FORMAT_VERSION)
        art = load_artifact(folder, KIND, version=FORMAT_VERSION)
    missing = set(module.state_dict()) - set(art.tensors)
    if missing:
        raise ArtifactError(f"{folder} lacks weights {sorted(missing)} for a digits-{cfg.arch}; delete it to retrain")
    module.load_state_dict(art.tensors)
    m = vision_model(module, name=f"digits-{cfg.arch}")
    m.meta = {"config": asdict(cfg), "test_accuracy": art.config["test_accuracy"], "folder": str(folder)}
    return m


def vision_model(module: nn.Module | Model, name: str = "vision") -> Model:
    """Any torchvision-style image classifier (``[b, C, H, W] -> [b, classes]``) as an actlab Model, frozen, eval."""
    import actlab

    if isinstance(module, actlab.Model):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module image classifier; got {type(module).__name__}")
    module.eval()
    module.requires_grad_(False)
    return actlab.wrap(module, name=name)


def conv_sites(model: Model) -> dict[str, int]:
    """``{"module:<path>": out_channels}`` for every Conv2d of the model, in module order."""
    return {f"module:{n}": mod.out_channels for n, mod in model.module.named_modules()
            if isinstance(mod, nn.Conv2d)}
