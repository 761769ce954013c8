"""Quantization outliers (arXiv 2405.20835 protocol): per-channel ranges and kurtosis at linear-layer inputs,
LLM.int8() outlier features, symmetric fake quantization, and SmoothQuant scale migration."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch

from actlab.utils import num_threads

GRANULARITIES = ("tensor", "channel", "token")


@contextlib.contextmanager
def stats_threads(n: int | None = 1, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block's elementwise statistics / fake-quant math on ``n`` CPU threads, restoring torch's setting.

    These are memory-bound passes; OpenMP fan-out costs more than it gains (measured 20-100x slower elementwise
    ops with 2 threads on a loaded 2-core machine). ``n=None`` or a non-CPU device leaves the setting alone.
    """
    with num_threads(n if torch.device(device).type == "cpu" else None):
        yield


def quant_scale(x: torch.Tensor, bits: int = 8, granularity: str = "tensor", clip: str = "minmax",
                percentile: float = 99.99) -> torch.Tensor:
    """Symmetric scale (step size) for INT-``bits``: per tensor, per channel (last dim) or per token (rows).

    ``clip='minmax'`` uses max |x|; ``clip='percentile'`` uses that percentile of |x| (outliers get clipped).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}; got {granularity!r}")
    if clip not in ("minmax", "percentile"):
        raise ValueError(f"clip must be 'minmax' or 'percentile'; got {clip!r}")
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in [2, 16]; got {bits}")
    a = x.detach().abs().float()
    a2 = a.reshape(-1, a.shape[-1]) if a.dim() > 1 else a[None]
    if granularity == "tensor":
        v = a2.reshape(1, -1)
    elif granularity == "channel":
        v = a2.T
    else:
        v = a2
    if clip == "minmax":
        r = v.amax(dim=1)
    else:
        k = max(1, min(v.shape[1], int(round(percentile / 100.0 * v.shape[1]))))
        r = v.kthvalue(k, dim=1).values
    qmax = 2 ** (bits - 1) - 1
    s = (r / qmax).clamp_min(1e-12)
    if granularity == "tensor":
        return s.reshape(())
    if granularity == "channel":
        return s                                   # [d]
    return s.reshape(*x.shape[:-1], 1) if x.dim() > 1 else s.reshape(())


def fake_quant(x: torch.Tensor, bits: int = 8, granularity: str = "tensor", clip: str = "minmax",
               percentile: float = 99.99, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize ``x`` symmetrically to INT-``bits`` (round to nearest, clamp), same dtype as ``x``.

    ``scale`` (a static, calibrated scale that broadcasts against ``x``) overrides the dynamic one.
    """
    s = quant_scale(x, bits, granularity, clip, percentile) if scale is None else scale
    s = s.to(device=x.device, dtype=torch.float32)
    qmax = 2 ** (bits - 1) - 1
    return (torch.round(x.float() / s).clamp(-qmax - 1, qmax) * s).to(x.dtype)


@dataclass
class ChannelStats:
    """Streaming per-channel statistics of one site ``[..., d]``: min, max, max |x|, moments up to 4 (kurtosis),
    count of entries with ``|x| >= outlier_threshold``, and per-token L2 norms. Memory O(d)."""

    d: int
    outlier_threshold: float = 6.0
    n: int = 0
    amax: torch.Tensor = field(init=False)
    vmin: torch.Tensor = field(init=False)
    vmax: torch.Tensor = field(init=False)
    s1: torch.Tensor = field(init=False)
    s2: torch.Tensor = field(init=False)
    s3: torch.Tensor = field(init=False)
    s4: torch.Tensor = field(init=False)
    n_big: torch.Tensor = field(init=False)
    norm_sum: float = 0.0
    norm_max: float = 0.0

    def __post_init__(self):
        z = torch.zeros(self.d, dtype=torch.float64)
        self.amax, self.s1, self.s2, self.s3, self.s4 = z.clone(), z.clone(), z.clone(), z.clone(), z.clone()
        self.vmin = torch.full((self.d,), float("inf"), dtype=torch.float64)
        self.vmax = torch.full((self.d,), float("-inf"), dtype=torch.float64)
        self.n_big = torch.zeros(self.d, dtype=torch.long)

    def update(self, x: torch.Tensor) -> None:
        """Consume ``[..., d]`` activations (rows are tokens). Sums are matrix-vector products (BLAS)."""
        if x.shape[-1] != self.d:
            raise ValueError(f"ChannelStats(d={self.d}) got activations with last dim {x.shape[-1]}")
        x = x.detach().reshape(-1, self.d).float()
        n = x.shape[0]
        ones = torch.ones(1, n, dtype=x.dtype, device=x.device)
        x2 = x * x
        sums = torch.cat([ones @ x, ones @ x2, ones @ (x2 * x), ones @ (x2 * x2),
                          ones @ (x2 >= self.outlier_threshold ** 2).to(x.dtype)]).double().cpu()
        self.s1 += sums[0]
        self.s2 += sums[1]
        self.s3 += sums[2]
        self.s4 += sums[3]
        self.n_big += sums[4].round().long()
        self.vmin = torch.minimum(self.vmin, x.amin(0).double().cpu())
        self.vmax = torch.maximum(self.vmax, x.amax(0).double().cpu())
        self.amax = torch.maximum(self.vmax, -self.vmin)
        norms = (x2 @ torch.ones(self.d, 1, dtype=x.dtype, device=x.device)).sqrt()
        self.norm_sum += float(norms.sum())
        self.norm_max = max(self.norm_max, float(norms.max()))
        self.n += n

    def kurtosis(self) -> torch.Tensor:
        """Per-channel (Pearson, non-excess) kurtosis E[(x-mu)^4] / Var^2: 3 for a Gaussian."""
        n = max(self.n, 1)
        m1, m2, m3, m4 = self.s1 / n, self.s2 / n, self.s3 / n, self.s4 / n
        var = (m2 - m1 ** 2).clamp_min(1e-30)
        c4 = m4 - 4 * m1 * m3 + 6 * m1 ** 2 * m2 - 3 * m1 ** 4
        return (c4 / var ** 2).float()

    def big_fraction(self) -> torch.Tensor:
        """Per-channel fraction of tokens with ``|x| >= outlier_threshold``."""
        return (self.n_big.double() / max(self.n, 1)).float()

    def summary(self) -> dict:
        k = self.kurtosis()
        amax = self.amax.float()
        return {"n_tokens": self.n, "absmax": float(amax.max()), "absmax_channel": int(amax.argmax()),
                "absmax_median_channel": float(amax.median()), "kurtosis_max": float(k.max()),
                "kurtosis_median": float(k.median()), "token_norm_mean": self.norm_sum / max(self.n, 1),
                "token_norm_max": self.norm_max}


def find_outliers(stats: list[ChannelStats], min_token_frac: float = 0.06, min_layer_frac: float = 0.25) -> list[int]:
    """LLM.int8() outlier features: channels whose magnitude reaches the threshold (6 by default) on at least
    ``min_token_frac`` of tokens in at least ``min_layer_frac`` of the given layers (same-width sites)."""
    if not stats:
        return []
    widths = {s.d for s in stats}
    if len(widths) != 1:
        raise ValueError(f"find_outliers needs sites of one width (one kind of linear input); got widths {widths}")
    hits = torch.stack([s.big_fraction() >= min_token_frac for s in stats]).float().mean(0)
    return (hits >= min_layer_frac).nonzero().flatten().tolist()


def smoothquant_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant per-input-channel scales ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` for a linear layer with
    ``weight`` ``[out, in]``; then ``X' = X / s`` and ``W' = W * s`` (columns) leave ``X W^T`` unchanged."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    if act_absmax.shape[-1] != weight.shape[1]:
        raise ValueError(f"act_absmax has {act_absmax.shape[-1]} channels but the weight has {weight.shape[1]} "
                         f"input features")
    w = weight.detach().abs().amax(0).float().clamp_min(1e-5)
    x = act_absmax.float().to(w.device).clamp_min(1e-5)
    return (x ** alpha / w ** (1 - alpha)).clamp_min(1e-5)


def smooth(x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply SmoothQuant migration: ``(X / s, W * s)`` with ``W`` ``[out, in]`` (``nn.Linear`` layout)."""
    return x / s.to(x), weight * s.to(weight)[None, :]
