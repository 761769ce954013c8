"""GPT-2 adapter: pre-LayerNorm, learned positions, Conv1D weights (``[in, out]``), fused ``c_attn = [q | k | v]``."""
from __future__ import annotations

import torch

from actlab.models.adapter import Adapter, FusedQKV, Tensor, register
from actlab.models.attention import POINT
from actlab.models.sites import SiteSpec


@register
class GPT2(FusedQKV, Adapter):
    """``transformer.h.{i}`` with ``attn.c_attn``/``attn.c_proj`` and ``mlp.c_fc``/``mlp.c_proj`` (Conv1D)."""

    name = "gpt2"
    model_types = ("gpt2",)
    conv1d = True

    def block_path(self, i: int) -> str:
        return f"transformer.h.{i}"

    @property
    def embed_module(self) -> torch.nn.Module:
        return self.get("transformer.wte")

    @property
    def final_norm(self) -> torch.nn.Module | None:
        return self.get("transformer.ln_f")

    @property
    def unembed(self) -> torch.nn.Module | None:
        return self.get("lm_head") if self.has("lm_head") else None

    # -- sites -----------------------------------------------------------------------------------------
    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        p = self.block_path(i)
        h = self.n_heads
        s = {
            "resid_pre": SiteSpec("resid_pre", p, "in"),
            "attn.pattern": SiteSpec("attn.pattern", f"{p}.attn.{POINT}", pattern=True),
            "attn.z": SiteSpec("attn.z", f"{p}.attn.c_proj", "in", heads=h),
            "attn_out": SiteSpec("attn_out", f"{p}.attn"),
            "resid_mid": SiteSpec("resid_mid", f"{p}.attn", plus_input_of=f"{p}.ln_1"),
            "mlp_in": SiteSpec("mlp_in", f"{p}.mlp", "in"),
            "mlp_act": SiteSpec("mlp_act", f"{p}.mlp.c_proj", "in"),
            "mlp_out": SiteSpec("mlp_out", f"{p}.mlp"),
            "resid_post": SiteSpec("resid_post", p),
        }
        if not getattr(self.config, "add_cross_attention", False):  # c_attn is [q | k | v] (views of its output)
            for j, kind in enumerate(("attn.q", "attn.k", "attn.v")):
                s[kind] = SiteSpec(kind, f"{p}.attn.c_attn", heads=h, split=(j, 3))
        return s

    def global_sites(self) -> dict[str, SiteSpec]:
        return {"embed": SiteSpec("embed", "transformer.wte"), "final_norm": SiteSpec("final_norm", "transformer.ln_f"),
                "logits": SiteSpec("logits", "lm_head")}

    # -- weights (Conv1D: y = x @ weight + bias, weight [in, out]) --------------------------------------
    def _c_attn(self, i: int) -> torch.nn.Module:
        return self.get(f"{self.block_path(i)}.attn.c_attn")

    def _qkv(self, i: int, j: int) -> Tensor:
        d = self.d_model
        w = self._c_attn(i).weight[:, j * d:(j + 1) * d]  # [d_model, heads*d_head]
        return w.view(d, self.n_heads, self.d_head).transpose(0, 1)

    def _qkv_bias(self, i: int, j: int) -> Tensor:
        d = self.d_model
        return self._c_attn(i).bias[j * d:(j + 1) * d].view(self.n_heads, self.d_head)

    def _o(self, i: int) -> torch.nn.Module:
        return self.get(f"{self.block_path(i)}.attn.c_proj")

    def W_O(self, i: int) -> Tensor:
        return self._o(i).weight.view(self.n_heads, self.d_head, self.d_model)

    def b_O(self, i: int) -> Tensor | None:
        return self._o(i).bias

    def W_in(self, i: int) -> Tensor:
        return self.get(f"{self.block_path(i)}.mlp.c_fc").weight

    def b_in(self, i: int) -> Tensor | None:
        return self.get(f"{self.block_path(i)}.mlp.c_fc").bias

    def W_out(self, i: int) -> Tensor:
        return self.get(f"{self.block_path(i)}.mlp.c_proj").weight

    def b_out(self, i: int) -> Tensor | None:
        return self.get(f"{self.block_path(i)}.mlp.c_proj").bias

    @property
    def W_pos(self) -> Tensor:
        return self.get("transformer.wpe").weight

    def residual_writers(self) -> list[tuple[str, Tensor, Tensor | None]]:
        out = [("embed", self.W_E, None), ("pos_embed", self.W_pos, None)]
        for i in range(self.n_layers):
            out.append((f"blocks.{i}.attn_out", self._o(i).weight, self.b_O(i)))
            out.append((f"blocks.{i}.mlp_out", self.W_out(i), self.b_out(i)))
        return out
