"""Interventions: small composable edits of a site's activation, ``__call__(act, ctx) -> act``.

Each applies only at its selected positions (``all``, ``last``, int, slice, list, bool mask) and never touches
weights. Every built-in op serializes to JSON + safetensors (see ``serialize.py``) so an edit can be replayed.
Families add ops with ``@register_op``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from actlab.artifact import check_finite
from actlab.core.hooks import Ctx
from actlab.core.positions import Positions, select_mask, selects_all

OPS: dict[str, type["Intervention"]] = {}


def register_op(cls):
    """Class decorator: make an Intervention subclass serializable under its ``op`` name."""
    OPS[cls.op] = cls
    return cls


def check_tensor(owner: str, t: torch.Tensor, act: torch.Tensor, ctx: Ctx, *, full: bool = False) -> torch.Tensor:
    """Validate a parameter tensor against the activation it edits; cast it to the activation's dtype/device.

    ``full=False``: ``t`` must broadcast over the per-token dims (``act.shape[2:]`` for sequences).
    ``full=True``: ``t`` may also cover the whole activation.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{owner} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{owner} has dtype {t.dtype}; expected a floating dtype (the activation at "
                        f"{ctx.site!r} is {act.dtype})")
    feat = tuple(act.shape[2:]) if ctx.sequence else tuple(act.shape[1:])   # no position work per call
    ok = tuple(t.shape) == feat or (t.dim() <= len(feat) and _broadcasts(t.shape, feat))
    if full and not ok:
        ok = _broadcasts(t.shape, tuple(act.shape))
    if not ok:
        raise ValueError(f"{owner} has shape {tuple(t.shape)}; expected {feat} (the per-token shape of site "
                         f"{ctx.site!r}, activation shape {list(act.shape)})" + (" or the full shape" if full else ""))
    if t.dtype != act.dtype or t.device != act.device:
        t = t.to(device=act.device, dtype=act.dtype)
    return t


def row_alpha(owner: str, alpha, act: torch.Tensor, ctx: Ctx):
    """A strength as a float, or a ``[B]`` tensor of per-batch-row strengths shaped to broadcast over ``act``
    (so one batched call can run several strengths side by side, as steering sweeps do)."""
    if not isinstance(alpha, torch.Tensor):
        return alpha
    if alpha.dim() != 1 or alpha.shape[0] != act.shape[0]:
        raise ValueError(f"{owner} has shape {tuple(alpha.shape)}; expected a float or [{act.shape[0]}] (one "
                         f"strength per batch row of site {ctx.site!r}, activation shape {list(act.shape)})")
    return alpha.to(device=act.device, dtype=act.dtype).view(-1, *([1] * (act.dim() - 1)))


def is_zero(alpha) -> bool:
    """True for a scalar strength of 0 (a per-row tensor is never skipped)."""
    return not isinstance(alpha, torch.Tensor) and alpha == 0


def require_finite(what: str, x) -> None:
    """Refuse NaN/Inf in a vector, direction or strength (a NaN steering vector silently empties generations and a
    NaN ablation writes NaN weights). ``what`` names the thing and where it came from."""
    if isinstance(x, torch.Tensor):
        check_finite(what, x)  # "<what> contains NaN/Inf (k of n values)", the message artifacts give on load
    elif isinstance(x, (int, float)) and not math.isfinite(x):
        raise ValueError(f"{what} is {x}; expected a finite number")


GRAD_MODES = ("through", "block")


def check_grad_mode(grad: str) -> None:
    """Refuse a gradient mode other than ``"through"`` or ``"block"``."""
    if grad not in GRAD_MODES:
        raise ValueError(f"grad={grad!r}; expected one of {GRAD_MODES} ('through': gradients flow through the edited "
                         f"activation, 'block': they stop at it)")


def _broadcasts(a: tuple, b: tuple) -> bool:
    if len(a) > len(b):
        return False
    return all(x == 1 or x == y for x, y in zip(reversed(a), reversed(b)))


@dataclass
class Intervention:
    """Base class: subclasses implement ``edit(act, ctx)`` on the whole tensor; ``positions`` restricts it."""

    op: ClassVar[str] = "custom"
    positions: Positions = field(default="all", kw_only=True)

    def __post_init__(self):
        for f in fields(self):  # every tensor and number parameter must be finite (subclasses may check more)
            require_finite(f"{type(self).__name__}.{f.name}", getattr(self, f.name))

    def edit(self, act: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, act: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        return self.apply(act, ctx)

    def apply(self, act: torch.Tensor, ctx: Ctx, grad: str = "through") -> torch.Tensor:
        """The edited activation at the selected positions. ``grad="block"``: the edit sees ``act`` detached, so
        nothing upstream of the site gets a gradient through the edited positions (the edit's own tensors still do);
        ``"through"``: gradients flow through the edit as autograd defines it."""
        return self._apply(act, ctx, grad, self.edit)

    def _apply(self, act: torch.Tensor, ctx: Ctx, grad: str, edit) -> torch.Tensor:
        check_grad_mode(grad)
        sel = self.positions   # 'all' reads no positions (a decode step then costs no position bookkeeping)
        mask = None if selects_all(sel) else select_mask(sel, ctx.info, f"{type(self).__name__}.positions")
        src = act.detach() if grad == "block" else act
        new = edit(src, ctx)
        if mask is None:
            return new
        if new is src and src is act:
            return act
        return torch.where(mask.view(*mask.shape, *([1] * (act.dim() - 2))), new, act)

    def source_sites(self) -> list[str]:
        """Sites whose value in the same forward pass this intervention reads (``FromSite``); captured first."""
        return []

    # serialization: JSON params + named tensors
    def params(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-able params, tensors); the default covers dataclass fields of simple types and tensors."""
        js, ts = {}, {}
        for f in fields(self):
            if f.name == "positions":
                continue
            k, v = f.name, getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                ts[k] = v
            else:
                js[k] = v
        return js, ts


@register_op
@dataclass
class Add(Intervention):
    """act + alpha * vector (activation addition / steering); ``alpha`` may be a ``[B]`` tensor (per batch row)."""

    op: ClassVar[str] = "add"
    vector: torch.Tensor
    alpha: float | torch.Tensor = 1.0

    def edit(self, act, ctx):
        if is_zero(self.alpha):
            return act
        name = type(self).__name__  # subclasses (e.g. steer's PromptAdd) name themselves in errors
        v = check_tensor(f"{name}.vector", self.vector, act, ctx)
        alpha = self.alpha
        if not isinstance(alpha, torch.Tensor) and alpha == 1:
            return act + v   # 1 * v is v exactly: the same sum without a product per call
        return act + row_alpha(f"{name}.alpha", alpha, act, ctx) * v


@register_op
@dataclass
class Ablate(Intervention):
    """Project out one direction ``[d]`` or a subspace ``[k, d]`` (orthonormalised): act - (act Q^T) Q."""

    op: ClassVar[str] = "ablate"
    direction: torch.Tensor

    def edit(self, act, ctx):
        d = self.direction
        if d.dim() == 1:
            d = d[None]
        if not d.is_floating_point():
            raise TypeError(f"Ablate.direction has dtype {d.dtype}; expected a floating dtype")
        if d.shape[-1] != act.shape[-1]:
            raise ValueError(f"Ablate.direction has shape {tuple(self.direction.shape)}; expected [{act.shape[-1]}] "
                             f"or [k, {act.shape[-1]}] (last dim of site {ctx.site!r}, shape {list(act.shape)})")
        q = torch.linalg.qr(d.double().T).Q.T.to(device=act.device, dtype=act.dtype)  # [k, d] orthonormal rows
        return act - (act @ q.T) @ q


@register_op
@dataclass
class Replace(Intervention):
    """Replace the activation by ``value`` (per-token shape, or the full activation shape)."""

    op: ClassVar[str] = "replace"
    value: torch.Tensor

    def edit(self, act, ctx):
        v = check_tensor("Replace.value", self.value, act, ctx, full=True)
        return v.expand_as(act)


@register_op
@dataclass
class Clamp(Intervention):
    """Set channel(s) ``index`` of the last dim (or of dim 2 for per-head sites when ``dim=2``) to ``value``."""

    op: ClassVar[str] = "clamp"
    index: int | list[int]
    value: float = 0.0
    dim: int = -1

    def edit(self, act, ctx):
        n = act.shape[self.dim]
        idx = [self.index] if isinstance(self.index, int) else list(self.index)
        if any(not -n <= i < n for i in idx):
            raise IndexError(f"Clamp.index {self.index} out of range for dim {self.dim} of size {n} at {ctx.site!r}")
        out = act.clone()
        sl = [slice(None)] * act.dim()
        sl[self.dim] = torch.as_tensor(idx, device=act.device)
        out[tuple(sl)] = self.value
        return out


@register_op
@dataclass
class Scale(Intervention):
    """Multiply by a scalar or a per-channel factor."""

    op: ClassVar[str] = "scale"
    factor: float | torch.Tensor = 1.0

    def edit(self, act, ctx):
        f = self.factor
        if isinstance(f, torch.Tensor):
            f = check_tensor("Scale.factor", f, act, ctx)
        elif f == 1.0:
            return act
        return act * f


@register_op
@dataclass
class Patch(Intervention):
    """Write activations from another run: a tensor of the same shape, or a ``{site: tensor}`` cache."""

    op: ClassVar[str] = "patch"
    source: torch.Tensor | dict

    def edit(self, act, ctx):
        src = self.source
        if isinstance(src, dict):
            if ctx.site not in src:
                raise KeyError(f"Patch source has no site {ctx.site!r}; it holds {sorted(src)}")
            src = src[ctx.site]
        if tuple(src.shape) != tuple(act.shape):
            raise ValueError(f"Patch source for {ctx.site!r} has shape {list(src.shape)}; expected {list(act.shape)} "
                             f"(same batch and positions as the patched run)")
        return src.to(device=act.device, dtype=act.dtype)

    def params(self):
        src = self.source
        if isinstance(src, dict):
            return {"sites": sorted(src)}, {f"source.{k}": v for k, v in src.items()}
        return {}, {"source": src}


@dataclass
class Fn(Intervention):
    """Wrap any ``(act, ctx) -> act`` callable so it gets position selection (not serializable)."""

    fn: Any = None

    def edit(self, act, ctx):
        return self.fn(act, ctx)


def as_intervention(x) -> Intervention:
    """Interventions pass through; plain callables are wrapped in ``Fn``."""
    if isinstance(x, Intervention):
        return x
    if callable(x):
        return Fn(fn=x)
    raise TypeError(f"an intervention must be an Intervention or a callable (act, ctx) -> act; got {type(x).__name__}")


# -- interventions in training loops: step windows and values read from another site ----------------------------
@dataclass
class Schedule:
    """A step counter the training loop advances (``advance()`` once per step, or ``step = t``); interventions bound
    to it are active for ``start <= step < stop`` (``stop=None``: to the end). One schedule may drive many edits."""

    start: int = 0
    stop: int | None = None
    step: int = 0

    def __post_init__(self):
        if self.start < 0 or (self.stop is not None and self.stop < self.start):
            raise ValueError(f"Schedule(start={self.start}, stop={self.stop}); expected 0 <= start <= stop "
                             f"(active for start <= step < stop)")

    @property
    def active(self) -> bool:
        return self.start <= self.step and (self.stop is None or self.step < self.stop)

    def advance(self, n: int = 1) -> int:
        """Move ``n`` steps on; returns the new step."""
        self.step += n
        return self.step


@dataclass
class Scheduled(Intervention):
    """``inner`` while ``schedule`` is active, the identity (no edit, no gradient block) otherwise."""

    inner: Any = None
    schedule: Schedule = field(default_factory=Schedule)

    def __post_init__(self):
        self.inner = as_intervention(self.inner)
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"Scheduled.schedule must be a Schedule, got {type(self.schedule).__name__}")

    def apply(self, act, ctx, grad="through"):
        check_grad_mode(grad)
        return self.inner.apply(act, ctx, grad) if self.schedule.active else act

    def source_sites(self) -> list[str]:
        return self.inner.source_sites()

    def capture(self, act, ctx) -> None:
        if hasattr(self.inner, "capture"):
            self.inner.capture(act, ctx)


@dataclass
class FromSite(Intervention):
    """Set the activation to ``fn(source_act, act, ctx)``, where ``source_act`` is site ``source``'s value in the
    same forward pass (which must come earlier): a clamp to a value computed from elsewhere in the network.
    ``model.intervene`` captures the source for it. With ``grad="block"`` the source is detached as well, so the
    clamped value is a constant for autograd."""

    source: str = ""
    fn: Any = None
    _held: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"FromSite.source must name a site, got {self.source!r}")
        if not callable(self.fn):
            raise TypeError(f"FromSite.fn must be callable (source_act, act, ctx) -> act; got {type(self.fn).__name__}")

    def source_sites(self) -> list[str]:
        return [self.source]

    def capture(self, act: torch.Tensor, ctx: Ctx) -> None:
        """The source site's handler: keep this pass's value (the target consumes it)."""
        self._held[:] = [act]

    def apply(self, act, ctx, grad="through"):
        if not self._held:
            raise RuntimeError(f"FromSite at {ctx.site!r}: source site {self.source!r} was not reached earlier in this "
                               f"forward pass (it must come before the target)")
        src = self._held.pop()
        if grad == "block":
            src = src.detach()
        return self._apply(act, ctx, grad, lambda a, c: self.fn(src, a, c))


def bind(iv: Intervention, grad: str = "through", schedule: Schedule | None = None):
    """The site handler running ``iv`` with a gradient mode and an optional schedule (the identity when off)."""
    check_grad_mode(grad)
    if grad == "through" and schedule is None:
        return iv

    def handler(act: torch.Tensor, ctx: Ctx) -> torch.Tensor | None:
        if schedule is not None and not schedule.active:
            return None
        return iv.apply(act, ctx, grad)

    return handler
