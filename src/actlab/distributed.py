"""Rank/world helpers for ``torchrun``: init from the environment (NCCL on GPU, gloo on CPU), ``is_main``, barrier,
simple object collectives and index sharding. Everything degrades to a single process when not launched by torchrun.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without torch.distributed)."""
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else env_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0: the one process that logs, shows progress bars and writes shared files."""
    return rank() == 0


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); returns ``(rank, world)``.

    Idempotent. gloo on CPU, NCCL on GPU (which also pins this process to ``cuda:LOCAL_RANK``).
    """
    if env_world_size() <= 1 or is_initialized():
        return rank(), world_size()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(default_device())
    dist.init_process_group(backend=backend)
    log.info("joined process group: rank %d of %d (%s)", rank(), world_size(), backend)
    return rank(), world_size()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_initialized() and world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process). Objects travel as JSON, never pickle."""
    if not (is_initialized() and world_size() > 1):
        return [obj]
    dev = _comm_device()
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=dev)
    n = torch.tensor([data.numel()], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    m = int(max(int(s) for s in sizes))
    padded = torch.zeros(m, dtype=torch.uint8, device=dev)
    padded[: data.numel()] = data
    bufs = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(bufs, padded)
    return [json.loads(bytes(b[: int(s)].tolist()).decode()) for b, s in zip(bufs, sizes)]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (JSON-like objects)."""
    if not (is_initialized() and world_size() > 1):
        return obj
    return all_gather_object(obj if rank() == src else None)[src]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (returns ``t``)."""
    if is_initialized() and world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """The contiguous block of ``range(n)`` owned by a rank (sizes differ by at most one)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is outside world size {w}")
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return range(lo, lo + base + (r < extra))


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()
