"""Activation maximisation: synthesise inputs that drive a unit, with Lucid-style regularisers.

Each step renders the images from their parameterisation (pixels or a decorrelated Fourier spectrum), applies random
transformations (jitter = a translation of up to ``jitter`` pixels, scaling by a factor in ``[1 - scale, 1 + scale]``,
one ``grid_sample`` with reflected borders), and ascends ``f(t(x)) - tv * TV(x) - l2 * |x - 0.5|^2``. Optional:
Gaussian blur of pixel parameters every ``blur_every`` steps, a centre bias (early gradient concentrated in the
middle, widening to the whole image: the multifaceted paper's coherent-object prior) and a norm ball for unsquashed
inputs (``max_norm``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from actlab.viz.param import ImageParam, blur, total_variation


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


def random_transform(x: torch.Tensor, jitter: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Translate by up to ``jitter`` pixels and scale by ``1 +- scale`` (one draw per batch), reflected borders."""
    if not jitter and not scale:
        return x
    h, w = x.shape[-2:]
    s = 1.0 + (2 * torch.rand((), generator=gen).item() - 1) * scale
    tx, ty = (torch.randint(-jitter, jitter + 1, (2,), generator=gen) if jitter else torch.zeros(2)).tolist()
    theta = torch.tensor([[1 / s, 0, 2 * tx / w], [0, 1 / s, 2 * ty / h]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


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
                   seed=cfg.seed).to(device or "cpu")
    opt = (torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD)(p.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    h, w = shape[-2:]
    centre = 0.5 if cfg.squash else 0.0
    trace: list[float] = []
    with torch.enable_grad():
        for step in range(cfg.steps):
            img = p()
            v = f(random_transform(img, cfg.jitter, cfg.scale, gen))
            if v.shape != (shape[0],):
                raise ValueError(f"the objective must return one value per image ([{shape[0]}]); got {list(v.shape)}")
            loss = -v.sum()
            if cfg.tv:
                loss = loss + cfg.tv * total_variation(img).sum()
            if cfg.l2:
                loss = loss + cfg.l2 * ((img - centre) ** 2).flatten(1).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.center_bias:
                p.data_.grad.mul_(center_mask(h, w, step / max(1, cfg.steps - 1)).to(p.data_))
            opt.step()
            if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                with torch.no_grad():
                    p.data_.copy_(blur(p.data_, cfg.blur_sigma))
            if cfg.max_norm is not None:
                _project(p, cfg.max_norm)
            trace.append(float(v.detach().mean()))
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
