"""Small shared helpers: cache folder, dtype names, thread count (atomic writes live in ``actlab.artifact``)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from actlab.artifact import atomic_write_bytes, atomic_write_json  # noqa: F401  (moved; re-exported for now)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp64": torch.float64, "float64": torch.float64}


def parse_dtype(d: str | torch.dtype | None) -> torch.dtype | None:
    """'bf16' / 'float32' / torch.dtype / None -> torch.dtype or None."""
    if d is None or isinstance(d, torch.dtype):
        return d
    key = str(d).replace("torch.", "").lower()
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {d!r}; use one of {sorted(set(DTYPES))}")
    return DTYPES[key]


def dtype_name(d: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}.get(d, str(d))


def cache_dir() -> Path:
    """``$ACTLAB_CACHE`` or ``~/.cache/actlab`` (XDG)."""
    env = os.environ.get("ACTLAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "actlab"


@contextlib.contextmanager
def num_threads(n: int | None):
    """Run the block on ``n`` torch intra-op threads (None: leave the setting), restoring it afterwards."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
