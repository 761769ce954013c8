"""Reader speed: shuffled batches of 4096 rows vs raw sequential read of the same shard files (same run).

Builds a store in the real format (synthetic bf16 rows, d=576 like SmolLM2, written by the store's own shard
writer), then times, interleaved: (a) raw sequential read of every shard's site bytes into 4096-row arrays,
(b) one shuffled epoch of ``store.batches(site, 4096)`` in the stored dtype on a fresh ActivationStore (crc32
checks included), (c) the same on an already-open store, (d) in fp32 (the default), (e) with block_rows=16 --
all with the files in the page cache (memory-speed baseline); then (f) raw sequential read, (g) the shuffled
epoch of (b) and (h) of (c) with the files evicted from the page cache before each run (posix_fadvise DONTNEED:
the files come from disk, as a store larger than RAM does). Last, (i) the page-cache ceiling of any uniformly
shuffling reader on this machine: 4096-row gathers from 64 MiB of rows already in process memory (no I/O, no
checksum, no mapping), against the same raw read.
Prints rows/s and ratio = shuffled / raw of the same cache state. Target: ratio >= 0.80.

    python bench/store_reader.py [--rows 400000 --d 576 --shard-rows 16384 --repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actlab.store import ActivationStore
from actlab.store.format import FORMAT, FORMAT_VERSION, MANIFEST
from actlab.store.writer import write_shard
from actlab.utils import atomic_write_json

SITE = "blocks.10.resid_post"


def build(root: Path, rows: int, d: int, shard_rows: int) -> None:
    g = torch.Generator().manual_seed(0)
    shards = []
    for k, lo in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - lo)
        t = {SITE: torch.randn(n, d, generator=g).to(torch.bfloat16),
             "_tokens": torch.randint(0, 49152, (n,), generator=g, dtype=torch.int32),
             "_doc": torch.arange(lo, lo + n, dtype=torch.int32), "_pos": torch.zeros(n, dtype=torch.int32)}
        shards.append(write_shard(root, 0, k, t))
    atomic_write_json(root / MANIFEST, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "complete": True, "model": {"name": "synthetic"},
        "tokenizer": {}, "sites": [SITE], "dims": {SITE: d}, "site_shapes": {SITE: [d]}, "dtype": "bf16",
        "context_length": 128, "world_size": 1, "shard_rows": shard_rows, "total_rows": rows, "harvest": {},
        "shards": shards})


def raw_read(root: Path, manifest: dict, batch: int = 4096) -> int:
    """Baseline: read every shard's site bytes front to back, in 4096-row arrays (what a sequential loader does)."""
    n = 0
    for sh in manifest["shards"]:
        a, _ = sh["tensors"][SITE]["offsets"]
        rb = (sh["tensors"][SITE]["offsets"][1] - a) // sh["rows"]
        with open(root / sh["file"], "rb", buffering=0) as f:
            f.seek(a)
            left = sh["rows"]
            while left:
                k = min(batch, left)
                out = np.empty((k, rb), dtype=np.uint8)
                f.readinto(memoryview(out).cast("B"))
                n += k
                left -= k
    return n


def timed_s(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def evict(root: Path) -> None:
    """Drop the store's files from the page cache (clean pages only; they are), so the next read hits the disk."""
    for f in sorted(root.rglob("*.safetensors")):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def shuffled(root: Path, dtype, store: ActivationStore | None = None, block_rows: int = 1) -> int:
    """One shuffled epoch; a fresh ActivationStore (so crc32 checks are included) unless ``store`` is given."""
    st = store or ActivationStore(root)
    return sum(b.shape[0] for b in st.batches(SITE, batch_size=4096, shuffle=True, seed=0, dtype=dtype,
                                              block_rows=block_rows))


def ram_gather(rows: torch.Tensor, batches: int, g: torch.Generator) -> int:
    """4096-row uniform random gathers from rows already in RAM (one serial index_select per batch)."""
    n = 0
    for _ in range(batches):
        idx = torch.randint(0, rows.shape[1], (4096,), generator=g)
        out = torch.from_numpy(np.empty((1, 4096, rows.shape[2]), np.int64))
        torch.index_select(rows, 1, idx, out=out)
        n += 4096
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--shard-rows", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="accepted for a uniform interface: the reader serves host memory (batches are moved by the consumer)")
    ap.add_argument("--dir", default=None, help="where to build the store (default: a temp folder)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    root = Path(a.dir or tempfile.mkdtemp(prefix="actlab-bench-store-"))
    root.mkdir(parents=True, exist_ok=True)
    if not (root / MANIFEST).exists():
        build(root, a.rows, a.d, a.shard_rows)
    st = ActivationStore(root)
    gib = len(st) * a.d * 2 / 2**30
    print(f"store: {len(st)} rows x d={a.d} bf16 = {gib:.2f} GiB in {len(st.shards)} shards ({root})")
    warm = ActivationStore(root)
    methods = {"raw sequential read": lambda: raw_read(root, st.manifest),
               "shuffled bf16, fresh store": lambda: shuffled(root, torch.bfloat16),
               "shuffled bf16, warm store": lambda: shuffled(root, torch.bfloat16, warm),
               "shuffled fp32, warm store": lambda: shuffled(root, torch.float32, warm),
               "shuffled bf16, blocks of 16": lambda: shuffled(root, torch.bfloat16, warm, 16),
               "COLD raw sequential read": lambda: (evict(root), raw_read(root, st.manifest))[1],
               "COLD shuffled bf16, fresh store": lambda: (evict(root), shuffled(root, torch.bfloat16))[1],
               "COLD shuffled bf16, warm store": lambda: (evict(root), shuffled(root, torch.bfloat16, warm))[1]}
    for f in methods.values():  # smoke-run
        f()
    raw_read(root, st.manifest)  # back in the page cache
    times = {k: [] for k in methods}
    names = list(methods)
    for r in range(a.repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            if not k.startswith("COLD"):
                raw_read(root, st.manifest)  # hot runs start with every file in the page cache
            t = time.perf_counter()
            n = methods[k]()
            times[k].append(time.perf_counter() - t)
            assert n == len(st), (k, n)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = len(st) / med["raw sequential read"]
    cold = len(st) / med["COLD raw sequential read"]
    for k in names:
        rps = len(st) / med[k]
        b = cold if k.startswith("COLD") else base
        print(f"{k:32s} {rps / 1e6:8.3f} M rows/s  {rps * a.d * 2 / 2**30:6.2f} GiB/s  ratio {rps / b:.3f}")
    r = len(st) / med["shuffled bf16, fresh store"] / base
    rc = len(st) / med["COLD shuffled bf16, fresh store"] / cold
    rw = len(st) / med["COLD shuffled bf16, warm store"] / cold
    print(f"ratio shuffled bf16 batches / raw sequential read: from disk {rw:.3f} (checksums verified earlier), "
          f"{rc:.3f} (incl. crc checks); from page cache {r:.3f} (incl. crc checks)  target >= 0.80")
    words = a.d * 2 // 8
    ram = torch.from_numpy(np.random.default_rng(1).integers(0, 2**62, (1, (64 << 20) // (words * 8), words)))
    g = torch.Generator().manual_seed(0)
    ceil = []
    for _ in range(a.repeats):
        t_raw = timed_s(lambda: raw_read(root, st.manifest))
        t_gat = timed_s(lambda: ram_gather(ram, len(st) // 4096, g))
        ceil.append((len(st) // 4096 * 4096 / t_gat) / (len(st) / t_raw))
    print(f"page-cache ceiling: in-RAM uniform 4096-row gathers (no I/O) / raw read from page cache: "
          f"{statistics.median(ceil):.3f} (repeats {[round(c, 3) for c in ceil]})")
    blob = np.random.default_rng(0).bytes(256 << 20)
    import zlib

    from actlab.store.format import crc32
    for name, fn in (("zlib.crc32", zlib.crc32), (f"actlab crc32 ({crc32.__module__})", crc32)):
        t = min(timed_s(lambda: fn(blob)) for _ in range(3))
        print(f"{name:32s} {0.25 / t:6.2f} GiB/s (checksum speed, 256 MiB, best of 3)")
    print(f"(median of {a.repeats} interleaved repeats, torch threads=2, machine shared with other jobs; "
          f"cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
