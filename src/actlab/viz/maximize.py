"""Activation maximisation: synthesise inputs that drive a unit, with Lucid-style regularisers.

Each step renders the images from their parameterisation (pixels or a decorrelated Fourier spectrum), applies random
transformations (jitter = a translation of up to ``jitter`` pixels, scaling by a factor in ``[1 - scale, 1 + scale]``,
reflected borders), and ascends ``f(t(x)) - tv * TV(x) - l2 * |x - 0.5|^2``. Optional:
Gaussian blur of pixel parameters every ``blur_every`` steps, a centre bias (early gradient concentrated in the
middle, widening to the whole image: the multifaceted paper's coherent-object prior) and a norm ball for unsquashed
inputs (``max_norm``).

On a tiny model the regularisers' many small tensor ops, not the model, dominate a step, so by default (``fast``) the
Fourier basis is one precomputed matrix (``param.fourier_basis``, built once per shape), the transforms of all steps
are drawn up front as separable interpolation matrices (``transforms.TransformPlan``: two matmuls a step), and the
whole chain render -> sigmoid -> transform -> penalties runs outside autograd with a hand-written adjoint
(``fused.Pipeline``; the penalties enter through their gradient ``penalty.PenaltyGrad``, computed in the forward).
``fast=False`` runs the eager reference (``irfft2``, ``affine_grid`` + ``grid_sample``, the autograd penalty) with the
same random draws; tests hold the two equal.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from actlab.viz.fused import Pipeline
from actlab.viz.param import ImageParam, blur
from actlab.viz.penalty import penalty
from actlab.viz.transforms import TransformPlan, random_transform

__all__ = ["MaxResult", "MaximizeConfig", "center_mask", "maximize", "plain_ascent", "random_transform"]


@dataclass
class MaximizeConfig:
    """Optimiser, parameterisation and regularisers of activation maximisation."""

    steps: int = 128
    """gradient steps."""
    lr: float = 0.05
    """learning rate."""
    optimizer: str = "adam"
    """adam, or sgd (plain gradient ascent x <- x + lr * grad, the papers' update; Adam's per-pixel step sizes
    bend the direction)."""
    param: str = "fourier"
    """pixel or fourier (decorrelated spectrum)."""
    decay: float = 1.0
    """fourier: spectrum scale 1/f**decay."""
    squash: bool = True
    """map to [0, 1] with a sigmoid; off: free values (use max_norm)."""
    jitter: int = 1
    """random translation of up to this many pixels per step (0: off)."""
    scale: float = 0.05
    """random scaling by a factor in [1 - scale, 1 + scale] per step (0: off)."""
    tv: float = 0.0
    """total-variation penalty weight."""
    l2: float = 0.0
    """L2 decay weight on (x - 0.5) (or x when unsquashed)."""
    blur_every: int = 0
    """pixel param: Gaussian-blur the parameters every this many steps (0: off)."""
    blur_sigma: float = 0.5
    """sigma of that blur, in pixels."""
    center_bias: bool = False
    """pixel param: gradient masked by a centred Gaussian whose width grows over the steps."""
    max_norm: float | None = None
    """project each image onto the L2 ball of this radius after every step (unsquashed inputs)."""
    noise: float = 0.01
    """std of the initial noise."""
    seed: int = 0
    """seed of the initial noise and of the random transformations."""
    fast: bool = True
    """dense Fourier basis, precomputed transform matrices, hand-written penalty gradient (False: the eager reference,
    the same steps up to float rounding)."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lr <= 0 or self.jitter < 0 or not 0 <= self.scale < 1:
            raise ValueError("steps >= 0, lr > 0, jitter >= 0 and 0 <= scale < 1 are required")
        if self.tv < 0 or self.l2 < 0 or self.blur_every < 0 or self.blur_sigma <= 0:
            raise ValueError("tv, l2, blur_every must be >= 0 and blur_sigma > 0")
        if (self.blur_every or self.center_bias) and self.param != "pixel":
            raise ValueError("blur_every and center_bias act on pixel parameters: set param='pixel'")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.max_norm is not None and self.max_norm <= 0:
            raise ValueError(f"max_norm must be > 0, got {self.max_norm}")


@dataclass
class MaxResult:
    """``images`` [n, C, H, W] (detached), ``values`` [n] (the objective on them, untransformed), ``trace`` (mean
    objective per step, on the transformed images)."""

    images: torch.Tensor
    values: torch.Tensor
    trace: list[float] = field(default_factory=list)


def center_mask(h: int, w: int, progress: float) -> torch.Tensor:
    """``[H, W]`` Gaussian centred weight of width ``0.15 + 2 * progress`` image sides (flat at the end)."""
    sig = 0.15 + 2.0 * progress
    yy = torch.linspace(-0.5, 0.5, h)[:, None]
    xx = torch.linspace(-0.5, 0.5, w)[None, :]
    return torch.exp(-(yy ** 2 + xx ** 2) / (2 * sig ** 2))


def _project(p: ImageParam, r: float) -> None:
    with torch.no_grad():
        if p.kind != "pixel":  # ortho FFT: the norm of the image is the norm of the scaled spectrum
            raise ValueError("max_norm needs param='pixel'")
        n = p.data_.flatten(1).norm(dim=1).clamp_min(1e-12)
        p.data_.mul_((r / n).clamp(max=1.0).view(-1, 1, 1, 1))


def maximize(f: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], cfg: MaximizeConfig | None = None, *,
             init: torch.Tensor | None = None, device: str | torch.device | None = None) -> MaxResult:
    """Images ``[n, C, H, W]`` (``shape``) that maximise ``f(images) -> [n]`` (each row independently).

    ``f``: e.g. ``objective(model, Unit(...))``; ``init``: starting images (e.g. a facet's mean image) broadcast to
    ``shape``, else noise around grey."""
    cfg = cfg or MaximizeConfig()
    p = ImageParam(tuple(shape), param=cfg.param, decay=cfg.decay, squash=cfg.squash, init=init, noise=cfg.noise,
                   seed=cfg.seed, dense=None if cfg.fast else False).to(device or "cpu")
    opt = (torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD)(p.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    h, w = shape[-2:]
    centre = 0.5 if cfg.squash else 0.0
    plan = TransformPlan(cfg.steps, h, w, cfg.jitter, cfg.scale, gen, device=p.data_.device) if cfg.fast else None
    pipe = Pipeline(p, plan, cfg.tv, cfg.l2, centre) if plan is not None else None
    values: list[torch.Tensor] = []
    with torch.enable_grad():
        for step in range(cfg.steps):
            if pipe is not None:
                x = pipe.forward(step)
                v = f(x)
            else:
                img = p()
                v = f(random_transform(img, cfg.jitter, cfg.scale, gen))
            if v.shape != (shape[0],):
                raise ValueError(f"the objective must return one value per image ([{shape[0]}]); got {list(v.shape)}")
            loss = -v.sum()
            if plan is None and (cfg.tv or cfg.l2):
                loss = loss + penalty(img, cfg.tv, cfg.l2, centre)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if pipe is not None:
                p.data_.grad = pipe.backward(x.grad)
            if cfg.center_bias:
                p.data_.grad.mul_(center_mask(h, w, step / max(1, cfg.steps - 1)).to(p.data_))
            opt.step()
            if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                with torch.no_grad():
                    p.data_.copy_(blur(p.data_, cfg.blur_sigma))
            if cfg.max_norm is not None:
                _project(p, cfg.max_norm)
            values.append(v.detach())
    trace = torch.stack(values).mean(1).tolist() if values else []
    with torch.no_grad():
        img = p().detach()
    with torch.enable_grad():
        vals = f(img).detach()
    return MaxResult(img, vals, trace)


def plain_ascent(f: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], steps: int, lr: float = 0.05,
                 seed: int = 0) -> torch.Tensor:
    """The baseline: Adam on raw pixels, no parameterisation, transforms or penalties (for benchmarks)."""
    x = (0.5 + 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = -f(x).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return x.detach()
