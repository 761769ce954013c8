"""Canonical site names per architecture family: one naming for every model.

A site is a place in the forward pass where an activation lives. Each family adapter maps the canonical
names of DESIGN.md (``blocks.{i}.resid_post`` ...) to a module path and whether the activation is that
module's input or its output. Adding a family is adding one table to ``FAMILIES``.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from actlab.models.attention import POINT, attach_points

# per-block kinds in forward order
SITE_KINDS = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out", "resid_mid", "mlp_in", "moe.router", "mlp_act", "mlp_out",
              "resid_post")


@dataclass(frozen=True)
class SiteSpec:
    """Where one site lives: ``module`` path (relative to the HF model), ``io`` 'in' or 'out', and how to view it.

    ``heads``: split the last dim into ``[heads, d_head]`` (per-head sites). ``flat_tokens``: the module sees
    ``[batch*pos, d]`` (MoE routers); the engine views it as ``[batch, pos, d]``. ``rebuild``: for outputs that
    are derived from the site's tensor inside the module (router logits -> top-k), recompute them after an edit.
    ``plus_input_of``: the site is this module's output plus the input of another module (pre-LN ``resid_mid`` =
    ``resid_pre + attn_out``, the residual read at the block's first norm, hooked at the attention output so an edit
    reaches the residual stream itself, not only the MLP's norm). ``pattern``: the attention probabilities
    ``[batch, head, query, key]``, seen as ``[batch, query, head, key]`` (positions first, like every site); hooking
    it switches the model to actlab's eager attention while the hook lives (see ``actlab.models.attention``).
    """

    name: str
    module: str
    io: str = "out"
    heads: int | None = None
    flat_tokens: bool = False
    rebuild: Callable | None = field(default=None, compare=False)
    plus_input_of: str | None = None
    pattern: bool = False


def _mixtral_rebuild(module: torch.nn.Module, logits: torch.Tensor, output: tuple) -> tuple:
    """Recompute routing (softmax, top-k, renormalise) from edited router logits, as MixtralTopKRouter does."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_v, top_i = torch.topk(probs, module.top_k, dim=-1)
    top_v = top_v / top_v.sum(dim=-1, keepdim=True)
    return (logits, top_v.to(output[1].dtype), top_i)


@dataclass(frozen=True)
class Family:
    """A family adapter: per-block site table plus global sites, and where the layer count lives."""

    name: str
    model_types: tuple[str, ...]
    block: Callable[[int, object], dict[str, SiteSpec]]
    globals: Callable[[object], dict[str, SiteSpec]]


def _n_heads(cfg) -> int:
    return getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")


def _n_kv_heads(cfg) -> int:
    return getattr(cfg, "num_key_value_heads", None) or _n_heads(cfg)


def _llama_block(i: int, cfg, moe: bool = False) -> dict[str, SiteSpec]:
    p = f"model.layers.{i}"
    s = {
        "resid_pre": SiteSpec("resid_pre", p, "in"),
        "attn_out": SiteSpec("attn_out", f"{p}.self_attn"),
        "resid_mid": SiteSpec("resid_mid", f"{p}.self_attn", plus_input_of=f"{p}.input_layernorm"),
        "mlp_in": SiteSpec("mlp_in", f"{p}.mlp", "in"),
        "mlp_out": SiteSpec("mlp_out", f"{p}.mlp"),
        "resid_post": SiteSpec("resid_post", p),
        "attn.z": SiteSpec("attn.z", f"{p}.self_attn.o_proj", "in", heads=_n_heads(cfg)),
        "attn.pattern": SiteSpec("attn.pattern", f"{p}.self_attn.{POINT}", pattern=True),
        "attn.q": SiteSpec("attn.q", f"{p}.self_attn.q_proj", heads=_n_heads(cfg)),  # before rotary
        "attn.k": SiteSpec("attn.k", f"{p}.self_attn.k_proj", heads=_n_kv_heads(cfg)),
        "attn.v": SiteSpec("attn.v", f"{p}.self_attn.v_proj", heads=_n_kv_heads(cfg)),
    }
    if moe:
        s["moe.router"] = SiteSpec("moe.router", f"{p}.mlp.gate", flat_tokens=True, rebuild=_mixtral_rebuild)
    else:
        s["mlp_act"] = SiteSpec("mlp_act", f"{p}.mlp.down_proj", "in")
    return s


def _llama_globals(cfg) -> dict[str, SiteSpec]:
    return {"embed": SiteSpec("embed", "model.embed_tokens"), "final_norm": SiteSpec("final_norm", "model.norm"),
            "logits": SiteSpec("logits", "lm_head")}


def _gpt2_block(i: int, cfg) -> dict[str, SiteSpec]:
    p = f"transformer.h.{i}"
    return {
        "resid_pre": SiteSpec("resid_pre", p, "in"),
        "attn_out": SiteSpec("attn_out", f"{p}.attn"),
        "resid_mid": SiteSpec("resid_mid", f"{p}.attn", plus_input_of=f"{p}.ln_1"),
        "mlp_in": SiteSpec("mlp_in", f"{p}.mlp", "in"),
        "mlp_act": SiteSpec("mlp_act", f"{p}.mlp.c_proj", "in"),
        "mlp_out": SiteSpec("mlp_out", f"{p}.mlp"),
        "resid_post": SiteSpec("resid_post", p),
        "attn.z": SiteSpec("attn.z", f"{p}.attn.c_proj", "in", heads=_n_heads(cfg)),
        "attn.pattern": SiteSpec("attn.pattern", f"{p}.attn.{POINT}", pattern=True),
    }


def _gpt2_globals(cfg) -> dict[str, SiteSpec]:
    return {"embed": SiteSpec("embed", "transformer.wte"), "final_norm": SiteSpec("final_norm", "transformer.ln_f"),
            "logits": SiteSpec("logits", "lm_head")}


def _bert_block(i: int, cfg, prefix: str = "") -> dict[str, SiteSpec]:
    # BERT is post-LN: the residual stream after attention is the attention block's LayerNorm output.
    p = f"{prefix}encoder.layer.{i}"
    return {
        "resid_pre": SiteSpec("resid_pre", p, "in"),
        "attn_out": SiteSpec("attn_out", f"{p}.attention.output.dense"),
        "resid_mid": SiteSpec("resid_mid", f"{p}.attention"),
        "mlp_in": SiteSpec("mlp_in", f"{p}.intermediate", "in"),
        "mlp_act": SiteSpec("mlp_act", f"{p}.output.dense", "in"),
        "mlp_out": SiteSpec("mlp_out", f"{p}.output.dense"),
        "resid_post": SiteSpec("resid_post", p),
        "attn.z": SiteSpec("attn.z", f"{p}.attention.output.dense", "in", heads=_n_heads(cfg)),
        "attn.pattern": SiteSpec("attn.pattern", f"{p}.attention.self.{POINT}", pattern=True),
        "attn.q": SiteSpec("attn.q", f"{p}.attention.self.query", heads=_n_heads(cfg)),
        "attn.k": SiteSpec("attn.k", f"{p}.attention.self.key", heads=_n_heads(cfg)),
        "attn.v": SiteSpec("attn.v", f"{p}.attention.self.value", heads=_n_heads(cfg)),
    }


def _bert_globals(cfg, prefix: str = "") -> dict[str, SiteSpec]:
    return {"embed": SiteSpec("embed", f"{prefix}embeddings")}


FAMILIES: list[Family] = [
    Family("llama", ("llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo2", "gemma", "gemma2", "phi3"),
           _llama_block, _llama_globals),
    Family("mixtral", ("mixtral",), lambda i, c: _llama_block(i, c, moe=True), _llama_globals),
    Family("gpt2", ("gpt2",), _gpt2_block, _gpt2_globals),
    Family("bert", ("bert",), _bert_block, _bert_globals),
]

MODULE_PREFIX = "module:"


def family_for(module: torch.nn.Module) -> Family | None:
    """The family adapter for an HF model (by ``config.model_type``), or None for generic models."""
    cfg = getattr(module, "config", None)
    mt = getattr(cfg, "model_type", None)
    for fam in FAMILIES:
        if mt in fam.model_types:
            return fam
    return None


def n_layers_of(cfg) -> int:
    for k in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(cfg, k, None) is not None:
            return int(getattr(cfg, k))
    raise ValueError(f"cannot find the layer count in {type(cfg).__name__}")


class SiteMap:
    """All canonical sites of a model, resolvable by name; raw ``module:<path>`` works for any module."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.family = family_for(module)
        self._specs: dict[str, SiteSpec] = {}
        if self.family is not None:
            cfg = module.config
            prefix = self._bert_prefix(module) if self.family.name == "bert" else None
            glob = self.family.globals(cfg) if prefix is None else _bert_globals(cfg, prefix)
            self.n_layers = n_layers_of(cfg)
            self._specs["embed"] = glob["embed"]
            for i in range(self.n_layers):
                blk = self.family.block(i, cfg) if prefix is None else _bert_block(i, cfg, prefix)
                for kind, spec in sorted(blk.items(), key=lambda kv: SITE_KINDS.index(kv[0])):
                    self._specs[f"blocks.{i}.{kind}"] = dataclasses.replace(spec, name=f"blocks.{i}.{kind}")
            for k in ("final_norm", "logits"):
                if k in glob:
                    self._specs[k] = glob[k]
            attach_points(module, [v.module.rsplit(".", 1)[0] for v in self._specs.values() if v.pattern])
            # drop sites whose module does not exist (e.g. a base model without lm_head)
            names = dict(module.named_modules())
            self._specs = {k: v for k, v in self._specs.items() if v.module in names}
        else:
            self.n_layers = 0

    @staticmethod
    def _bert_prefix(module: torch.nn.Module) -> str:
        names = dict(module.named_modules())
        return "" if "encoder.layer" in names else "bert."

    @property
    def names(self) -> list[str]:
        """Canonical names in forward order, then ``module:`` paths are also accepted."""
        return list(self._specs)

    def resolve(self, name: str) -> SiteSpec:
        """The spec for a canonical name or ``module:<path>[:in]``; unknown names list the closest valid ones."""
        if name in self._specs:
            return self._specs[name]
        if name.startswith(MODULE_PREFIX):
            path, io = name[len(MODULE_PREFIX):], "out"
            if path.endswith(":in"):
                path, io = path[:-3], "in"
            modules = dict(self.module.named_modules())
            if path not in modules:
                close = difflib.get_close_matches(path, [m for m in modules if m], n=5, cutoff=0.5)
                raise KeyError(f"no module {path!r} in {type(self.module).__name__}; closest module paths: "
                               f"{', '.join(close) or '(none)'}")
            return SiteSpec(name, path, io)
        close = difflib.get_close_matches(name, self.names, n=5, cutoff=0.6)
        if not close:
            m = re.match(r"blocks\.(\d+)\.(.+)", name)
            if m and int(m.group(1)) >= self.n_layers:
                close = [f"blocks.{self.n_layers - 1}.{m.group(2)}"] if self.n_layers else []
        fam = self.family.name if self.family else "generic"
        kinds = sorted({n.split(".", 2)[-1] for n in self.names if n.startswith("blocks.")})
        raise KeyError(
            f"unknown site {name!r} for this {fam} model ({self.n_layers} blocks). Closest valid names: "
            f"{', '.join(close) or '(none)'}. Per-block kinds: {', '.join(kinds) or '(none)'}; "
            f"any module is reachable as 'module:<path>' (see model.module_paths())."
        )

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except KeyError:
            return False
