"""Level set traversal ("Exploring Geometry of Blind Spots in Vision Models", NeurIPS 2023): walk from a source image
toward a target image while keeping the source class's confidence at its starting level.

Each step moves along the part of ``x_target - x`` orthogonal to the gradient of the confidence (first-order
invariant), clips to the valid range, and, if the confidence fell more than ``tol`` below the level, takes Newton
steps along the gradient back onto it. The step shrinks with the remaining distance.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class TraverseConfig:
    """Step size, tolerances and budget of the traversal."""

    steps: int = 200
    """most steps."""
    eta: float = 0.1
    """fraction of the orthogonal remaining difference taken per step."""
    tol: float = 1e-6
    """how far the confidence may fall below the level before a corrective step."""
    margin: float = 0.0
    """the level is the source confidence minus this."""
    max_corrections: int = 20
    """corrective Newton steps per step at most."""
    stop: float = 1e-3
    """stop once the L-infinity distance to the target is below this."""
    clip: tuple[float, float] | None = (0.0, 1.0)
    """valid pixel range (None: unbounded)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 < self.eta <= 1 or self.tol < 0 or self.stop < 0 or self.max_corrections < 0:
            raise ValueError("steps >= 1, 0 < eta <= 1, tol, stop, max_corrections >= 0 are required")


@dataclass
class Traversal:
    """``path`` [T+1, ...] (source first), ``values`` [T+1] confidence along it, ``level`` the kept level,
    ``distances`` L-infinity to the target, ``corrections`` (count per step), ``reached`` the stop distance."""

    path: torch.Tensor
    values: torch.Tensor
    level: float
    distances: list[float] = field(default_factory=list)
    corrections: list[int] = field(default_factory=list)
    reached: bool = False

    @property
    def final(self) -> torch.Tensor:
        return self.path[-1]


def _value_grad(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = f(x[None]).reshape(())
        (g,) = torch.autograd.grad(v, x)
    return float(v.detach()), g


def class_confidence(model, cls: int, kind: str = "prob") -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x [1, ...]) -> [1]``: a classifier's probability (``prob``), log-probability or logit of ``cls``."""
    if kind not in ("prob", "logprob", "logit"):
        raise ValueError(f"kind must be prob, logprob or logit, got {kind!r}")
    mod = getattr(model, "module", model)

    def f(x: torch.Tensor) -> torch.Tensor:
        z = mod(x)
        z = z.logits if hasattr(z, "logits") else z
        if kind == "logit":
            return z[:, cls]
        lp = torch.log_softmax(z, -1)[:, cls]
        return lp if kind == "logprob" else lp.exp()
    return f


def level_set_traverse(f: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, target: torch.Tensor,
                       cfg: TraverseConfig | None = None) -> Traversal:
    """Traverse from ``source`` to ``target`` (one input each, no batch dim) keeping ``f`` (e.g.
    :func:`class_confidence`) at ``f(source) - margin`` or above."""
    cfg = cfg or TraverseConfig()
    if source.shape != target.shape:
        raise ValueError(f"source {list(source.shape)} and target {list(target.shape)} differ in shape")
    x = source.detach().clone()
    v, g = _value_grad(f, x)
    level = v - cfg.margin
    path, values, dists, corr = [x.clone()], [v], [float((target - x).abs().max())], []
    reached = dists[0] <= cfg.stop
    for _ in range(cfg.steps):
        if reached:
            break
        d = target - x
        gg = float((g * g).sum())
        perp = d - (float((d * g).sum()) / gg) * g if gg > 0 else d
        x = x + cfg.eta * perp
        if cfg.clip is not None:
            x = x.clamp(*cfg.clip)
        v, g = _value_grad(f, x)
        n = 0
        while v < level - cfg.tol and n < cfg.max_corrections:
            gg = float((g * g).sum())
            if gg == 0:
                break
            x = x + ((level + cfg.tol - v) / gg) * g                   # Newton step back onto the level (+ tol)
            if cfg.clip is not None:
                x = x.clamp(*cfg.clip)
            v, g = _value_grad(f, x)
            n += 1
        path.append(x.clone())
        values.append(v)
        corr.append(n)
        dists.append(float((target - x).abs().max()))
        reached = dists[-1] <= cfg.stop
    return Traversal(torch.stack(path), torch.tensor(values, dtype=torch.float64), level, dists, corr, reached)


def line_confidence(f: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor,
                    n: int = 11) -> torch.Tensor:
    """``f`` at ``n`` evenly spaced points of the straight segment from ``a`` to ``b`` (e.g. source to the final
    traversal image: the paper's check that the two are joined by a high-confidence line)."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    t = torch.linspace(0, 1, n, dtype=a.dtype).view(-1, *[1] * a.dim())
    with torch.no_grad():
        return torch.cat([f((a + s * (b - a))[None]).reshape(1) for s in t]).detach()
