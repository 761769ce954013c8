"""Before a long harvest: expected time (from two calibration forwards of one batch), peak memory and disk, and a
refusal to start when the output's disk cannot hold the store. ``actlab harvest --dry-run`` prints only this."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actlab.utils import parse_dtype

if TYPE_CHECKING:
    from actlab.models import Model
    from actlab.store.harvest import HarvestConfig

def free_bytes(out: str | Path) -> int:
    """Free bytes on the filesystem that holds ``out`` (or its nearest existing parent)."""
    p = Path(out).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


_b, _t = human_bytes, human_seconds

ROW_OVERHEAD = 16
"""Bytes per stored row besides the activations (token id, document and position)."""


@dataclass
class HarvestEstimate:
    tokens: int
    seconds: float
    peak_bytes: int
    disk_bytes: int
    disk_free_bytes: int

    def __str__(self) -> str:
        return (f"estimate: {self.tokens} tokens in ~{_t(self.seconds)}; peak memory ~{_b(self.peak_bytes)}; "
                f"disk {_b(self.disk_bytes)}, {_b(self.disk_free_bytes)} free")


def estimate_harvest(model: Model, cfg: HarvestConfig, tokens: int) -> HarvestEstimate:
    """Time one batch of ``batch_size x context_length`` tokens (second of two calls) through the same record call
    the harvest makes; disk = tokens x (site widths x stored bytes + row overhead); memory = weights + one batch's
    recorded activations on both devices + one shard buffer."""
    n_vocab = len(model.tokenizer) if model.tokenizer is not None else 2
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, max(n_vocab - 1, 1), (cfg.batch_size, cfg.context_length), generator=g).to(model.device)
    dtype = parse_dtype(cfg.store_dtype)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        acts = model.record(ids, cfg.sites, dtype=dtype, stop_early=True)
        times.append(time.perf_counter() - t0)
    per_token = times[-1] / (cfg.batch_size * cfg.context_length)
    width = sum(a[0, 0].numel() for a in acts.values())
    item = torch.empty((), dtype=dtype).element_size()
    disk = tokens * (width * item + ROW_OVERHEAD) + 64 * 1024
    weights = sum(p.numel() * p.element_size() for p in model.module.parameters())
    batch = sum(a.numel() * a.element_size() for a in acts.values())
    shard = (cfg.shard_rows or 16384) * (width * item + ROW_OVERHEAD)
    return HarvestEstimate(tokens, per_token * tokens, weights + 2 * batch + shard, disk, free_bytes(cfg.out))


def check_harvest_disk(est: HarvestEstimate, out: str) -> None:
    """Refuse a harvest whose store does not fit on its disk (ValueError naming the folder and the sizes)."""
    if est.disk_bytes > est.disk_free_bytes:
        raise ValueError(f"not enough disk for the harvest into {out}: needs ~{_b(est.disk_bytes)} for "
                         f"{est.tokens} tokens, {_b(est.disk_free_bytes)} free; free space, harvest fewer --tokens, "
                         f"or choose another --out")
