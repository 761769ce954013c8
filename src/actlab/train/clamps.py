"""Clamps for training-time interventions (arXiv 2404.07129): constructed ideal attention patterns and lesions.

Each is an ordinary actlab ``Intervention``: use it in ``model.intervene({...}, grad=..., schedule=...)`` inside a
training loop. Pattern clamps act on a ``[batch, head, query, key]`` probability tensor and are then used with the
model's own values (only the pattern is clamped).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from actlab.core.interventions import Intervention


def previous_token_pattern(q: int, k: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[q, k]`` one-hot rows: query t attends to t-1 (the first query attends to itself)."""
    out = torch.zeros(q, k, device=device, dtype=dtype)
    t = torch.arange(q, device=device)
    out[t, (t - 1).clamp(min=0) + (k - q)] = 1.0
    return out


def _heads(heads, n: int, owner: str) -> list[int]:
    hs = list(range(n)) if heads is None else ([heads] if isinstance(heads, int) else list(heads))
    bad = [h for h in hs if not 0 <= h < n]
    if bad:
        raise IndexError(f"{owner}.heads {bad} out of range: the pattern has {n} heads")
    return hs


@dataclass
class PrevTokenPattern(Intervention):
    """Clamp the attention pattern of ``heads`` (default all) to the exact previous-token pattern."""

    heads: int | list[int] | None = None

    def edit(self, act, ctx):
        if act.dim() != 4:
            raise ValueError(f"PrevTokenPattern needs an attention pattern [batch, head, query, key] at {ctx.site!r}; "
                             f"got shape {list(act.shape)}")
        ideal = previous_token_pattern(act.shape[2], act.shape[3], device=act.device, dtype=act.dtype)
        hs = _heads(self.heads, act.shape[1], "PrevTokenPattern")
        if len(hs) == act.shape[1]:
            return ideal.expand_as(act)
        keep = torch.zeros(act.shape[1], dtype=torch.bool, device=act.device)
        keep[hs] = True
        return torch.where(keep[None, :, None, None], ideal, act)


@dataclass
class ZeroClamp(Intervention):
    """Lesion: the activation is zero throughout training."""

    def edit(self, act, ctx):
        return torch.zeros_like(act)


@dataclass
class MeanClamp(Intervention):
    """Ablation through training: every entry replaced by its mean over the batch (and positions for sequences)."""

    def edit(self, act, ctx):
        dims = (0, 1) if act.dim() >= 3 else (0,)
        return act.mean(dims, keepdim=True).expand_as(act)
