"""The architecture adapter base: every architecture question (module paths, head geometry, weights) in one place.

One subclass per architecture lives in ``models/arch_<name>.py`` and registers itself for its
``config.model_type`` values with ``@register``; ``adapter_for(module)`` imports every ``arch_*`` file once and picks
the adapter, falling back to ``Generic`` (wrapped modules, unknown HF models). Weight accessors return write-through
views of the parameters in TransformerLens orientation (``W_Q(i)``: ``[head, d_model, d_head]``), so an in-place edit
of a view (under ``torch.no_grad()``) edits the model. What an architecture cannot answer raises ``Unsupported``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models.sites import SiteSpec

Tensor = torch.Tensor


class Unsupported(ValueError):
    """An architecture cannot answer a question (a weight it does not have, a site that does not exist in it)."""

    def __init__(self, arch: str, reason: str):
        self.arch = arch
        self.reason = reason
        super().__init__(f"{arch}: {reason}")


REGISTRY: dict[str, type["Adapter"]] = {}
_loaded = False


def register(cls: type["Adapter"]) -> type["Adapter"]:
    """Class decorator: make ``cls`` the adapter of each of its ``model_types``."""
    for mt in cls.model_types:
        REGISTRY[mt] = cls
    return cls


def _load_arch_files() -> None:
    """Import every ``actlab.models.arch_*`` module once (each registers its adapter)."""
    global _loaded
    if _loaded:
        return
    import actlab.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("arch_"):
            importlib.import_module(f"actlab.models.{info.name}")
    _loaded = True


def adapter_for(module: torch.nn.Module) -> "Adapter":
    """The adapter for a model: by ``config.model_type``, else ``Generic``."""
    _load_arch_files()
    mt = getattr(getattr(module, "config", None), "model_type", None)
    return REGISTRY.get(mt, Generic)(module)


def _cfg(cfg, *keys, default=None):
    for k in keys:
        v = getattr(cfg, k, None)
        if v is not None:
            return v
    return default


class Adapter:
    """Architecture facts of one loaded model. Subclasses set ``name``/``model_types`` and override what they know."""

    name = "generic"
    model_types: tuple[str, ...] = ()
    conv1d = False  # weights stored [in, out] (GPT-2's Conv1D) instead of nn.Linear's [out, in]
    post_norm = False  # blocks write LayerNorm(x + out) (BERT) instead of x + out (pre-norm stacks)

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.config = getattr(module, "config", None)
        self._mods: dict[str, torch.nn.Module] | None = None

    # -- lookups ---------------------------------------------------------------------------------------
    def unsupported(self, reason: str) -> Unsupported:
        return Unsupported(self.name, reason)

    def get(self, path: str) -> torch.nn.Module:
        """The submodule at ``path``; Unsupported naming the path if this model lacks it."""
        if self._mods is None:
            self._mods = dict(self.module.named_modules())
        mod = self._mods.get(path)
        if mod is None:
            raise self.unsupported(f"this {type(self.module).__name__} has no module {path!r}")
        return mod

    def has(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except Unsupported:
            return False

    # -- geometry --------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        v = _cfg(self.config, "num_hidden_layers", "n_layer", "num_layers")
        if v is None:
            raise self.unsupported(f"cannot find the layer count in {type(self.config).__name__}")
        return int(v)

    @property
    def d_model(self) -> int:
        return int(_cfg(self.config, "hidden_size", "n_embd", "d_model"))

    @property
    def n_heads(self) -> int:
        return int(_cfg(self.config, "num_attention_heads", "n_head"))

    @property
    def n_kv_heads(self) -> int:
        return int(_cfg(self.config, "num_key_value_heads", default=self.n_heads))

    @property
    def d_head(self) -> int:
        return int(_cfg(self.config, "head_dim", default=self.d_model // self.n_heads))

    @property
    def d_mlp(self) -> int:
        return int(_cfg(self.config, "intermediate_size", "n_inner", default=4 * self.d_model))

    @property
    def is_causal_lm(self) -> bool:
        return self.unembed is not None and hasattr(self.module, "generate")

    @property
    def experts_per_token(self) -> int:
        """How many experts each token is routed to (mixture-of-experts MLPs); Unsupported for dense MLPs."""
        k = _cfg(self.config, "num_experts_per_tok", "moe_topk")
        if not k:
            raise self.unsupported("dense MLP: no mixture-of-experts router (no num_experts_per_tok in the config)")
        return int(k)

    # -- modules ---------------------------------------------------------------------------------------
    def block_path(self, i: int) -> str:
        raise self.unsupported("no transformer blocks known")

    def block(self, i: int) -> torch.nn.Module:
        if not 0 <= i < self.n_layers:
            raise IndexError(f"{self.name}: block {i} out of range (the model has {self.n_layers} blocks)")
        return self.get(self.block_path(i))

    @property
    def embed_module(self) -> torch.nn.Module:
        raise self.unsupported("no token embedding known")

    @property
    def final_norm(self) -> torch.nn.Module | None:
        return None

    @property
    def unembed(self) -> torch.nn.Module | None:
        return None

    # -- sites (the site table is built from these) ----------------------------------------------------
    def block_sites(self, i: int) -> dict[str, "SiteSpec"]:
        """``{kind: SiteSpec}`` for block ``i`` (kinds as in ``sites.SITE_KINDS``)."""
        return {}

    def global_sites(self) -> dict[str, "SiteSpec"]:
        """``embed``, ``final_norm``, ``logits`` where the architecture has them."""
        return {}

    def missing_sites(self) -> dict[str, str]:
        """``{kind: reason}`` for canonical kinds this architecture does not have (quoted in unknown-site errors)."""
        return {}

    # -- weights (TransformerLens orientation, write-through views) -------------------------------------
    def W_Q(self, i: int) -> Tensor:
        """``[heads, d_model, d_head]``."""
        raise self.unsupported("W_Q is not known for this architecture")

    def W_K(self, i: int) -> Tensor:
        """``[kv_heads, d_model, d_head]`` (key-value heads under grouped-query attention)."""
        raise self.unsupported("W_K is not known for this architecture")

    def W_V(self, i: int) -> Tensor:
        """``[kv_heads, d_model, d_head]``."""
        raise self.unsupported("W_V is not known for this architecture")

    def b_Q(self, i: int) -> Tensor | None:
        """``[heads, d_head]`` or None (no bias)."""
        raise self.unsupported("b_Q is not known for this architecture")

    def b_K(self, i: int) -> Tensor | None:
        raise self.unsupported("b_K is not known for this architecture")

    def b_V(self, i: int) -> Tensor | None:
        raise self.unsupported("b_V is not known for this architecture")

    def W_O(self, i: int) -> Tensor:
        """``[heads, d_head, d_model]``."""
        raise self.unsupported("W_O is not known for this architecture")

    def b_O(self, i: int) -> Tensor | None:
        """``[d_model]`` or None (no bias)."""
        raise self.unsupported("b_O is not known for this architecture")

    def W_in(self, i: int) -> Tensor:
        """``[d_model, d_mlp]`` (the up projection of a gated MLP; the gate is ``W_gate``)."""
        raise self.unsupported("W_in is not known for this architecture")

    def b_in(self, i: int) -> Tensor | None:
        raise self.unsupported("b_in is not known for this architecture")

    def W_gate(self, i: int) -> Tensor:
        """``[d_model, d_mlp]``, gated MLPs only."""
        raise self.unsupported("this architecture's MLP has no gate projection")

    def W_out(self, i: int) -> Tensor:
        """``[d_mlp, d_model]``."""
        raise self.unsupported("W_out is not known for this architecture")

    def b_out(self, i: int) -> Tensor | None:
        """``[d_model]`` or None."""
        raise self.unsupported("b_out is not known for this architecture")

    @property
    def W_E(self) -> Tensor:
        """``[vocab, d_model]`` (the token embedding's weight)."""
        return self.embed_module.weight

    @property
    def W_pos(self) -> Tensor:
        """``[positions, d_model]``, learned absolute positions only."""
        raise self.unsupported("no learned position embedding (positions are rotary or absent)")

    @property
    def W_U(self) -> Tensor:
        """``[d_model, vocab]`` (the transposed weight of ``unembed``, an nn.Linear)."""
        if self.unembed is None:
            raise self.unsupported("no unembedding (the model was loaded without a language-model head)")
        return self.unembed.weight.T

    @property
    def b_U(self) -> Tensor | None:
        u = self.unembed
        return None if u is None else getattr(u, "bias", None)

    def residual_writers(self) -> list[tuple[str, Tensor, Tensor | None]]:
        """Every ``(label, weight view with d_model last, bias or None)`` that writes into the residual stream."""
        raise self.unsupported("the residual-stream writers are not known for this architecture")

    # -- shared helpers for Linear layouts -------------------------------------------------------------
    def _lin_heads_in(self, weight: Tensor, heads: int) -> Tensor:
        """nn.Linear ``[heads*d_head, d_model]`` -> ``[heads, d_model, d_head]`` (a view)."""
        return weight.view(heads, -1, weight.shape[-1]).transpose(1, 2)

    def _lin_heads_out(self, weight: Tensor) -> Tensor:
        """nn.Linear ``[d_model, heads*d_head]`` -> ``[heads, d_head, d_model]`` (a view)."""
        return weight.view(weight.shape[0], self.n_heads, -1).permute(1, 2, 0)

    @staticmethod
    def _bias_heads(bias: Tensor | None, heads: int) -> Tensor | None:
        return None if bias is None else bias.view(heads, -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class FusedQKV:
    """Mixin for one fused q/k/v projection: subclasses give ``_qkv(i, j)`` and ``_qkv_bias(i, j)`` (j: 0 q, 1 k, 2 v)."""

    def W_Q(self, i: int) -> Tensor:
        return self._qkv(i, 0)

    def W_K(self, i: int) -> Tensor:
        return self._qkv(i, 1)

    def W_V(self, i: int) -> Tensor:
        return self._qkv(i, 2)

    def b_Q(self, i: int) -> Tensor | None:
        return self._qkv_bias(i, 0)

    def b_K(self, i: int) -> Tensor | None:
        return self._qkv_bias(i, 1)

    def b_V(self, i: int) -> Tensor | None:
        return self._qkv_bias(i, 2)


class Generic(Adapter):
    """Any other module (a CNN, an unknown HF model): no canonical sites, only ``module:<path>`` ones."""

    name = "generic"

    @property
    def n_layers(self) -> int:
        return 0

    @property
    def d_model(self) -> int | None:  # type: ignore[override]
        """The config's hidden size where there is one, else None (wrapped modules)."""
        v = _cfg(self.config, "hidden_size", "n_embd")
        return None if v is None else int(v)

    @property
    def n_heads(self) -> int:
        raise self.unsupported("head geometry is not known for a generic (wrapped or unregistered) model")

    @property
    def d_mlp(self) -> int:
        raise self.unsupported("the MLP width is not known for a generic (wrapped or unregistered) model")

    @property
    def is_causal_lm(self) -> bool:
        return False
