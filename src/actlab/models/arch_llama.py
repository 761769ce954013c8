"""Llama family adapter (Llama, Mistral, Qwen2/3, SmolLM, OLMo2, Gemma): pre-RMSNorm, rotary, gated MLP, GQA."""
from __future__ import annotations

import torch

from actlab.models.adapter import Adapter, Tensor, register
from actlab.models.attention import POINT
from actlab.models.sites import SiteSpec


@register
class Llama(Adapter):
    """``model.layers.{i}`` with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (all nn.Linear)."""

    name = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo2", "gemma", "gemma2", "phi3")

    def block_path(self, i: int) -> str:
        return f"model.layers.{i}"

    @property
    def embed_module(self) -> torch.nn.Module:
        return self.get("model.embed_tokens")

    @property
    def final_norm(self) -> torch.nn.Module | None:
        return self.get("model.norm") if self.has("model.norm") else None

    @property
    def unembed(self) -> torch.nn.Module | None:
        return self.get("lm_head") if self.has("lm_head") else None

    # -- sites -----------------------------------------------------------------------------------------
    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        p = self.block_path(i)
        return {
            "resid_pre": SiteSpec("resid_pre", p, "in"),
            "attn.q": SiteSpec("attn.q", f"{p}.self_attn.q_proj", heads=self.n_heads),  # before rotary
            "attn.k": SiteSpec("attn.k", f"{p}.self_attn.k_proj", heads=self.n_kv_heads),
            "attn.v": SiteSpec("attn.v", f"{p}.self_attn.v_proj", heads=self.n_kv_heads),
            "attn.pattern": SiteSpec("attn.pattern", f"{p}.self_attn.{POINT}", pattern=True),
            "attn.z": SiteSpec("attn.z", f"{p}.self_attn.o_proj", "in", heads=self.n_heads),
            "attn_out": SiteSpec("attn_out", f"{p}.self_attn"),
            "resid_mid": SiteSpec("resid_mid", f"{p}.self_attn", plus_input_of=f"{p}.input_layernorm"),
            "mlp_in": SiteSpec("mlp_in", f"{p}.mlp", "in"),
            "mlp_act": SiteSpec("mlp_act", f"{p}.mlp.down_proj", "in"),
            "mlp_out": SiteSpec("mlp_out", f"{p}.mlp"),
            "resid_post": SiteSpec("resid_post", p),
        }

    def global_sites(self) -> dict[str, SiteSpec]:
        return {"embed": SiteSpec("embed", "model.embed_tokens"), "final_norm": SiteSpec("final_norm", "model.norm"),
                "logits": SiteSpec("logits", "lm_head")}

    # -- weights ---------------------------------------------------------------------------------------
    def _attn(self, i: int, proj: str) -> torch.nn.Linear:
        path = f"{self.block_path(i)}.self_attn.{proj}"
        if not self.has(path):
            raise self.unsupported(f"block {i} has no {proj} (a fused projection such as phi3's qkv_proj is not "
                                   f"split by this adapter)")
        return self.get(path)

    def _mlp(self, i: int, proj: str) -> torch.nn.Linear:
        path = f"{self.block_path(i)}.mlp.{proj}"
        if not self.has(path):
            raise self.unsupported(f"block {i} has no mlp.{proj} (a fused gate_up_proj is not split by this adapter)")
        return self.get(path)

    def W_Q(self, i: int) -> Tensor:
        return self._lin_heads_in(self._attn(i, "q_proj").weight, self.n_heads)

    def W_K(self, i: int) -> Tensor:
        return self._lin_heads_in(self._attn(i, "k_proj").weight, self.n_kv_heads)

    def W_V(self, i: int) -> Tensor:
        return self._lin_heads_in(self._attn(i, "v_proj").weight, self.n_kv_heads)

    def b_Q(self, i: int) -> Tensor | None:
        return self._bias_heads(self._attn(i, "q_proj").bias, self.n_heads)

    def b_K(self, i: int) -> Tensor | None:
        return self._bias_heads(self._attn(i, "k_proj").bias, self.n_kv_heads)

    def b_V(self, i: int) -> Tensor | None:
        return self._bias_heads(self._attn(i, "v_proj").bias, self.n_kv_heads)

    def W_O(self, i: int) -> Tensor:
        return self._lin_heads_out(self._attn(i, "o_proj").weight)

    def b_O(self, i: int) -> Tensor | None:
        return self._attn(i, "o_proj").bias

    def W_in(self, i: int) -> Tensor:
        return self._mlp(i, "up_proj").weight.T

    def b_in(self, i: int) -> Tensor | None:
        return self._mlp(i, "up_proj").bias

    def W_gate(self, i: int) -> Tensor:
        return self._mlp(i, "gate_proj").weight.T

    def W_out(self, i: int) -> Tensor:
        return self._mlp(i, "down_proj").weight.T

    def b_out(self, i: int) -> Tensor | None:
        return self._mlp(i, "down_proj").bias

    def mlp_writers(self, i: int) -> list[tuple[str, Tensor, Tensor | None]]:
        return [(f"blocks.{i}.mlp_out", self.W_out(i), self.b_out(i))]

    def residual_writers(self) -> list[tuple[str, Tensor, Tensor | None]]:
        out = [("embed", self.W_E, None)]
        for i in range(self.n_layers):
            o = self._attn(i, "o_proj")
            out.append((f"blocks.{i}.attn_out", o.weight.T, o.bias))
            out.extend(self.mlp_writers(i))
        return out
