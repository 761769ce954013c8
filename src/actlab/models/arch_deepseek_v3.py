"""DeepSeek-V3 / R1 adapter: multi-head latent attention (MLA), the first ``first_k_dense_replace`` blocks dense, the
rest a sigmoid router with a score-correction bias, group-limited top-k selection (``n_group`` groups, the best
``topk_group`` kept, groups scored by their top-2 experts), gate weights renormalised and scaled by
``routed_scaling_factor``, plus always-on shared experts.

Expert switches act on the **selection**: a switch object hands ``(off, on)`` to the router module for one call
(``SWITCH_ATTR``) and the rebuild excludes / forces those experts while recomputing the routing; logits are never
set to +-inf (a clamped sigmoid score + bias does not guarantee (de)selection)."""
from __future__ import annotations

import torch

from actlab.models.adapter import Tensor, register
from actlab.models.arch_llama import Llama
from actlab.models.arch_mixtral import Mixtral
from actlab.models.sites import SiteSpec

SWITCH_ATTR = "_actlab_expert_switch"
"""Attribute a switch sets on a router module for the current call: ``(off: list[int], on: list[int])``."""
READS_SWITCH = "_actlab_reads_switch"
"""Flag on router modules whose rebuild honours ``SWITCH_ATTR``."""


def select(module: torch.nn.Module, logits: torch.Tensor, off=(), on=()) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepseekV3TopkRouter's selection from ``logits [n, E]``, with experts ``off`` excluded from the candidates and
    experts ``on`` put in the selected set (weight: the largest score among the token's other selections), then
    the model's own normalisation and ``routed_scaling_factor``."""
    E, G = module.num_experts, module.num_group
    scores = logits.float().sigmoid()
    choice = scores + module.e_score_correction_bias.float()
    if off:
        choice[..., list(off)] = float("-inf")
    if on:
        choice[..., list(on)] = float("inf")
    group = choice.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
    gidx = torch.topk(group, k=module.topk_group, dim=-1, sorted=False)[1]
    gmask = torch.zeros_like(group).scatter_(1, gidx, 1).bool()
    cand = choice.masked_fill(~gmask[..., None].expand(-1, G, E // G).reshape(-1, E), float("-inf"))
    idx = torch.topk(cand, k=module.top_k, dim=-1, sorted=False)[1]
    w = scores.gather(1, idx)
    if on:
        forced = torch.isin(idx, torch.tensor(list(on), device=idx.device))
        best = w.masked_fill(forced, float("-inf")).amax(-1, keepdim=True)
        best = torch.where(torch.isfinite(best), best, scores.gather(1, idx).amax(-1, keepdim=True))
        w = torch.where(forced, best.expand_as(w), w)
    if module.norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return w * module.routed_scaling_factor, idx


def _deepseek_rebuild(module: torch.nn.Module, logits: torch.Tensor, output: tuple) -> tuple:
    off, on = getattr(module, SWITCH_ATTR, None) or ((), ())
    if hasattr(module, SWITCH_ATTR):
        delattr(module, SWITCH_ATTR)  # one call only: a later, unrelated edit must not see a stale switch
    w, idx = select(module, logits.reshape(-1, logits.shape[-1]), off, on)
    return (logits, w.to(output[1].dtype), idx)


@register
class DeepseekV3(Mixtral):
    """``model.layers.{i}``: MLA attention (``q_proj`` or ``q_a_proj``/``q_b_proj``, ``kv_a_proj_with_mqa``,
    ``kv_b_proj``, ``o_proj``); MoE blocks hold ``mlp.gate`` (router), ``mlp.experts`` (fused) and
    ``mlp.shared_experts`` (a gated MLP)."""

    name = "deepseek_v3"
    model_types = ("deepseek_v3",)

    def __init__(self, module: torch.nn.Module):
        super().__init__(module)
        for i in range(self.n_layers):
            if self.is_moe(i):
                setattr(self.get(f"{self.block_path(i)}.mlp.gate"), READS_SWITCH, True)

    @property
    def n_experts(self) -> int:
        return int(self.config.n_routed_experts)

    @property
    def d_expert(self) -> int:
        """Width of one routed expert (``moe_intermediate_size``); ``d_mlp`` stays the dense MLP's width."""
        return int(self.config.moe_intermediate_size)

    @property
    def d_head(self) -> int:
        return int(self.config.v_head_dim)

    def is_moe(self, i: int) -> bool:
        return self.has(f"{self.block_path(i)}.mlp.experts")

    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        s = Llama.block_sites(self, i)
        for k in ("attn.q", "attn.k", "attn.v", "attn.pattern"):
            del s[k]
        if self.is_moe(i):
            del s["mlp_act"]
            s["moe.router"] = SiteSpec("moe.router", f"{self.block_path(i)}.mlp.gate", flat_tokens=True,
                                       rebuild=_deepseek_rebuild)
        return s

    def missing_sites(self) -> dict[str, str]:
        mla = ("multi-head latent attention compresses keys and values through kv_a_proj_with_mqa / kv_b_proj; "
               "there is no per-head q/k/v projection output to hook (use attn.z, or a module: path)")
        return {"attn.q": mla, "attn.k": mla, "attn.v": mla, "attn.pattern": mla, **super().missing_sites()}

    def route(self, i: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate weights, expert indices) ``[n, k]`` the router of block ``i`` picks from ``logits [n, E]``."""
        return select(self.get(f"{self.block_path(i)}.mlp.gate"), logits.reshape(-1, logits.shape[-1]))

    def W_Q(self, i: int) -> Tensor:
        raise self.unsupported("multi-head latent attention: no per-head W_Q view")

    W_K = W_V = W_Q

    def W_in(self, i: int) -> Tensor:
        return Llama.W_in(self, i) if not self.is_moe(i) else super().W_in(i)

    def W_gate(self, i: int) -> Tensor:
        return Llama.W_gate(self, i) if not self.is_moe(i) else super().W_gate(i)

    def W_out(self, i: int) -> Tensor:
        return Llama.W_out(self, i) if not self.is_moe(i) else super().W_out(i)

    def b_in(self, i: int) -> Tensor | None:
        return Llama.b_in(self, i) if not self.is_moe(i) else super().b_in(i)

    def b_out(self, i: int) -> Tensor | None:
        return Llama.b_out(self, i) if not self.is_moe(i) else super().b_out(i)

    def mlp_writers(self, i: int) -> list[tuple[str, Tensor, Tensor | None]]:
        if not self.is_moe(i):
            return Llama.mlp_writers(self, i)
        return [*super().mlp_writers(i), (f"blocks.{i}.mlp.shared_experts",
                                          self.get(f"{self.block_path(i)}.mlp.shared_experts.down_proj").weight.T,
                                          None)]
