"""Image triggers and the two backdoor metrics: a patch trigger is a mask ``m`` and a pattern ``p`` stamped as
``(1 - m) * x + m * p``; clean accuracy (CA) and attack success rate (ASR = share of triggered test images whose
true class is not the target that the model assigns to the target), both with Wilson 95% intervals."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from actlab.probe import Interval, wilson


@dataclass
class Trigger:
    """``mask`` and ``pattern`` of shape [C, H, W] (mask in [0, 1])."""

    mask: torch.Tensor
    pattern: torch.Tensor

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp images ``[N, C, H, W]`` (or one ``[C, H, W]``); shapes must match the trigger's."""
        if x.shape[-3:] != self.mask.shape:
            raise ValueError(f"trigger of shape {list(self.mask.shape)} cannot stamp images of shape "
                             f"{list(x.shape[-3:])}")
        m = self.mask.to(x.device, x.dtype)
        return (1 - m) * x + m * self.pattern.to(x.device, x.dtype)

    def to_json(self) -> dict[str, Any]:
        nz = self.mask.nonzero()
        box = [int(v) for v in [*nz[:, 1:].min(0).values, *nz[:, 1:].max(0).values]] if len(nz) else []
        return {"shape": list(self.mask.shape), "mask_l1": float(self.mask.abs().sum()), "box_hw": box}


def patch_trigger(image_shape: tuple[int, int, int] | list[int], size: int, *, corner: str = "br",
                  value: float | str = 1.0) -> Trigger:
    """A BadNets square ``size`` x ``size`` patch in a corner ('tl', 'tr', 'bl', 'br'): constant ``value`` or
    'checker' (alternating 1/0). ValueError when the patch does not fit in the image."""
    c, h, w = (int(v) for v in image_shape)
    if size < 1 or size > h or size > w:
        raise ValueError(f"trigger size {size} does not fit in a {h}x{w} image (need 1 <= size <= {min(h, w)})")
    if corner not in ("tl", "tr", "bl", "br"):
        raise ValueError(f"corner={corner!r}; use tl, tr, bl or br")
    r0 = 0 if corner[0] == "t" else h - size
    c0 = 0 if corner[1] == "l" else w - size
    mask = torch.zeros(c, h, w)
    mask[:, r0:r0 + size, c0:c0 + size] = 1.0
    if value == "checker":
        ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pattern = ((ii + jj) % 2 == 0).float().expand(c, h, w).clone()
    else:
        pattern = torch.full((c, h, w), float(value))
    return Trigger(mask, pattern * mask)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Argmax class of ``model(x)`` in eval mode, batched."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)


def clean_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Interval:
    """Accuracy on clean images with a Wilson 95% interval."""
    return wilson(int((predict(model, x) == y).sum()), len(y))


def attack_success_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, trigger: Trigger | Any,
                        target: int) -> Interval:
    """Share of triggered images of other classes predicted as ``target`` (Wilson 95% interval). ``trigger`` is a
    :class:`Trigger` or any callable that stamps a batch."""
    keep = y != target
    if not bool(keep.any()):
        raise ValueError(f"ASR needs test images whose class is not the target {target}")
    xs = trigger.stamp(x[keep]) if isinstance(trigger, Trigger) else trigger(x[keep])
    return wilson(int((predict(model, xs) == target).sum()), int(keep.sum()))
