"""Before a long training run: expected time (from a few calibration steps), peak memory and disk, and a refusal to
start when the output's disk cannot hold the result. ``sae train --dry-run`` prints only this."""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actlab.store import free_bytes
from actlab.store import human_bytes as _b
from actlab.store import human_seconds as _t

if TYPE_CHECKING:
    from actlab.dictionary.base import DictConfig
    from actlab.dictionary.data import Source
    from actlab.dictionary.trainer import TrainConfig

METRIC_LINE_BYTES = 400
"""Upper size of one metrics.jsonl line."""


@dataclass
class Estimate:
    """What a training run will cost."""

    steps: int
    seconds_per_step: float
    seconds: float
    peak_bytes: int
    disk_bytes: int
    disk_free_bytes: int | None

    def __str__(self) -> str:
        free = f", {_b(self.disk_free_bytes)} free" if self.disk_free_bytes is not None else ""
        return (f"estimate: {self.steps} steps x {self.seconds_per_step:.3f} s = {_t(self.seconds)}; "
                f"peak memory ~{_b(self.peak_bytes)}; disk {_b(self.disk_bytes)}{free}")


def sizes(dcfg: DictConfig, tcfg: TrainConfig) -> tuple[int, int]:
    """(peak bytes, disk bytes) from the shapes: parameters + gradients + two Adam moments, the [B, n]
    pre-activation workspace and the batch; disk = the final dictionary, one checkpoint (weights + Adam moments +
    counters) when checkpointing, and the metric lines."""
    n, d, o, B = dcfg.d_sae, dcfg.d_in, dcfg.out_dim, tcfg.batch_size
    params = n * d + n * o + n + o + (d if dcfg.is_transcoder else 0) + (d * o if dcfg.skip else 0)
    ws = 2 if tcfg.precision != "fp32" else 4
    peak = 4 * params * 4 + B * n * ws + B * n * 4 * (0 if dcfg.fused else 3) + 4 * B * (d + 2 * o) + 8 * n
    world_steps = max(tcfg.total_tokens // tcfg.batch_size, 1)
    ckpt = (3 * params * 4 + 8 * n) if (tcfg.checkpoint_minutes or tcfg.checkpoint_every) else 0
    disk = params * 4 + ckpt + METRIC_LINE_BYTES * (world_steps // max(tcfg.log_every, 1) + 1) + 16 * 1024
    return peak, disk


def estimate(dcfg: DictConfig, tcfg: TrainConfig, source: Source, calib_steps: int = 3) -> Estimate:
    """Time ``calib_steps`` optimizer steps (after one warm-up step) of a throwaway trainer on the same source
    and shapes, and scale to the run; memory and disk from the shapes (on CUDA the measured peak when larger)."""
    from actlab.dictionary.trainer import Trainer
    B = tcfg.batch_size
    tc = dataclasses.replace(tcfg, out=None, total_tokens=(calib_steps + 1) * B, progress=False, log_every=1,
                             checkpoint_minutes=0, checkpoint_every=0, dry_run=False, estimate=False, resume=False)
    cuda = torch.device(tcfg.train_device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tr = Trainer(dcfg, tc, source, data_parallel=False)
    tr.fit()
    rates = [r["tokens_per_s"] for r in tr.history[1:]]   # the first step is the warm-up
    per_step = statistics.median(B / r for r in rates) if rates else float("nan")
    steps = max(tcfg.total_tokens // (B * tr.world), 1)
    peak, disk = sizes(dcfg, tcfg)
    if cuda:
        peak = max(peak, int(torch.cuda.max_memory_allocated()))
    return Estimate(steps, per_step, per_step * steps, peak, disk, free_bytes(tcfg.out) if tcfg.out else None)


def check_disk(est: Estimate, out: str | Path) -> None:
    """Refuse to start a run whose output does not fit on its disk (ValueError naming the folder and the sizes)."""
    if est.disk_free_bytes is not None and est.disk_bytes > est.disk_free_bytes:
        raise ValueError(f"not enough disk for training into {out}: needs ~{_b(est.disk_bytes)} (dictionary"
                         f"{', checkpoint' if est.disk_bytes else ''} and metrics), {_b(est.disk_free_bytes)} free; "
                         f"free space or choose another --out")
