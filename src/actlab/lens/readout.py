"""The model's read-out, for every lens: final norm + unembedding (``model.adapter``), and the final norm with its
scale frozen at a clean input (what makes direct logit attribution an exact sum).

The frozen norm is found from the module itself, not from its class name: centring is detected by shift
invariance (``norm(x + c) == norm(x)``), the gain from a probe vector of known statistics, the bias is the module's
``bias``, and each token's scale by least squares against the module's own output on that token (then checked).
LayerNorm (GPT-2, GPT-NeoX) and RMSNorm (Llama, Mixtral, SmolLM2, also Gemma's ``1 + w`` gain) pass; anything else
raises ``Unsupported`` naming the module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from actlab.models import Unsupported

if TYPE_CHECKING:
    from actlab.models import Model

Tensor = torch.Tensor


def _require_head(model: Model) -> None:
    """Unsupported (naming the architecture) when the model has no unembedding or final norm to read out through."""
    ad = model.adapter
    if ad.unembed is None:
        raise Unsupported(ad.name, "no unembedding (not a causal language model, or loaded without its head): a "
                                   "logit lens / logit attribution needs one")
    if ad.final_norm is None:
        raise Unsupported(ad.name, "no final norm known for this architecture")


def readout(model: Model, h: Tensor, norm: bool = True) -> Tensor:
    """Logits ``[..., vocab]`` of residual vectors ``h [..., d_model]``: ``unembed(final_norm(h))`` (the logit lens).

    ``norm=False`` skips the final norm (a raw unembedding, for comparison only)."""
    _require_head(model)
    ad = model.adapter
    if h.shape[-1] != ad.d_model:
        raise ValueError(f"the logit lens reads residual vectors of width d_model={ad.d_model}; got last dimension "
                         f"{h.shape[-1]} (shape {list(h.shape)}): use a residual-stream site such as "
                         f"blocks.{{i}}.resid_post")
    p = next(ad.unembed.parameters())
    x = h.to(device=p.device, dtype=p.dtype)
    if norm:
        x = ad.final_norm(x)
    return ad.unembed(x)


@dataclass
class FrozenNorm:
    """The final norm as an affine map at fixed per-token scale: ``y = centre(x) * gain + bias``.

    ``gain [n, d]`` is the module's gain divided by each token's clean scale (std for LayerNorm, RMS for RMSNorm);
    ``centred`` says whether the mean is removed (LayerNorm), applied to each component separately; ``bias [d]``
    or None. ``fit_error``: max |affine(x) - norm(x)| on the clean tokens (checked small)."""

    gain: Tensor
    centred: bool
    bias: Tensor | None
    fit_error: float

    def centre(self, c: Tensor) -> Tensor:
        """The per-component part of the norm that does not depend on the scale: ``c - mean(c)`` or ``c``."""
        return c - c.mean(-1, keepdim=True) if self.centred else c


def _probe(d: int, zero_at: int, scale: float) -> Tensor:
    """An alternating +-scale vector with one zero (at ``zero_at`` when d is odd): mean 0, known RMS."""
    v = torch.ones(d)
    v[1::2] = -1.0
    if d % 2:
        v = torch.roll(v, zero_at - (d - 1))
        v[zero_at] = 0.0
    return v * scale


@torch.no_grad()
def frozen_norm(model: Model, x: Tensor, norm: torch.nn.Module | None = None) -> FrozenNorm:
    """Freeze ``model.adapter.final_norm`` (or another norm module of the model, e.g. a block's pre-MLP norm found
    by ``actlab.circuits``) at its clean input vectors ``x [n, d_model]`` (see the module doc)."""
    ad = model.adapter
    if norm is None:
        _require_head(model)
        norm = ad.final_norm
    p = next(norm.parameters(), None)
    dev, dt = (p.device, p.dtype) if p is not None else (x.device, x.dtype)
    d = x.shape[-1]

    def run(v: Tensor) -> Tensor:
        return norm(v.to(device=dev, dtype=dt)).float()

    g = torch.Generator().manual_seed(0)
    r = torch.randn(4, d, generator=g)
    y1, y2 = run(r), run(r + 3.0)
    centred = bool((y1 - y2).abs().max() <= 1e-3 * y1.abs().max())
    b = getattr(norm, "bias", None)
    bias = None if b is None else b.detach().float()
    scale = 100.0   # large enough that the norm's epsilon is negligible (relative 1e-9)
    gain = torch.zeros(d)
    for zero_at in ((d - 1, 0) if d % 2 else (d - 1,)):
        v = _probe(d, zero_at, scale)
        rms = v.pow(2).mean().sqrt()
        out = run(v[None])[0].cpu() - (0.0 if bias is None else bias.cpu())
        nz = v != 0
        gain[nz] = out[nz] * rms / v[nz]
    gain = gain.to(x.device)
    xf = x.float()
    u = xf - xf.mean(-1, keepdim=True) if centred else xf
    y = run(xf).to(x.device) - (0.0 if bias is None else bias.to(x.device))
    gu = gain * u
    inv_s = (gu * y).sum(-1, keepdim=True) / (gu * gu).sum(-1, keepdim=True).clamp_min(1e-30)
    err = float((gu * inv_s - y).abs().max()) if y.numel() else 0.0
    tol = 1e-3 * max(1.0, float(y.abs().max()) if y.numel() else 1.0)
    if not err <= tol:
        raise Unsupported(ad.name, f"the norm {type(norm).__name__} is not of the form gain * (x [- mean]) / "
                                   f"scale + bias (affine fit error {err:.3g}); direct logit attribution and attribution "
                                   f"graphs need one")
    return FrozenNorm(gain[None] * inv_s, centred, None if bias is None else bias.to(x.device), err)
