"""The attention-pattern site: an eager attention function that exposes the pattern to hooks.

Fused attention (SDPA, flash) never materialises the pattern, so ``blocks.{i}.attn.pattern`` works by switching
the model to ``actlab_pattern`` (registered with transformers' ``AttentionInterface`` and eager masks) while a hook
on a pattern site is installed, and back afterwards. The function is the eager reference (scores, mask, softmax in
fp32) with one addition: the probabilities pass through ``module.actlab_pattern`` (an identity module) before they
weight the values, so a forward hook there sees ``[batch, head, query, key]`` and may replace it.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

IMPL = "actlab_pattern"
POINT = "actlab_pattern"
_registered = False


class PatternPoint(torch.nn.Module):
    """Identity; exists so that hooks can see and edit attention probabilities."""

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return probs


def pattern_attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0,
                      softcap=None, **kwargs):
    """Eager attention, ``[b, h, q, d]`` in, ``([b, q, h, d], probs [b, h, q, k])`` out, as transformers expects."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:  # grouped-query attention
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., : key.shape[-2]], torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., : key.shape[-2]]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    point = getattr(module, POINT, None)
    if point is not None:
        probs = point(probs)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def register() -> None:
    """Register the attention function and its (eager, additive) mask with transformers, once."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPL, pattern_attention)
    AttentionMaskInterface.register(IMPL, eager_mask)
    _registered = True


def attach_points(module: torch.nn.Module, attn_paths: list[str]) -> None:
    """Give every attention module an identity ``actlab_pattern`` child (no parameters, no state)."""
    mods = dict(module.named_modules())
    for p in attn_paths:
        m = mods.get(p)
        if m is not None and not hasattr(m, POINT):
            m.add_module(POINT, PatternPoint())


def _configs(module: torch.nn.Module):
    seen = set()
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and id(cfg) not in seen and hasattr(cfg, "_attn_implementation"):
            seen.add(id(cfg))
            yield cfg


class PatternSwitch:
    """Reference-counted switch of a model to the pattern attention while pattern hooks are installed."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.users = 0
        self.saved: list[tuple[object, str]] = []

    def acquire(self) -> None:
        if self.users == 0:
            register()
            self.saved = [(cfg, cfg._attn_implementation) for cfg in _configs(self.module)]
            for cfg, _ in self.saved:
                cfg._attn_implementation = IMPL
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            for cfg, old in self.saved:
                cfg._attn_implementation = old
            self.saved = []
