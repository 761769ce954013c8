"""VISTA (arXiv 2502.03628): self-logits augmentation (SLA) as a decoding option of ``generate()``, and the
steering vector from a context (an image in LVLMs; any removable context in text models) with its adaptive,
norm-preserving hook. Only text models are exercised on these machines; VSV works wherever a context can be dropped.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from actlab.core import Intervention, check_tensor, register_op, require_finite

if TYPE_CHECKING:
    from actlab.models import Model


def early_logits(model: Model, hidden: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
    """Logit lens: unembed ``hidden [..., d]`` (through the final norm when ``final_norm``), with the modules the
    architecture adapter names (``model.adapter.final_norm`` / ``unembed``)."""
    ad = model.adapter
    if final_norm:
        if ad.final_norm is None:
            raise ValueError(f"{model.name} ({ad.name}) has no final norm; use final_norm=False")
        hidden = ad.final_norm(hidden)
    if ad.unembed is None:
        raise ValueError(f"{model.name} ({ad.name}) has no unembedding (loaded without a language-model head); "
                         f"self-logits augmentation needs one")
    return ad.unembed(hidden)


class SelfLogitsAugmentation:
    """A Hugging Face logits processor: ``(1 - alpha) * logits + alpha * mean_l unembed(h_l)`` at each step.

    Reads ``blocks.{l}.resid_post`` of the newest token from a recording made during the same ``generate()``.
    """

    def __init__(self, model: Model, layers: Sequence[int], alpha: float, rec, final_norm: bool = True):
        self.model, self.layers, self.alpha, self.rec, self.final_norm = model, list(layers), alpha, rec, final_norm

    def mixed(self, logits: torch.Tensor, step: int = -1) -> torch.Tensor:
        hs = [self.rec.steps[f"blocks.{i}.resid_post"][step][:, -1] for i in self.layers]
        with torch.no_grad():
            early = torch.stack([early_logits(self.model, h, self.final_norm).float() for h in hs]).mean(0)
        if self.alpha == 0:
            return logits
        if self.alpha == 1:
            return early.to(logits.dtype)
        return ((1 - self.alpha) * logits.float() + self.alpha * early).to(logits.dtype)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.mixed(scores)


def _check_layers(model: Model, layers, alpha):
    if model.adapter.unembed is None:
        raise ValueError(f"{model.name} ({model.adapter.name}) has no unembedding (loaded without a language-model "
                         f"head); self-logits augmentation needs one")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    if not layers:
        raise ValueError("SLA needs at least one layer")
    bad = [i for i in layers if not 0 <= int(i) < model.n_layers]
    if bad:
        raise ValueError(f"SLA layers {bad} out of range for {model.n_layers} blocks")


@contextlib.contextmanager
def sla(model: Model, layers: Sequence[int], alpha: float = 0.3, final_norm: bool = True) -> Iterator[
        SelfLogitsAugmentation]:
    """Context giving a processor to pass as ``model.generate(..., logits_processor=[proc])``."""
    _check_layers(model, layers, alpha)
    with model.recording([f"blocks.{int(i)}.resid_post" for i in layers], positions="all") as rec:
        yield SelfLogitsAugmentation(model, layers, alpha, rec, final_norm)


def sla_generate(model: Model, prompts, max_new_tokens: int = 32, *, sla_layers: Sequence[int] | None = None,
             sla_alpha: float = 0.3, final_norm: bool = True, **kw):
    """``model.generate`` with self-logits augmentation from ``sla_layers`` (none: plain generate)."""
    if not sla_layers:
        return model.generate(prompts, max_new_tokens=max_new_tokens, **kw)
    from transformers import LogitsProcessorList

    with sla(model, sla_layers, sla_alpha, final_norm) as proc:
        procs = LogitsProcessorList([proc, *kw.pop("logits_processor", [])])
        return model.generate(prompts, max_new_tokens=max_new_tokens, logits_processor=procs, **kw)


def sla_logits(model: Model, inputs, layers: Sequence[int], alpha: float, final_norm: bool = True) -> torch.Tensor:
    """Next-token logits of one forward pass with SLA applied (last position), for analysis and tests."""
    _check_layers(model, layers, alpha)
    with sla(model, layers, alpha, final_norm) as proc, torch.no_grad():
        logits = model(inputs).logits[:, -1]
        return proc.mixed(logits, step=0)


# -- visual (context) steering vector -------------------------------------------------------------------------
def vsv_vectors(model: Model, with_context, without_context, layers: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """``v_l = h_l(with)[-1] - h_l(without)[-1]`` at each block's MLP output (one query; two extra forwards)."""
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    sites = [f"blocks.{i}.mlp_out" for i in layers]
    a = model.record(with_context, sites=sites, positions="last", dtype=torch.float32)
    b = model.record(without_context, sites=sites, positions="last", dtype=torch.float32)
    out = {s: (a[s] - b[s]).mean(0) for s in sites}
    for s, v in out.items():
        require_finite(f"vsv_vectors: context steering vector at {s!r}", v)
    return out


@register_op
@dataclass
class ContextSteer(Intervention):
    """VSV hook: ``x' = normalize(normalize(x) + lam * s * normalize(v)) * ||x||`` with
    ``s = 1 + max(0, cos(x, -v))`` (adaptive) or ``s = 1`` (simple). Norm preserving; identity at lam = 0."""

    op: ClassVar[str] = "vsv"
    vector: torch.Tensor
    lam: float = 0.1
    adaptive: bool = True

    def __post_init__(self):
        require_finite("ContextSteer.vector", self.vector)
        require_finite("ContextSteer.lam", self.lam)

    def edit(self, act, ctx):
        if self.lam == 0:
            return act
        v = check_tensor("ContextSteer.vector", self.vector, act, ctx).float()
        x = act.float()
        n = x.norm(dim=-1, keepdim=True)
        vn = v / v.norm().clamp_min(1e-12)
        s = 1 + (-(x @ vn) / n.squeeze(-1).clamp_min(1e-12)).clamp_min(0)[..., None] if self.adaptive else 1.0
        y = x / n.clamp_min(1e-12) + self.lam * s * vn
        return (y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12) * n).to(act.dtype)
