"""BatchTopK SAE (Bussmann et al. 2024): keep the B*k largest activations of the whole batch (variable per token);
at inference a learned global threshold (running mean of the smallest kept activation) replaces the batch."""
from __future__ import annotations

import torch

from actlab.dictionary.base import register_arch
from actlab.dictionary.sparse_ops import Selector
from actlab.dictionary.topk import TopKSAE


def batch_topk_selector(k: int, n: int, stats: dict) -> Selector:
    """Exact batch top-(B*k): per-row top-min(n, 4k) candidates, then a global cut; falls back to the full
    [B, n] matrix when some row has more winners than candidates. Records the cut value in ``stats``."""
    def select(pre: torch.Tensor):
        pre = pre.relu_()
        B = pre.shape[0]
        kc = min(n, 4 * k)
        vals, idx = pre.topk(kc, dim=-1, sorted=True)
        total = B * k
        cut = vals.reshape(-1).kthvalue(vals.numel() - total + 1).values if total < vals.numel() else vals.min()
        if kc < n and bool((vals[:, -1] >= cut).any()) and float(cut) > 0:
            flat = pre.reshape(-1)
            cut = flat.kthvalue(flat.numel() - total + 1).values
            counts = (pre >= cut).sum(1)
            kk = int(counts.max())
            vals, idx = pre.topk(kk, dim=-1, sorted=True)
        keep = (vals >= cut) & (vals > 0)
        stats["cut"] = float(vals[keep].min()) if bool(keep.any()) else 0.0
        return vals * keep, idx
    return select


@register_arch
class BatchTopKSAE(TopKSAE):
    """Training: batch-level top-k; inference: ``z = ReLU(pre) * (pre > threshold)``."""

    arch = "batchtopk"
    threshold_momentum: float = 0.99

    def __init__(self, cfg, generator=None):
        super().__init__(cfg, generator)
        self.register_buffer("threshold", torch.zeros(()))
        self._stats: dict = {}

    def selector(self, **kw) -> Selector:
        if self.training:
            return batch_topk_selector(self.cfg.k, self.d_sae, self._stats)

        def select(pre):
            vals, idx = pre.topk(min(self.d_sae, 4 * self.cfg.k), dim=-1, sorted=False)
            return vals * (vals > self.threshold), idx
        return select

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)
        pre = self.pre_acts(x)
        return pre.relu() * (pre > self.threshold)

    def step(self, x, y, dead=None, **kw):
        out = super().step(x, y, dead=dead, **kw)
        cut = self._stats.get("cut", 0.0)
        with torch.no_grad():
            if float(self.threshold) == 0.0:
                self.threshold.fill_(cut)
            else:
                self.threshold.mul_(self.threshold_momentum).add_((1 - self.threshold_momentum) * cut)
        out.extra["threshold"] = float(self.threshold)
        return out
