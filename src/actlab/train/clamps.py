"""Clamps for training-time interventions (arXiv 2404.07129): constructed ideal attention patterns and lesions.

Each is an ordinary actlab ``Intervention``: use it in ``model.intervene({...}, grad=..., schedule=...)`` inside a
training loop. Pattern clamps act on a ``[batch, head, query, key]`` probability tensor and are then used with the
model's own values (only the pattern is clamped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from actlab.core.interventions import Intervention


def previous_token_pattern(q: int, k: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[q, k]`` one-hot rows: query t attends to t-1 (the first query attends to itself)."""
    out = torch.zeros(q, k, device=device, dtype=dtype)
    t = torch.arange(q, device=device)
    out[t, (t - 1).clamp(min=0) + (k - q)] = 1.0
    return out


def _heads(heads, n: int, owner: str) -> list[int]:
    hs = list(range(n)) if heads is None else ([heads] if isinstance(heads, int) else list(heads))
    bad = [h for h in hs if not 0 <= h < n]
    if bad:
        raise IndexError(f"{owner}.heads {bad} out of range: the pattern has {n} heads")
    return hs


@dataclass
class PrevTokenPattern(Intervention):
    """Clamp the attention pattern of ``heads`` (default all) to the exact previous-token pattern."""

    heads: int | list[int] | None = None

    def edit(self, act, ctx):
        if act.dim() != 4:
            raise ValueError(f"PrevTokenPattern needs an attention pattern [batch, head, query, key] at {ctx.site!r}; "
                             f"got shape {list(act.shape)}")
        ideal = previous_token_pattern(act.shape[2], act.shape[3], device=act.device, dtype=act.dtype)
        hs = _heads(self.heads, act.shape[1], "PrevTokenPattern")
        if len(hs) == act.shape[1]:
            return ideal.expand_as(act)
        keep = torch.zeros(act.shape[1], dtype=torch.bool, device=act.device)
        keep[hs] = True
        return torch.where(keep[None, :, None, None], ideal, act)


@dataclass
class ZeroClamp(Intervention):
    """Lesion: the activation is zero throughout training."""

    def edit(self, act, ctx):
        return torch.zeros_like(act)


@dataclass
class MeanClamp(Intervention):
    """Ablation through training: every entry replaced by its mean over the batch (and positions for sequences)."""

    def edit(self, act, ctx):
        dims = (0, 1) if act.dim() >= 3 else (0,)
        return act.mean(dims, keepdim=True).expand_as(act)


@dataclass
class ReferenceClamp(Intervention):
    """Clamp to the value a reference model (e.g. the fully trained one) produces at the same site on the same input.

    Call ``prepare(inputs)`` before each training forward: the reference runs once on ``inputs`` (no gradients;
    a second forward per step, so about 2x the cost) and records ``site`` (default: the clamped site, which must then
    be named by ``sites``). ``edit`` returns the recorded value, so nothing of the reference is trained."""

    reference: Any = None
    sites: tuple[str, ...] = ()
    site: str | None = None

    def __post_init__(self):
        if self.reference is None or not (self.sites or self.site):
            raise ValueError("ReferenceClamp needs reference= (a Model) and the sites it clamps (sites=) or the one "
                             "reference site to read (site=)")
        self._cache: dict[str, torch.Tensor] | None = None

    def prepare(self, inputs, **kw) -> None:
        """Run the reference on this step's inputs and keep its activations at the clamp's site(s)."""
        names = [self.site] if self.site else list(self.sites)
        with torch.no_grad():
            self._cache = {k: v.detach() for k, v in self.reference.record(inputs, sites=names, **kw).items()}

    def edit(self, act, ctx):
        if self._cache is None:
            raise RuntimeError("ReferenceClamp.prepare(inputs) must run before each forward (no reference "
                               "activations recorded yet)")
        key = self.site or ctx.site
        if key not in self._cache:
            raise KeyError(f"ReferenceClamp holds reference activations for {sorted(self._cache)}, not {key!r}")
        ref = self._cache[key]
        if tuple(ref.shape) != tuple(act.shape):
            raise ValueError(f"ReferenceClamp: the reference's {key!r} has shape {list(ref.shape)}; the clamped "
                             f"activation {list(act.shape)} (prepare() with this step's inputs)")
        return ref.to(device=act.device, dtype=act.dtype)

    def params(self):
        return {"sites": list(self.sites), "site": self.site, "reference": getattr(self.reference, "name", None)}, {}


@dataclass
class SubspaceClamp(Intervention):
    """Clamp only a subspace of the last dimension: ``act - P act + P value`` with ``P`` the orthogonal projector
    onto the span of ``basis`` ``[d, k]`` (orthonormalised here); ``value`` ``[d]`` (or broadcastable to the
    activation) defaults to zero, i.e. the subspace is lesioned and its orthogonal complement left untouched."""

    basis: torch.Tensor = None
    value: torch.Tensor | None = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.basis, torch.Tensor) or self.basis.dim() != 2 or self.basis.shape[1] > self.basis.shape[0]:
            raise ValueError(f"SubspaceClamp.basis must be a [d, k] tensor with k <= d; got "
                             f"{getattr(self.basis, 'shape', type(self.basis).__name__)}")
        q, r = torch.linalg.qr(self.basis.double())
        if bool((r.diagonal().abs() < 1e-8 * r.diagonal().abs().max().clamp_min(1e-30)).any()):
            raise ValueError("SubspaceClamp.basis columns are linearly dependent")
        self._q = q

    def edit(self, act, ctx):
        if act.shape[-1] != self._q.shape[0]:
            raise ValueError(f"SubspaceClamp basis has d={self._q.shape[0]}; the activation at {ctx.site!r} has "
                             f"last dimension {act.shape[-1]}")
        q = self._q.to(device=act.device, dtype=act.dtype)
        out = act - (act @ q) @ q.T
        if self.value is not None:
            out = out + (self.value.to(device=act.device, dtype=act.dtype) @ q) @ q.T
        return out
