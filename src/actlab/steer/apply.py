"""Applying directions: norm-preserving addition, prompt-only addition, ablation at every layer, and baking the
ablation into the weights (orthogonalising every matrix that writes to the residual stream) as a new model folder.
"""
from __future__ import annotations

import copy
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from actlab.artifact import atomic_write_json
from actlab.core import Add, Intervention, check_tensor, is_zero, register_op, require_finite, row_alpha
from actlab.models import Unsupported

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


def is_prefill(ctx) -> bool:
    """True for a forward call without KV cache (the prompt pass of ``generate()``, or a plain forward)."""
    return ctx.info is None or ctx.info.past == 0


@register_op
@dataclass
class NormPreservingAdd(Intervention):
    """h' = h + alpha * vector, rescaled per token to ||h|| (GrAInS): changes direction, never the norm.
    ``alpha`` may be a ``[B]`` tensor (per batch row)."""

    op: ClassVar[str] = "norm_add"
    vector: torch.Tensor
    alpha: float | torch.Tensor = 1.0
    prefill_only: bool = False

    def __post_init__(self):
        require_finite("NormPreservingAdd.vector", self.vector)
        require_finite("NormPreservingAdd.alpha", self.alpha)

    def edit(self, act, ctx):
        if is_zero(self.alpha) or (self.prefill_only and not is_prefill(ctx)):
            return act
        v = check_tensor("NormPreservingAdd.vector", self.vector, act, ctx)
        a = act.float()
        new = a + row_alpha("NormPreservingAdd.alpha", self.alpha, a, ctx) * v.float()
        n_old = a.norm(dim=-1, keepdim=True)
        out = new * (n_old / new.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return out.to(act.dtype)


@register_op
@dataclass
class PromptAdd(Add):
    """act + alpha * vector on the prompt pass only (the refusal paper's default: generated tokens unsteered);
    ``alpha`` may be a ``[B]`` tensor (per batch row)."""

    op: ClassVar[str] = "prompt_add"

    def __post_init__(self):
        require_finite("PromptAdd.vector", self.vector)
        require_finite("PromptAdd.alpha", self.alpha)

    def edit(self, act, ctx):
        return super().edit(act, ctx) if is_prefill(ctx) else act


def ablation_sites(n_layers: int) -> list[str]:
    """Every write to the residual stream: the block-0 input (embeddings), each attention and MLP output."""
    return ["blocks.0.resid_pre"] + [f"blocks.{i}.{k}" for i in range(n_layers) for k in ("attn_out", "mlp_out")]


def unit_direction(model: Model, direction: torch.Tensor, what: str) -> torch.Tensor:
    """``direction`` as a float unit vector; refuses a wrong shape, NaN/Inf or a zero vector (which would ablate
    nothing, or write NaN weights once normalised)."""
    if direction.shape != (model.d_model,):
        raise ValueError(f"{what}: direction has shape {list(direction.shape)}; expected [{model.d_model}]")
    require_finite(f"{what}: direction", direction)
    n = float(direction.double().norm())
    if not n > 0:
        raise ValueError(f"{what}: direction has norm 0; nothing to project out")
    return (direction.double() / n).float()


def ablate_everywhere(model: Model, direction: torch.Tensor) -> list[tuple[str, Intervention]]:
    """Interventions that project ``direction`` out of every residual write (use with ``model.intervene``)."""
    from actlab.core import Ablate

    u = unit_direction(model, direction, "ablate_everywhere")
    return [(s, Ablate(u.clone())) for s in ablation_sites(model.n_layers)]


def _untie_unembedding(model: Model) -> None:
    """Give the unembedding its own copy of the weights when it shares them with the embedding, so orthogonalising
    the embedding leaves the readout as it was (the final norm's gain would otherwise break the equivalence)."""
    ad, module = model.adapter, model.module
    unembed = ad.unembed
    if unembed is None or unembed.weight.data_ptr() != ad.W_E.data_ptr():
        return
    unembed.weight = torch.nn.Parameter(unembed.weight.detach().clone())
    if getattr(module.config, "tie_word_embeddings", None) is not None:
        module.config.tie_word_embeddings = False
    if hasattr(module, "_tied_weights_keys"):
        module._tied_weights_keys = {} if isinstance(module._tied_weights_keys, dict) else []


def orthogonalize_(model: Model, direction: torch.Tensor) -> list[str]:
    """Edit ``model``'s weights in place so that no residual write (every ``model.adapter.residual_writers()``
    weight and bias: embeddings, attention outputs, MLP outputs / experts) has a component along ``direction``;
    returns the edited labels. Pre-norm stacks only: a post-norm block (BERT) writes ``LayerNorm(x + out)``, which
    re-mixes the direction, so no weight edit equals ``ablate_everywhere`` there."""
    ad = model.adapter
    r = unit_direction(model, direction, "orthogonalize_").double().cpu()
    if ad.post_norm or ad.final_norm is None:
        raise Unsupported(ad.name, "weight orthogonalisation needs a pre-norm stack ending in a final norm; this "
                                   "architecture is post-norm (LayerNorm(x + out) re-mixes the direction into the "
                                   "residual stream), so no weight edit equals ablate_everywhere")
    edited = []
    with torch.no_grad():
        _untie_unembedding(model)
        for label, w, b in ad.residual_writers():
            for name, t in ((label, w), (f"{label}.bias", b)):
                if t is None:
                    continue
                rr = r.to(t.device)
                new = t.double() - (t.double() @ rr)[..., None] * rr  # remove the component along r (last dim)
                require_finite(f"orthogonalised weight {name}", new)
                t.copy_(new.to(t.dtype))
                edited.append(name)
    return edited


def orthogonalize_model(model: Model, direction: torch.Tensor, out_dir: str | os.PathLike, *, meta: dict | None = None
                        ) -> Path:
    """Write an edited copy of ``model`` to ``out_dir`` (HF folder) with ``direction`` removed from every residual
    write; loading it with ``actlab.load_model(out_dir)`` equals running ``ablate_everywhere``. The live model is
    not changed."""
    unit_direction(model, direction, "orthogonalize_model")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the edited model")
    edit = copy.deepcopy(model)  # the module, its site table and adapter, bound together
    edited = orthogonalize_(edit, direction.detach().float())
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # never another writer's
    try:
        edit.module.save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "actlab_edit.json", {"format_version": 1, "kind": "actlab.orthogonalized",
                                                     "base_model": model.name, "base_revision": model.revision,
                                                     "architecture": model.family, "edited": edited,
                                                     "meta": meta or {}})
        if out.exists():
            out.rmdir()  # empty (checked above); a non-empty folder appearing meanwhile makes this fail
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote orthogonalised model to %s (%d tensors edited)", out, len(edited))
    return out
