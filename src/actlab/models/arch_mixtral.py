"""Mixtral adapter: Llama attention, a sparse mixture-of-experts MLP (router ``mlp.gate``, fused expert weights)."""
from __future__ import annotations

import torch

from actlab.models.adapter import Tensor, register
from actlab.models.arch_llama import Llama
from actlab.models.sites import SiteSpec


def _mixtral_rebuild(module: torch.nn.Module, logits: torch.Tensor, output: tuple) -> tuple:
    """Recompute routing (softmax, top-k, renormalise) from edited router logits, as MixtralTopKRouter does."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_v, top_i = torch.topk(probs, module.top_k, dim=-1)
    top_v = top_v / top_v.sum(dim=-1, keepdim=True)
    return (logits, top_v.to(output[1].dtype), top_i)


@register
class Mixtral(Llama):
    """Experts live in ``mlp.experts`` as ``gate_up_proj [E, 2*d_mlp, d]`` (gate rows first) and
    ``down_proj [E, d, d_mlp]``; there is no single ``W_in``/``W_out``, so use the per-expert accessors."""

    name = "mixtral"
    model_types = ("mixtral",)

    @property
    def n_experts(self) -> int:
        return int(self.config.num_local_experts)

    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        s = super().block_sites(i)
        del s["mlp_act"]
        s["moe.router"] = SiteSpec("moe.router", f"{self.block_path(i)}.mlp.gate", flat_tokens=True,
                                   rebuild=_mixtral_rebuild)
        return s

    def missing_sites(self) -> dict[str, str]:
        return {"mlp_act": "a mixture-of-experts MLP has one hidden activation per expert and each token visits only "
                           "its top-k experts, so there is no single [batch, pos, d_mlp] tensor; read "
                           "blocks.{i}.moe.router or hook module:model.layers.{i}.mlp.experts"}

    def _experts(self, i: int) -> torch.nn.Module:
        return self.get(f"{self.block_path(i)}.mlp.experts")

    def _check(self, e: int) -> None:
        if not 0 <= e < self.n_experts:
            raise IndexError(f"{self.name}: expert {e} out of range ({self.n_experts} experts)")

    def W_in(self, i: int) -> Tensor:
        raise self.unsupported("the MLP is a mixture of experts: no single W_in; use W_in_expert(i, e)")

    def b_in(self, i: int) -> Tensor | None:
        raise self.unsupported("the MLP is a mixture of experts: use W_in_expert(i, e) (experts have no bias)")

    def W_gate(self, i: int) -> Tensor:
        raise self.unsupported("the MLP is a mixture of experts: no single W_gate; use W_gate_expert(i, e)")

    def W_out(self, i: int) -> Tensor:
        raise self.unsupported("the MLP is a mixture of experts: no single W_out; use W_out_expert(i, e)")

    def b_out(self, i: int) -> Tensor | None:
        raise self.unsupported("the MLP is a mixture of experts: use W_out_expert(i, e) (experts have no bias)")

    @property
    def d_expert(self) -> int:
        """Width of one expert (Mixtral: the MLP width; MoE variants with a separate dense MLP override it)."""
        return self.d_mlp

    def W_gate_expert(self, i: int, e: int) -> Tensor:
        """``[d_model, d_expert]``: expert ``e``'s gate projection (a view)."""
        self._check(e)
        return self._experts(i).gate_up_proj[e, : self.d_expert].T

    def W_in_expert(self, i: int, e: int) -> Tensor:
        """``[d_model, d_expert]``: expert ``e``'s up projection (a view)."""
        self._check(e)
        return self._experts(i).gate_up_proj[e, self.d_expert:].T

    def W_out_expert(self, i: int, e: int) -> Tensor:
        """``[d_mlp, d_model]``: expert ``e``'s down projection (a view)."""
        self._check(e)
        return self._experts(i).down_proj[e].T

    def W_router(self, i: int) -> Tensor:
        """``[d_model, n_experts]``: router logits = mlp_in @ W_router(i) (a view)."""
        return self.get(f"{self.block_path(i)}.mlp.gate").weight.T

    def mlp_writers(self, i: int) -> list[tuple[str, Tensor, Tensor | None]]:
        return [(f"blocks.{i}.mlp.experts.{e}", self.W_out_expert(i, e), None) for e in range(self.n_experts)]
