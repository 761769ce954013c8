"""Applying directions: norm-preserving addition, prompt-only addition, ablation at every layer, and baking the
ablation into the weights (orthogonalising every matrix that writes to the residual stream) as a new model folder.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from actlab.core import Add, Intervention
from actlab.core.interventions import check_tensor, is_zero, register_op, row_alpha
from actlab.steer.directions import require_finite
from actlab.artifact import atomic_write_json

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


def unit_direction(model, direction: torch.Tensor, what: str) -> torch.Tensor:
    """``direction`` as a float unit vector; refuses a wrong shape, NaN/Inf or a zero vector (which would ablate
    nothing, or write NaN weights once normalised)."""
    if direction.shape != (model.d_model,):
        raise ValueError(f"{what}: direction has shape {list(direction.shape)}; expected [{model.d_model}]")
    require_finite(f"{what}: direction", direction)
    n = float(direction.double().norm())
    if not n > 0:
        raise ValueError(f"{what}: direction has norm 0; nothing to project out")
    return (direction.double() / n).float()


def ablate_everywhere(model, direction: torch.Tensor) -> list[tuple[str, Intervention]]:
    """Interventions that project ``direction`` out of every residual write (use with ``model.intervene``)."""
    from actlab.core import Ablate

    u = unit_direction(model, direction, "ablate_everywhere")
    return [(s, Ablate(u.clone())) for s in ablation_sites(model.n_layers)]


def _proj_out_rows(w: torch.Tensor, r: torch.Tensor) -> None:
    """w[..., d] -= (w r) r^T: outputs read along the last dim (embeddings, Conv1D weights)."""
    w -= (w @ r)[..., None] * r


def _proj_out_cols(w: torch.Tensor, r: torch.Tensor) -> None:
    """w[..., d, k] -= r (r^T w): Linear weights whose output dim is d."""
    w -= r[:, None] * (r @ w)[..., None, :]


def orthogonalize_(module: torch.nn.Module, family: str, direction: torch.Tensor) -> list[str]:
    """Edit ``module`` in place so no residual write has a component along ``direction``; returns edited names."""
    require_finite("orthogonalize_: direction", direction)
    if not float(direction.double().norm()) > 0:
        raise ValueError("orthogonalize_: direction has norm 0; nothing to project out")
    r = (direction.double() / direction.double().norm())
    edited = []

    def rows(name, p):
        w = p.data.double()
        _proj_out_rows(w, r)
        require_finite(f"orthogonalised weight {name}", w)
        p.data.copy_(w)
        edited.append(name)

    def cols(name, p):
        w = p.data.double()
        _proj_out_cols(w, r)
        require_finite(f"orthogonalised weight {name}", w)
        p.data.copy_(w)
        edited.append(name)

    with torch.no_grad():
        if family in ("llama", "mixtral"):
            cfg = module.config
            if getattr(cfg, "tie_word_embeddings", False):  # keep the unembedding as it was: untie it
                module.lm_head.weight = torch.nn.Parameter(module.lm_head.weight.detach().clone())
                cfg.tie_word_embeddings = False
                if hasattr(module, "_tied_weights_keys"):
                    module._tied_weights_keys = {} if isinstance(module._tied_weights_keys, dict) else []
            rows("model.embed_tokens.weight", module.model.embed_tokens.weight)
            for i, layer in enumerate(module.model.layers):
                o = layer.self_attn.o_proj
                cols(f"model.layers.{i}.self_attn.o_proj.weight", o.weight)
                if o.bias is not None:
                    rows(f"model.layers.{i}.self_attn.o_proj.bias", o.bias)
                mlp = layer.mlp
                if hasattr(mlp, "down_proj"):
                    cols(f"model.layers.{i}.mlp.down_proj.weight", mlp.down_proj.weight)
                    if mlp.down_proj.bias is not None:
                        rows(f"model.layers.{i}.mlp.down_proj.bias", mlp.down_proj.bias)
                elif hasattr(mlp, "experts") and isinstance(getattr(mlp.experts, "down_proj", None), torch.Tensor):
                    cols(f"model.layers.{i}.mlp.experts.down_proj", mlp.experts.down_proj)
                else:
                    raise NotImplementedError(f"cannot orthogonalise the MLP of layer {i} ({type(mlp).__name__})")
        elif family == "gpt2":
            tr = module.transformer
            if getattr(module.config, "tie_word_embeddings", True):
                module.lm_head.weight = torch.nn.Parameter(module.lm_head.weight.detach().clone())
                module.config.tie_word_embeddings = False
            rows("transformer.wte.weight", tr.wte.weight)
            rows("transformer.wpe.weight", tr.wpe.weight)
            for i, blk in enumerate(tr.h):
                for name, lin in (("attn.c_proj", blk.attn.c_proj), ("mlp.c_proj", blk.mlp.c_proj)):
                    rows(f"transformer.h.{i}.{name}.weight", lin.weight)  # Conv1D: [in, out]
                    rows(f"transformer.h.{i}.{name}.bias", lin.bias)
        else:
            raise NotImplementedError(f"weight orthogonalisation supports llama/mixtral/gpt2 families, not {family!r}")
    return edited


def orthogonalize_model(model, direction: torch.Tensor, out_dir: str | os.PathLike, *, meta: dict | None = None
                        ) -> Path:
    """Write an edited copy of ``model`` to ``out_dir`` (HF folder) with ``direction`` removed from every residual
    write; loading it with ``actlab.load_model(out_dir)`` equals running ``ablate_everywhere``. The live model is
    not changed."""
    unit_direction(model, direction, "orthogonalize_model")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the edited model")
    module = copy.deepcopy(model.module)
    edited = orthogonalize_(module, model.family, direction.detach().cpu().float())
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    module.save_pretrained(tmp)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "actlab_edit.json", {"format_version": 1, "kind": "actlab.orthogonalized",
                                                 "base_model": model.name, "base_revision": model.revision,
                                                 "edited": edited, "meta": meta or {}})
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    log.info("wrote orthogonalised model to %s (%d tensors edited)", out, len(edited))
    return out
