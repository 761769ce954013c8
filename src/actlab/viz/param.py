"""Image parameterisations for activation maximisation: plain pixels, or a decorrelated Fourier spectrum (Lucid's
``fft_image``: each frequency scaled by ``1 / f**decay``, so gradient steps favour low frequencies; 3-channel images
also decorrelate colour with Lucid's ImageNet colour-correlation matrix).

Both map to valid pixels with a sigmoid (``squash``: [0, 1]) or leave values free (for norm-constrained objectives).
On small images the scaled inverse real FFT is one precomputed matrix (``fourier_basis``: a single matmul forward and
backward instead of complex views, a scale multiply and an FFT each way; built once per shape, ``cached_basis``); large
images keep the FFT.
"""
from __future__ import annotations

import functools
import math

import torch

PARAMS = ("pixel", "fourier")
#: the largest dense Fourier basis (entries) used instead of the FFT: up to ~18x18 images. The matmul costs
#: 2 * rows * entries flops each way, so past that the FFT's O(HW log HW) wins (at 3x32x32 a dense basis made a step of
#: a small CNN 1.45x plain instead of 1.27x)
DENSE_MAX = 1 << 17
#: Lucid's square root of the ImageNet colour correlation (channels RGB)
COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_SQRT = COLOR_SQRT / COLOR_SQRT.norm(dim=0).max()


def _logit(x: torch.Tensor, squash: bool) -> torch.Tensor:
    return torch.logit(x.clamp(0.01, 0.99)) if squash else x


def rfft_scale(h: int, w: int, decay: float) -> torch.Tensor:
    """``[h, w//2+1]`` per-frequency scale ``1 / max(f, 1/max(h, w)) ** decay`` (normalised to mean 1)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    f = (fx ** 2 + fy ** 2).sqrt().clamp_min(1.0 / max(h, w))
    s = f ** -decay
    return s / s.mean()


def fourier_basis(h: int, w: int, scale: torch.Tensor) -> torch.Tensor:
    """``[h * (w//2+1) * 2, h * w]``: row k is the image ``irfft2`` makes of the k-th real spectrum coordinate (real and
    imaginary parts interleaved, times ``scale``), so ``spec.flatten @ basis == irfft2(complex(spec) * scale)``."""
    k = h * (w // 2 + 1) * 2
    eye = torch.eye(k, dtype=torch.float64).view(k, h, w // 2 + 1, 2)
    img = torch.fft.irfft2(torch.view_as_complex(eye) * scale.double(), s=(h, w), norm="ortho")
    return img.reshape(k, h * w).float()


@functools.lru_cache(maxsize=8)
def cached_basis(h: int, w: int, decay: float) -> torch.Tensor:
    """``fourier_basis(h, w, rfft_scale(h, w, decay))``, built once per shape and decay (an ``irfft2`` of every spectrum
    coordinate costs ~10 ms, a few steps of a small model). Shared by every ``ImageParam`` of that shape: read only."""
    return fourier_basis(h, w, rfft_scale(h, w, decay))


class ImageParam(torch.nn.Module):
    """``n`` images ``[n, C, H, W]`` as trainable parameters; ``forward()`` returns the images.

    ``dense`` (fourier): render through the precomputed ``fourier_basis`` (default: when it has <= ``DENSE_MAX``
    entries) or through ``irfft2`` (False; the reference)."""

    def __init__(self, shape: tuple[int, ...], *, param: str = "fourier", decay: float = 1.0, squash: bool = True,
                 init: torch.Tensor | None = None, noise: float = 0.01, seed: int = 0, dense: bool | None = None) -> None:
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"param must be one of {PARAMS}, got {param!r}")
        if len(shape) != 4:
            raise ValueError(f"image shape must be [n, C, H, W]; got {list(shape)}")
        self.kind, self.squash, self.shape = param, squash, tuple(shape)
        _, c, h, w = shape
        gen = torch.Generator().manual_seed(seed)
        base = torch.zeros(shape) if init is None else _logit(init.detach().float().expand(shape).clone(), squash)
        base = base + noise * torch.randn(shape, generator=gen)
        self.color, self.dense = c == 3, False
        if param == "pixel":
            self.data_ = torch.nn.Parameter(base)
        else:
            self.register_buffer("scale", rfft_scale(h, w, decay))
            spec = torch.fft.rfft2(self._uncolor(base), norm="ortho") / self.scale
            self.data_ = torch.nn.Parameter(torch.view_as_real(spec).contiguous())
            k = h * (w // 2 + 1) * 2
            self.dense = k * h * w <= DENSE_MAX if dense is None else dense
            if self.dense:
                self.register_buffer("basis", cached_basis(h, w, float(decay)))

    def _uncolor(self, x: torch.Tensor) -> torch.Tensor:
        if not self.color:
            return x
        return torch.einsum("nchw,cd->ndhw", x, torch.linalg.inv(COLOR_SQRT).to(x))

    def raw(self) -> torch.Tensor:
        """The images before the sigmoid."""
        if self.kind == "pixel":
            return self.data_
        if self.dense:
            n, c = self.data_.shape[:2]
            x = torch.mm(self.data_.view(n * c, -1), self.basis).view(n, c, *self.shape[-2:])
        else:
            x = torch.fft.irfft2(torch.view_as_complex(self.data_) * self.scale, s=self.shape[-2:], norm="ortho")
        return torch.einsum("nchw,cd->ndhw", x, COLOR_SQRT.to(x)) if self.color else x

    def forward(self) -> torch.Tensor:
        x = self.raw()
        return torch.sigmoid(x) if self.squash else x


def gaussian_kernel(sigma: float, channels: int) -> torch.Tensor:
    """A ``[channels, 1, k, k]`` normalised Gaussian (k = 2 * ceil(2 sigma) + 1) for a depthwise blur."""
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (g[:, None] * g[None, :])
    return (k / k.sum()).expand(channels, 1, -1, -1).contiguous()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur of ``[n, C, H, W]`` with reflected borders."""
    k = gaussian_kernel(sigma, x.shape[1]).to(x)
    r = k.shape[-1] // 2
    pad = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect" if min(x.shape[-2:]) > r else "replicate")
    return torch.nn.functional.conv2d(pad, k, groups=x.shape[1])


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image ``[n]``."""
    c, h, w = x.shape[-3:]
    dh = x.diff(dim=-2).abs().sum((-3, -2, -1)) / (c * (h - 1) * w)
    dw = x.diff(dim=-1).abs().sum((-3, -2, -1)) / (c * h * (w - 1))
    return dh + dw
