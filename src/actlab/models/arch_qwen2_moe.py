"""Qwen-MoE adapter (Qwen2-MoE, Qwen3-MoE): Llama attention, a softmax top-k router ``mlp.gate`` over fused experts,
plus (Qwen2-MoE) an always-on shared expert with a sigmoid gate; layers listed in ``mlp_only_layers`` (or off the
``decoder_sparse_step``) keep a dense MLP."""
from __future__ import annotations

import torch

from actlab.models.adapter import Tensor, register
from actlab.models.arch_llama import Llama
from actlab.models.arch_mixtral import Mixtral
from actlab.models.sites import SiteSpec


def _qwen_rebuild(module: torch.nn.Module, logits: torch.Tensor, output: tuple) -> tuple:
    """Recompute routing from edited logits as Qwen2MoeTopKRouter does: softmax, top-k, renormalise only when
    ``norm_topk_prob``."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_v, top_i = torch.topk(probs, module.top_k, dim=-1)
    if module.norm_topk_prob:
        top_v = top_v / top_v.sum(dim=-1, keepdim=True)
    return (logits, top_v.to(output[1].dtype), top_i)


@register
class QwenMoe(Mixtral):
    """Routed experts in ``mlp.experts`` (``gate_up_proj [E, 2*d_moe, d]``, ``down_proj [E, d, d_moe]``), router
    ``mlp.gate``; Qwen2-MoE adds ``mlp.shared_expert`` (a gated MLP) scaled by ``sigmoid(mlp.shared_expert_gate)``,
    which no router decision reaches."""

    name = "qwen_moe"
    model_types = ("qwen2_moe", "qwen3_moe")

    @property
    def n_experts(self) -> int:
        return int(self.config.num_experts)

    @property
    def d_expert(self) -> int:
        """Width of one routed expert (``moe_intermediate_size``); ``d_mlp`` stays the dense MLP's width."""
        return int(self.config.moe_intermediate_size)

    def is_moe(self, i: int) -> bool:
        return self.has(f"{self.block_path(i)}.mlp.experts")

    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        if not self.is_moe(i):
            return Llama.block_sites(self, i)
        s = super().block_sites(i)
        s["moe.router"] = SiteSpec("moe.router", f"{self.block_path(i)}.mlp.gate", flat_tokens=True,
                                   rebuild=_qwen_rebuild)
        return s

    def route(self, i: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate weights, expert indices) ``[..., k]`` the router of block ``i`` picks from ``logits``."""
        _, w, idx = _qwen_rebuild(self.get(f"{self.block_path(i)}.mlp.gate"), logits, (None, logits))
        return w, idx

    def _dense(self, i: int, what: str) -> Tensor:
        return getattr(Llama, what)(self, i)

    def W_in(self, i: int) -> Tensor:
        return self._dense(i, "W_in") if not self.is_moe(i) else super().W_in(i)

    def W_gate(self, i: int) -> Tensor:
        return self._dense(i, "W_gate") if not self.is_moe(i) else super().W_gate(i)

    def W_out(self, i: int) -> Tensor:
        return self._dense(i, "W_out") if not self.is_moe(i) else super().W_out(i)

    def b_in(self, i: int) -> Tensor | None:
        return self._dense(i, "b_in") if not self.is_moe(i) else super().b_in(i)

    def b_out(self, i: int) -> Tensor | None:
        return self._dense(i, "b_out") if not self.is_moe(i) else super().b_out(i)

    def W_router(self, i: int) -> Tensor:
        if not self.is_moe(i):
            raise self.unsupported(f"block {i} has a dense MLP (no router)")
        return super().W_router(i)

    def mlp_writers(self, i: int) -> list[tuple[str, Tensor, Tensor | None]]:
        if not self.is_moe(i):
            return Llama.mlp_writers(self, i)
        out = super().mlp_writers(i)
        shared = f"{self.block_path(i)}.mlp.shared_expert"
        if self.has(shared):
            out.append((f"blocks.{i}.mlp.shared_expert", self.get(f"{shared}.down_proj").weight.T, None))
        return out
