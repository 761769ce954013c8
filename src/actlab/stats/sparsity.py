"""Activation sparsity of MLP hidden units ("lazy neurons"), a per-token Top-k intervention, FLOP savings.

Active unit: ``a > 0`` for ReLU-family MLPs (exact zeros); ``|a| > eps`` otherwise (GELU/SiLU rarely give exact
zeros; ``DEFAULT_EPS`` = 1e-2 is documented in docs/stats.md). Counted per token, then averaged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from actlab.core.interventions import Intervention, register_op

if TYPE_CHECKING:
    from actlab.models import Model

DEFAULT_EPS = 1e-2
RELU_ACTS = ("relu", "relu2", "relu6", "squared_relu")


def active_fraction(a: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Per-token fraction of active units of ``a`` ``[..., d_ff]``: ``a > 0`` when ``eps`` is None, else
    ``|a| > eps``. Returns ``[...]``."""
    act = (a > 0) if eps is None else (a.abs() > eps)
    return act.float().mean(-1)


def mlp_threshold(model: Model) -> float | None:
    """None (count ``> 0``) for ReLU MLPs, ``DEFAULT_EPS`` for smooth activations (read from the config)."""
    cfg = model.config
    act = str(getattr(cfg, "hidden_act", None) or getattr(cfg, "activation_function", "") or "").lower()
    return None if act in RELU_ACTS else DEFAULT_EPS


def is_gated(model: Model) -> bool:
    """True for gated MLPs (SwiGLU: gate, up, down = three matmuls), as the architecture adapter says: it has a
    gate projection, per block or per expert."""
    from actlab.models import Unsupported

    a = model.adapter
    for probe in (lambda: a.W_gate(0), lambda: a.W_gate_expert(0, 0)):
        try:
            probe()
            return True
        except (Unsupported, AttributeError, IndexError):
            continue
    return False


@dataclass
class SparsityStats:
    """Streaming per-layer sparsity: sum and sum of squares of the per-token active fraction, plus per-unit
    firing counts (dead / always-on units)."""

    d_ff: int
    eps: float | None = None
    n_tokens: int = 0
    s1: float = 0.0
    s2: float = 0.0
    unit_counts: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.unit_counts = torch.zeros(self.d_ff, dtype=torch.long)

    def update(self, a: torch.Tensor) -> None:
        """Consume ``[..., d_ff]`` MLP hidden activations."""
        a = a.detach().reshape(-1, a.shape[-1]).float()
        act = ((a > 0) if self.eps is None else (a.abs() > self.eps)).float()
        frac = act @ torch.full((a.shape[1], 1), 1.0 / a.shape[1], device=a.device)       # [n, 1] (BLAS, not a reduction kernel)
        self.s1 += float(frac.sum())
        self.s2 += float((frac * frac).sum())
        self.unit_counts += (torch.ones(1, a.shape[0], device=a.device) @ act)[0].round().long().cpu()
        self.n_tokens += a.shape[0]

    @property
    def mean(self) -> float:
        return self.s1 / max(self.n_tokens, 1)

    def summary(self) -> dict:
        n = max(self.n_tokens, 1)
        var = max(self.s2 / n - self.mean ** 2, 0.0)
        rate = self.unit_counts.double() / n
        return {"active_frac_mean": self.mean, "active_frac_std": var ** 0.5, "n_tokens": self.n_tokens,
                "eps": self.eps, "dead_units": int((rate == 0).sum()), "always_on_units": int((rate == 1).sum())}


def flop_savings(active_frac: float, gated: bool) -> dict:
    """Estimated FLOP savings if inactive units are skipped in the second (down) matmul: ``1 - active`` of that
    matmul, and the share of all MLP matmul FLOPs (1/3 of them for a gated MLP, 1/2 otherwise)."""
    down = 1.0 - active_frac
    return {"down_proj": down, "mlp_total": down / (3.0 if gated else 2.0)}


@register_op
@dataclass
class TopK(Intervention):
    """Keep the ``k`` largest entries per token (by value, or by ``|value|`` with ``by='abs'``) and zero the rest.

    Ties go to the lower index (stable sort), so exactly ``k`` entries survive; the gradient flows only through
    the kept entries. Apply at ``blocks.{i}.mlp_act`` to enforce sparser MLP activations.
    """

    op: ClassVar[str] = "topk"
    k: int = 32
    by: str = "value"

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"TopK.k must be >= 1; got {self.k}")
        if self.by not in ("value", "abs"):
            raise ValueError(f"TopK.by must be 'value' or 'abs'; got {self.by!r}")

    def edit(self, act, ctx):
        if self.k > act.shape[-1]:
            raise ValueError(f"TopK.k={self.k} exceeds the width {act.shape[-1]} of site {ctx.site!r}")
        return topk_mask(act, self.k, self.by) * act


def topk_mask(a: torch.Tensor, k: int, by: str = "value") -> torch.Tensor:
    """0/1 mask (dtype of ``a``) of the ``k`` largest entries per row, ties to the lower index."""
    key = a.detach().abs() if by == "abs" else a.detach()
    idx = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(a).scatter_(-1, idx, 1.0)
