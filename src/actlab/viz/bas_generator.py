"""Background activation suppression with a trained foreground generator (the BAS paper's method).

A small generator ``G`` reads a frozen classifier's activations at a conv ``site`` and predicts a foreground map
``M = sigmoid(G(act)) [b, h, w]`` at that site's resolution. It is trained with the paper's three terms:

- ``L_cls``: cross-entropy of the classifier when the site's activation is replaced by ``act * M`` (foreground
  guidance: the masked features must still carry the class), run through ``model.intervene``;
- ``L_bg = sum(A (1 - M)) / sum(A)`` per image (``A``: the Grad-CAM map of the true class at the site, frozen), the
  background activation ratio;
- ``L_area = mean(M)``.

``L = cls * L_cls + alpha * L_bg + beta * L_area``. The predicted box is the bounding box of the map (upsampled to the
input) above a threshold. Plus the fixture: digits planted at random places on a larger canvas, with their ink boxes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from actlab.core import Fn
from actlab.viz.objectives import read_site

if TYPE_CHECKING:
    from actlab.models import Model

Box = tuple[int, int, int, int]


@dataclass
class BASConfig:
    """The generator's site, loss weights and training."""

    site: str = "module:conv2"
    """conv site whose activations the generator reads and whose features the mask gates."""
    cls: float = 1.0
    """weight of the classification loss on the foreground-masked features."""
    alpha: float = 1.0
    """weight of the background activation ratio L_bg."""
    beta: float = 0.5
    """weight of the area L_area = mean(M)."""
    width: int = 16
    """hidden channels of the generator."""
    steps: int = 200
    """optimiser steps."""
    lr: float = 1e-2
    """Adam learning rate."""
    batch_size: int = 32
    """images per step."""
    threshold: float = 0.5
    """map value above which a pixel is foreground (for boxes)."""
    seed: int = 0
    """seed of the generator's weights and of the batch order."""

    def __post_init__(self) -> None:
        if min(self.cls, self.alpha, self.beta) < 0 or self.width < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError("cls, alpha, beta >= 0; width >= 1; steps >= 0; lr > 0 are required")
        if self.batch_size < 1 or not 0 < self.threshold < 1:
            raise ValueError(f"batch_size >= 1 and 0 < threshold < 1 are required; got {self.batch_size}, "
                             f"{self.threshold}")


def generator(in_ch: int, width: int = 16) -> nn.Module:
    """``[b, C, h, w] -> [b, 1, h, w]`` logits: a 1x1 channel mix, then two 3x3 convs (local context)."""
    return nn.Sequential(nn.Conv2d(in_ch, width, 1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, 1, 3, padding=1))


def site_cams(model: Model, x: torch.Tensor, y: torch.Tensor, site: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations ``[n, C, h, w]``, Grad-CAM maps ``[n, h, w]`` of each row's class ``y``) at a conv ``site``: one
    batched forward and backward (rows are independent, so each row's gradient is its own)."""
    with torch.enable_grad(), model.recording([site], grad=True) as rec:
        out = model.module(x)
        out = out.logits if hasattr(out, "logits") else out
        out.gather(1, y.view(-1, 1)).sum().backward()
    act, g = rec[site].detach(), rec.grad(site)
    if act.dim() != 4:
        raise ValueError(f"BAS needs a conv site [batch, C, H, W]; {site} gives {list(act.shape)}")
    return act, torch.relu((g.mean((2, 3), keepdim=True) * act).sum(1))


def bas_terms(cam: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``L_bg``, ``L_area``), each averaged over the batch, for maps ``cam`` >= 0 and masks ``mask`` ``[b, h, w]``."""
    if cam.shape != mask.shape:
        raise ValueError(f"activation maps {list(cam.shape)} and masks {list(mask.shape)} differ in shape")
    total = cam.flatten(1).sum(1).clamp_min(1e-12)
    return ((cam * (1 - mask)).flatten(1).sum(1) / total).mean(), mask.mean()


def mask_box(mask: torch.Tensor, threshold: float) -> Box:
    """``(top, left, bottom, right)`` (inclusive-exclusive) bounding box of ``mask [H, W] >= threshold`` (the
    maximum's pixel when nothing passes)."""
    on = mask >= threshold
    if not bool(on.any()):
        on = mask == mask.max()
    rows, cols = on.any(1).nonzero()[:, 0], on.any(0).nonzero()[:, 0]
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@dataclass
class BASGenerator:
    """A trained generator on ``model``'s ``site``; ``history`` holds (L_cls, L_bg, L_area) per step."""

    model: Model
    net: nn.Module
    cfg: BASConfig
    history: list[tuple[float, float, float]] = field(default_factory=list)

    def site_masks(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, h, w]`` foreground maps at the site's resolution."""
        with torch.no_grad():
            return torch.sigmoid(self.net(read_site(self.model, x, self.cfg.site)))[:, 0]

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, H, W]`` foreground maps upsampled to the input's size."""
        m = self.site_masks(x)[:, None]
        return nn.functional.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    def boxes(self, x: torch.Tensor, threshold: float | None = None) -> list[Box]:
        """One predicted box per input (input pixel coordinates)."""
        t = self.cfg.threshold if threshold is None else threshold
        return [mask_box(m, t) for m in self.masks(x)]


def train_bas_generator(model: Model, x: torch.Tensor, y: torch.Tensor, cfg: BASConfig | None = None
                        ) -> BASGenerator:
    """Train a foreground generator for the frozen classifier ``model`` on images ``x [n, C, H, W]`` with labels
    ``y`` (image-level only: no boxes are seen)."""
    cfg = cfg or BASConfig()
    model.check_sites([cfg.site])
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    act, cam = site_cams(model, x, y, cfg.site)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = generator(act.shape[1], cfg.width)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = BASGenerator(model, net, cfg)
    with torch.enable_grad():
        for _ in range(cfg.steps):
            i = torch.randint(0, len(y), (min(cfg.batch_size, len(y)),), generator=gen)
            m = torch.sigmoid(net(act[i]))                          # [b, 1, h, w]
            l_bg, l_area = bas_terms(cam[i], m[:, 0])
            loss = cfg.alpha * l_bg + cfg.beta * l_area
            l_cls = torch.zeros(())
            if cfg.cls:
                with model.intervene({cfg.site: Fn(lambda a, ctx, m=m: a * m)}):
                    logits = model.module(x[i])
                logits = logits.logits if hasattr(logits, "logits") else logits
                l_cls = nn.functional.cross_entropy(logits, y[i])
                loss = loss + cfg.cls * l_cls
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out.history.append((float(l_cls.detach()), float(l_bg.detach()), float(l_area.detach())))
    net.eval()
    net.requires_grad_(False)
    return out


def planted_digits(images: torch.Tensor, labels: torch.Tensor, canvas: int = 32, noise: float = 0.0, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, list[Box]]:
    """Each ``[1, s, s]`` image pasted (pixelwise max) at a random place of a ``canvas x canvas`` background of uniform
    noise in ``[0, noise]``: (canvases ``[n, 1, canvas, canvas]``, labels, the planted ink boxes: the bounding box of
    the pasted pixels > 0.1)."""
    n, _, s, _ = images.shape
    if canvas < s:
        raise ValueError(f"canvas {canvas} is smaller than the images ({s})")
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.rand(n, images.shape[1], canvas, canvas, generator=g)
    boxes = []
    for i in range(n):
        r, c = torch.randint(0, canvas - s + 1, (2,), generator=g).tolist()
        x[i, :, r:r + s, c:c + s] = torch.maximum(x[i, :, r:r + s, c:c + s], images[i])
        ink = images[i].amax(0) > 0.1
        t, le, b, ri = mask_box(ink.float(), 0.5)
        boxes.append((r + t, c + le, r + b, c + ri))
    return x, labels.clone(), boxes


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(top, left, bottom, right)`` boxes."""
    t, le, bb, r = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, bb - t) * max(0, r - le)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0
