"""BERT adapter: a post-LayerNorm encoder (``encoder.layer.{i}``, optionally under ``bert.``), nn.Linear weights.

Post-LN: ``resid_mid`` is the attention block's LayerNorm output and ``resid_post`` the layer's; ``attn_out`` and
``mlp_out`` are the dense projections before their residual add and LayerNorm, so what reaches the stream is
``LayerNorm(x + out)``, not ``x + out`` (orthogonalising ``residual_writers`` is exact only up to that LayerNorm).
"""
from __future__ import annotations

import torch

from actlab.models.adapter import Adapter, Tensor, register
from actlab.models.attention import POINT
from actlab.models.sites import SiteSpec


@register
class Bert(Adapter):
    """``[bert.]encoder.layer.{i}`` with ``attention.self.{query,key,value}``, ``attention.output.dense``,
    ``intermediate.dense`` and ``output.dense``; no unembedding when loaded as a bare encoder."""

    name = "bert"
    post_norm = True
    model_types = ("bert",)

    @property
    def prefix(self) -> str:
        return "" if self.has("encoder.layer") else "bert."

    def block_path(self, i: int) -> str:
        return f"{self.prefix}encoder.layer.{i}"

    @property
    def embed_module(self) -> torch.nn.Module:
        return self.get(f"{self.prefix}embeddings")

    @property
    def is_causal_lm(self) -> bool:
        return False

    def block_sites(self, i: int) -> dict[str, SiteSpec]:
        p = self.block_path(i)
        h = self.n_heads
        return {
            "resid_pre": SiteSpec("resid_pre", p, "in"),
            "attn.q": SiteSpec("attn.q", f"{p}.attention.self.query", heads=h),
            "attn.k": SiteSpec("attn.k", f"{p}.attention.self.key", heads=h),
            "attn.v": SiteSpec("attn.v", f"{p}.attention.self.value", heads=h),
            "attn.pattern": SiteSpec("attn.pattern", f"{p}.attention.self.{POINT}", pattern=True),
            "attn.z": SiteSpec("attn.z", f"{p}.attention.output.dense", "in", heads=h),
            "attn_out": SiteSpec("attn_out", f"{p}.attention.output.dense"),
            "resid_mid": SiteSpec("resid_mid", f"{p}.attention"),
            "mlp_in": SiteSpec("mlp_in", f"{p}.intermediate", "in"),
            "mlp_act": SiteSpec("mlp_act", f"{p}.output.dense", "in"),
            "mlp_out": SiteSpec("mlp_out", f"{p}.output.dense"),
            "resid_post": SiteSpec("resid_post", p),
        }

    def global_sites(self) -> dict[str, SiteSpec]:
        return {"embed": SiteSpec("embed", f"{self.prefix}embeddings")}

    # -- weights ---------------------------------------------------------------------------------------
    def _m(self, i: int, path: str) -> torch.nn.Linear:
        return self.get(f"{self.block_path(i)}.{path}")

    def W_Q(self, i: int) -> Tensor:
        return self._lin_heads_in(self._m(i, "attention.self.query").weight, self.n_heads)

    def W_K(self, i: int) -> Tensor:
        return self._lin_heads_in(self._m(i, "attention.self.key").weight, self.n_heads)

    def W_V(self, i: int) -> Tensor:
        return self._lin_heads_in(self._m(i, "attention.self.value").weight, self.n_heads)

    def b_Q(self, i: int) -> Tensor | None:
        return self._bias_heads(self._m(i, "attention.self.query").bias, self.n_heads)

    def b_K(self, i: int) -> Tensor | None:
        return self._bias_heads(self._m(i, "attention.self.key").bias, self.n_heads)

    def b_V(self, i: int) -> Tensor | None:
        return self._bias_heads(self._m(i, "attention.self.value").bias, self.n_heads)

    def W_O(self, i: int) -> Tensor:
        return self._lin_heads_out(self._m(i, "attention.output.dense").weight)

    def b_O(self, i: int) -> Tensor | None:
        return self._m(i, "attention.output.dense").bias

    def W_in(self, i: int) -> Tensor:
        return self._m(i, "intermediate.dense").weight.T

    def b_in(self, i: int) -> Tensor | None:
        return self._m(i, "intermediate.dense").bias

    def W_out(self, i: int) -> Tensor:
        return self._m(i, "output.dense").weight.T

    def b_out(self, i: int) -> Tensor | None:
        return self._m(i, "output.dense").bias

    @property
    def W_E(self) -> Tensor:
        return self.embed_module.word_embeddings.weight

    @property
    def W_pos(self) -> Tensor:
        return self.embed_module.position_embeddings.weight

    @property
    def W_U(self) -> Tensor:
        raise self.unsupported("a BERT encoder has no unembedding (masked-LM heads are not wrapped by this adapter)")

    def residual_writers(self) -> list[tuple[str, Tensor, Tensor | None]]:
        emb = self.embed_module
        out = [("embed", self.W_E, None), ("pos_embed", self.W_pos, None),
               ("token_type_embed", emb.token_type_embeddings.weight, None)]
        for i in range(self.n_layers):
            out.append((f"blocks.{i}.attn_out", self._m(i, "attention.output.dense").weight.T, self.b_O(i)))
            out.append((f"blocks.{i}.mlp_out", self.W_out(i), self.b_out(i)))
        return out
