"""Layer masking for CNNs (Balasubramanian & Feizi): evaluate a CNN as if an image region were absent.

A binary spatial mask (1 = keep) travels with the activations through hooks on every layer: before each
convolution masked positions are filled from their kept neighbours (detached), after it the mask is max-pooled
with the layer's own kernel/stride/padding; BN/activations are re-masked; global average pooling averages over
kept positions only. The output never reads the masked pixels, so it does not depend on a fill colour.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from actlab.models import Model

ACTIVATIONS = (torch.nn.ReLU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.LeakyReLU,
               torch.nn.ELU, torch.nn.ReLU6, torch.nn.Hardswish, torch.nn.Dropout, torch.nn.Identity,
               torch.nn.BatchNorm2d, torch.nn.GroupNorm)
PASS_AFTER_POOL = (torch.nn.Flatten, torch.nn.Linear, torch.nn.Dropout, torch.nn.Identity, torch.nn.ReLU,
                   torch.nn.GELU, torch.nn.Softmax, torch.nn.LogSoftmax)


@dataclass
class LayerMaskConfig:
    """Settings of the neighbour fill."""

    fill_iters: int | None = None
    """fill rings before each convolution; None = kernel size - 1 (what its receptive field needs)."""
    max_fill_iters: int = 8
    """upper bound on fill rings (very large masks leave no neighbours to fill from)."""
    eps: float = 1e-6
    """guards the neighbour average against division by zero."""


@dataclass
class MaskTrace:
    """The propagated masks: ``masks[i]`` is the mask after the i-th spatial layer (``layers[i]``), [b, 1, h, w]."""

    layers: list[str] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)


def neighbour_fill(x: torch.Tensor, m: torch.Tensor, iters: int, eps: float = 1e-6) -> torch.Tensor:
    """Replace masked positions of ``x`` by the mean of kept 3x3 neighbours, ring by ring (no gradient through
    the fill); positions still unreached after ``iters`` rings become 0. Masked input values are never read."""
    kept = x * m
    with torch.no_grad():
        c = x.shape[1]
        ones = torch.ones(c, 1, 3, 3, device=x.device, dtype=x.dtype)
        ones1 = torch.ones(1, 1, 3, 3, device=x.device, dtype=x.dtype)
        cur, mm = kept.detach(), m
        for _ in range(iters):
            s = F.conv2d(cur, ones, padding=1, groups=c)
            n = F.conv2d(mm, ones1, padding=1)
            new = (n > 0).to(x.dtype)
            cur = cur * mm + (1 - mm) * new * s / (n + eps)
            mm = torch.maximum(mm, new)
        fill = cur * (1 - m)
    return kept + fill


def _pool_mask(m: torch.Tensor, mod) -> torch.Tensor:
    k, s, p = mod.kernel_size, mod.stride, mod.padding
    d = getattr(mod, "dilation", 1)
    if isinstance(p, str):
        raise ValueError(f"layer masking needs numeric padding; {type(mod).__name__} uses padding={p!r}")
    return F.max_pool2d(m, k, s or k, p, d)


def layer_masked_forward(model: Model | torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, cfg: LayerMaskConfig | None = None, *,
                         trace: bool = False):
    """Run a sequential CNN on ``x`` [b, C, H, W] with ``mask`` ([H, W], [b, H, W] or [b, 1, H, W]; 1 = keep).

    ``model``: an actlab ``Model`` (``actlab.wrap(cnn)``) or a module. Supports Conv2d, BatchNorm2d, pointwise
    activations, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1) and a linear head; other spatial layers (and
    branches such as residual adds) raise. Returns the output, or ``(output, MaskTrace)`` with ``trace=True``.
    """
    import actlab

    cfg = cfg or LayerMaskConfig()
    m = model if isinstance(model, actlab.Model) else actlab.wrap(model)
    if x.dim() != 4:
        raise ValueError(f"layer masking needs images [batch, C, H, W]; got {list(x.shape)}")
    mk = mask.to(x)
    while mk.dim() < 4:
        mk = mk[None]
    if mk.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"mask has spatial shape {list(mk.shape[-2:])}; the image is {list(x.shape[-2:])}")
    if not bool(((mk == 0) | (mk == 1)).all()):
        raise ValueError("the mask must be binary (1 = keep, 0 = remove)")
    if float(mk.flatten(1).sum(1).min()) == 0:
        raise ValueError("the mask removes the whole image; keep at least one pixel")
    state = {"m": mk.expand(x.shape[0], 1, *x.shape[-2:]).contiguous(), "pooled": False}
    tr = MaskTrace()
    pairs = []
    leaves = [(n, mod) for n, mod in m.module.named_modules() if n and not list(mod.children())]
    for name, mod in leaves:
        if isinstance(mod, torch.nn.Conv2d):
            iters = cfg.fill_iters if cfg.fill_iters is not None else max(1, max(mod.kernel_size) - 1)
            iters = min(iters, cfg.max_fill_iters)

            def pre(act, ctx, iters=iters):
                _check(state, act, ctx.site)
                return neighbour_fill(act, state["m"], iters, cfg.eps)

            def post(act, ctx, mod=mod, name=name):
                state["m"] = _pool_mask(state["m"], mod)
                _record(tr, trace, name, state["m"])
                return act * state["m"]
            pairs += [(f"module:{name}:in", pre), (f"module:{name}", post)]
        elif isinstance(mod, torch.nn.MaxPool2d):
            def post(act, ctx, mod=mod, name=name):
                state["m"] = _pool_mask(state["m"], mod)
                _record(tr, trace, name, state["m"])
                return act * state["m"]
            pairs.append((f"module:{name}", post))
        elif isinstance(mod, torch.nn.AvgPool2d):
            def post(act, ctx, mod=mod, name=name):
                state["m"] = (F.avg_pool2d(state["m"], mod.kernel_size, mod.stride, mod.padding) > 0).to(act.dtype)
                _record(tr, trace, name, state["m"])
                return act * state["m"]
            pairs.append((f"module:{name}", post))
        elif isinstance(mod, torch.nn.AdaptiveAvgPool2d):
            if mod.output_size not in (1, (1, 1)):
                raise ValueError(f"layer masking supports global average pooling only; {name} has output_size "
                                 f"{mod.output_size}")

            def pre(act, ctx):
                _check(state, act, ctx.site)
                mm = state["m"]
                state["pooled"] = True
                scale = mm.shape[-1] * mm.shape[-2] / mm.flatten(1).sum(1).clamp_min(1e-12)
                return act * mm * scale.view(-1, 1, 1, 1)  # mean over kept positions only
            pairs.append((f"module:{name}:in", pre))
        elif isinstance(mod, ACTIVATIONS):
            def post(act, ctx):
                if state["pooled"] or act.dim() != 4:
                    return None
                _check(state, act, ctx.site)
                return act * state["m"]
            pairs.append((f"module:{name}", post))
        elif isinstance(mod, PASS_AFTER_POOL):
            def pre(act, ctx, name=name, mod=mod):
                if not state["pooled"]:
                    raise ValueError(f"layer masking: {name} ({type(mod).__name__}) reads spatial activations before "
                                     f"a global average pool; the mask cannot be carried through it")
                return None
            pairs.append((f"module:{name}:in", pre))
        else:
            raise ValueError(f"layer masking does not support {type(mod).__name__} ({name}); supported: Conv2d, "
                             f"BatchNorm2d, pointwise activations, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), "
                             f"Flatten, Linear")
    with m.hooks(pairs):
        out = m.module(x)
    return (out, tr) if trace else out


def _check(state, act, site):
    if act.shape[-2:] != state["m"].shape[-2:]:
        raise ValueError(f"layer masking: {site} sees spatial size {list(act.shape[-2:])} but the carried mask is "
                         f"{list(state['m'].shape[-2:])} (branches/residual adds are not supported)")


def _record(tr: MaskTrace, on: bool, name: str, m: torch.Tensor) -> None:
    if on:
        tr.layers.append(name)
        tr.masks.append(m.detach().clone())


def fill_mask(x: torch.Tensor, mask: torch.Tensor, value="black", *, seed: int = 0) -> torch.Tensor:
    """Ordinary input masking: masked pixels (mask 0) set to ``'black'`` (0), ``'grey'`` (0.5), ``'mean'`` (the
    image's per-channel mean), ``'noise'`` (uniform [0, 1)) or a float."""
    mk = mask.to(x)
    while mk.dim() < 4:
        mk = mk[None]
    if value == "black":
        fill = torch.zeros_like(x)
    elif value == "grey":
        fill = torch.full_like(x, 0.5)
    elif value == "mean":
        fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    elif value == "noise":
        fill = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
    elif isinstance(value, (int, float)):
        fill = torch.full_like(x, float(value))
    else:
        raise ValueError(f"unknown fill {value!r}; use 'black', 'grey', 'mean', 'noise' or a number")
    return x * mk + fill * (1 - mk)
