"""GPT-NeoX / Pythia adapter: pre-LayerNorm, rotary, nn.Linear weights, fused per-head ``query_key_value``.

``attention.query_key_value`` packs q, k, v per head: its output is ``[..., head, 3, d_head]`` (not ``[q | k | v]``
as GPT-2's ``c_attn``), so ``attn.q/k/v`` are interleaved split views of it. Pythia uses the parallel residual
(``x + attn(ln1(x)) + mlp(ln2(x))``): there is no residual stream between attention and MLP, so ``resid_mid``
exists only for models with ``use_parallel_residual=False``.
"""
from __future__ import annotations

import torch

from actlab.models.adapter import Adapter, FusedQKV, Tensor, register
from actlab.models.attention import POINT
from actlab.models.sites import SiteSpec

PARALLEL = ("this model uses GPT-NeoX's parallel residual (x + attn(ln1(x)) + mlp(ln2(x))): attention and MLP both "
            "read resid_pre and the block adds both at once, so no residual stream exists between them; use "
            "blocks.{i}.resid_pre (what the MLP reads, before its norm) or blocks.{i}.attn_out")


@register
class GPTNeoX(FusedQKV, Adapter):
    """``gpt_neox.layers.{i}`` with ``attention.{query_key_value,dense}`` and ``mlp.{dense_h_to_4h,dense_4h_to_h}``."""

    name = "gpt_neox"
    model_types = ("gpt_neox",)

    @property
    def parallel(self) -> bool:
        return bool(getattr(self.config, "use_parallel_residual", True))

    def block_path(self, i: int) -> str:
        return f"gpt_neox.layers.{i}"

    @property
    def embed_module(self) -> torch.nn.Module:
        return self.get("gpt_neox.embed_in")

    @property
    def final_norm(self) -> torch.nn.Module | None:
        return self.get("gpt_neox.final_layer_norm")

    @property
    def unembed_path(self) -> str:
        """``lm_head`` (transformers >= 5) or ``embed_out`` (older checkpoints' module name)."""
        return "embed_out" if self.has("embed_out") else "lm_head"

    @property
    def unembed(self) -> torch.nn.Module | None:
        return self.get(self.unembed_path) if self.has(self.unembed_path) else None

    # -- sites -----------------------------------------------------------------------------------------
    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        p = self.block_path(i)
        h = self.n_heads
        s = {
            "resid_pre": SiteSpec("resid_pre", p, "in"),
            "attn.pattern": SiteSpec("attn.pattern", f"{p}.attention.{POINT}", pattern=True),
            "attn.z": SiteSpec("attn.z", f"{p}.attention.dense", "in", heads=h),
            "attn_out": SiteSpec("attn_out", f"{p}.attention"),
            "mlp_in": SiteSpec("mlp_in", f"{p}.mlp", "in"),
            "mlp_act": SiteSpec("mlp_act", f"{p}.mlp.dense_4h_to_h", "in"),
            "mlp_out": SiteSpec("mlp_out", f"{p}.mlp"),
            "resid_post": SiteSpec("resid_post", p),
        }
        for j, kind in enumerate(("attn.q", "attn.k", "attn.v")):  # before rotary, as for Llama
            s[kind] = SiteSpec(kind, f"{p}.attention.query_key_value", heads=h, split=(j, 3), split_inner=True)
        if not self.parallel:  # attn_out + resid_pre, the stream the MLP's norm reads; an edit reaches the stream
            s["resid_mid"] = SiteSpec("resid_mid", f"{p}.attention", plus_input_of=f"{p}.input_layernorm")
        return s

    def global_sites(self) -> dict[str, SiteSpec]:
        return {"embed": SiteSpec("embed", "gpt_neox.embed_in"),
                "final_norm": SiteSpec("final_norm", "gpt_neox.final_layer_norm"),
                "logits": SiteSpec("logits", self.unembed_path)}

    def missing_sites(self) -> dict[str, str]:
        return {"resid_mid": PARALLEL} if self.parallel else {}

    # -- weights ---------------------------------------------------------------------------------------
    def _m(self, i: int, path: str) -> torch.nn.Linear:
        return self.get(f"{self.block_path(i)}.{path}")

    def _qkv(self, i: int, j: int) -> Tensor:
        w = self._m(i, "attention.query_key_value").weight  # [heads*3*d_head, d_model], rows [head, 3, d_head]
        return w.view(self.n_heads, 3, self.d_head, self.d_model)[:, j].transpose(1, 2)

    def _qkv_bias(self, i: int, j: int) -> Tensor | None:
        b = self._m(i, "attention.query_key_value").bias
        return None if b is None else b.view(self.n_heads, 3, self.d_head)[:, j]

    def W_O(self, i: int) -> Tensor:
        return self._lin_heads_out(self._m(i, "attention.dense").weight)

    def b_O(self, i: int) -> Tensor | None:
        return self._m(i, "attention.dense").bias

    def W_in(self, i: int) -> Tensor:
        return self._m(i, "mlp.dense_h_to_4h").weight.T

    def b_in(self, i: int) -> Tensor | None:
        return self._m(i, "mlp.dense_h_to_4h").bias

    def W_out(self, i: int) -> Tensor:
        return self._m(i, "mlp.dense_4h_to_h").weight.T

    def b_out(self, i: int) -> Tensor | None:
        return self._m(i, "mlp.dense_4h_to_h").bias

    def residual_writers(self) -> list[tuple[str, Tensor, Tensor | None]]:
        out = [("embed", self.W_E, None)]
        for i in range(self.n_layers):
            out.append((f"blocks.{i}.attn_out", self._m(i, "attention.dense").weight.T, self.b_O(i)))
            out.append((f"blocks.{i}.mlp_out", self.W_out(i), self.b_out(i)))
        return out
