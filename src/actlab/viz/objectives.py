"""A differentiable objective on a unit: a channel, a neuron, a direction, an SAE latent or an output logit.

``Unit(site, ...)`` names what to drive; ``objective(model, unit)(x) -> [batch]`` runs the model on ``x`` and reads the
site through ``model.recording(..., grad=True)`` (the forward stops at the site), so the value stays differentiable in
``x``. Site ``"output"`` reads the model's output (a classifier's logits).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from actlab.core import StopForward

if TYPE_CHECKING:
    from actlab.models import Model

OUTPUT = "output"


@dataclass
class Unit:
    """What to drive at ``site``: exactly one of ``channel`` (dim 1 of ``[b, C, ...]``, averaged over the rest),
    ``neuron`` (an index into the flattened activation), ``direction`` (a vector over the feature dim, averaged over
    spatial positions / tokens), ``latent`` of ``encoder`` (an SAE's ``encode``: ``[n, d] -> [n, latents]``)."""

    site: str = OUTPUT
    channel: int | None = None
    neuron: int | None = None
    direction: torch.Tensor | None = None
    latent: int | None = None
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("channel", "neuron", "direction", "latent") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"a Unit takes exactly one of channel, neuron, direction, latent; got {given or 'none'}")
        if self.latent is not None and self.encoder is None:
            raise ValueError("Unit(latent=...) needs encoder= (e.g. a Dictionary's encode)")

    def describe(self) -> str:
        what = next(f"{n} {getattr(self, n) if n != 'direction' else ''}".strip()
                    for n in ("channel", "neuron", "direction", "latent") if getattr(self, n) is not None)
        return f"{self.site} {what}"


def features_last(act: torch.Tensor, conv: bool) -> torch.Tensor:
    """``[b, n, d]``: conv maps ``[b, C, H, W]`` as ``[b, H*W, C]``, token sequences as is, vectors as ``[b, 1, d]``."""
    if conv:
        return act.flatten(2).transpose(1, 2)
    return act if act.dim() == 3 else act.reshape(act.shape[0], 1, -1)


def unit_value(act: torch.Tensor, unit: Unit) -> torch.Tensor:
    """The unit's value per batch row from the site's activation ``act``."""
    if unit.channel is not None:
        if not 0 <= unit.channel < act.shape[1]:
            raise ValueError(f"channel {unit.channel} out of range for {unit.site} with {act.shape[1]} channels")
        return act[:, unit.channel].reshape(act.shape[0], -1).mean(1)
    if unit.neuron is not None:
        flat = act.reshape(act.shape[0], -1)
        if not 0 <= unit.neuron < flat.shape[1]:
            raise ValueError(f"neuron {unit.neuron} out of range for {unit.site} with {flat.shape[1]} values")
        return flat[:, unit.neuron]
    conv = act.dim() == 4
    f = features_last(act, conv)
    if unit.direction is not None:
        d = unit.direction.to(f)
        if d.shape != (f.shape[-1],):
            raise ValueError(f"direction has shape {list(d.shape)}; {unit.site} has {f.shape[-1]} features")
        return (f @ d).mean(1)
    z = unit.encoder(f.reshape(-1, f.shape[-1])).reshape(f.shape[0], f.shape[1], -1)
    if not 0 <= unit.latent < z.shape[-1]:
        raise ValueError(f"latent {unit.latent} out of range for an encoder with {z.shape[-1]} latents")
    return z[..., unit.latent].mean(1)


def read_site(model: Model, x: torch.Tensor, site: str) -> torch.Tensor:
    """The activation at ``site`` for input ``x``, in the autograd graph (the output for ``site='output'``)."""
    if site == OUTPUT:
        out = model.module(x)
        return out.logits if hasattr(out, "logits") else out
    with model.recording([site], grad=True, stop_early=True) as rec:
        try:
            model.module(x)
        except StopForward:
            pass
    return rec[site]


def objective(model: Model, unit: Unit) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> [batch]``: the unit's value for each input row (differentiable in ``x``)."""
    if unit.site != OUTPUT:
        model.check_sites([unit.site])
    return lambda x: unit_value(read_site(model, x, unit.site), unit)


def class_logits(model: Model, classes) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> [batch]``: row i's output logit of ``classes[i]`` (one image per class in a single run)."""
    idx = torch.as_tensor(classes, dtype=torch.long)

    def f(x: torch.Tensor) -> torch.Tensor:
        if len(x) != len(idx):
            raise ValueError(f"class_logits was built for {len(idx)} rows; got a batch of {len(x)}")
        return read_site(model, x, OUTPUT)[torch.arange(len(x)), idx.to(x.device)]
    return f


def site_codes(model: Model, x: torch.Tensor, site: str | None, batch_size: int = 256) -> torch.Tensor:
    """``[n, d]`` codes of inputs: the flattened activation at ``site`` (conv maps averaged over space), or the
    flattened input itself with ``site=None``."""
    if site is None:
        return x.reshape(len(x), -1)
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), batch_size):
            a = read_site(model, x[lo:lo + batch_size], site).detach()
            out.append(a.mean((2, 3)) if a.dim() == 4 else a.reshape(len(a), -1))
    return torch.cat(out)
