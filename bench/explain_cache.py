"""Latent cache speed and memory: cache pass vs SAE-encode-only over the same store, in the same run.

Builds a store in the real format (synthetic fp32 rows, d=576 like SmolLM2, the store's own shard writer) and a
TopK SAE (random weights; TopK fires exactly k latents per token, like a trained one), then times, interleaved
``--repeats`` times: (a) encode-only: read every chunk of the store and ``sae.encode`` it, discarding the result;
(b) the cache pass ``build_cache`` over the same chunks (encode + sparse entries + statistics + shard writes).
Prints tokens/s of each and ratio = cache / encode (target >= 0.80), then the cache's bytes per stored activation
on disk, the peak RSS of a cache pass run alone in a subprocess, and the extrapolation to 1M tokens.

    python bench/explain_cache.py [--rows 16384 --d 576 --d-sae 16384 --k 32 --batch-rows 4096 --repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from actlab.dictionary import DictConfig, build
from actlab.explain import CacheConfig, DictionaryLatents, LatentCache, StoreRows, build_cache
from actlab.store import ActivationStore
from actlab.store.format import FORMAT, FORMAT_VERSION, MANIFEST
from actlab.store.writer import write_shard
from actlab.utils import atomic_write_json

SITE = "blocks.3.resid_post"


def build_store(root: Path, rows: int, d: int, shard_rows: int = 16384) -> None:
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    shards = []
    for k, lo in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - lo)
        t = {SITE: torch.randn(n, d, generator=g),
             "_tokens": torch.randint(0, 49152, (n,), generator=g, dtype=torch.int32),
             "_doc": (torch.arange(lo, lo + n) // 64).int(), "_pos": (torch.arange(lo, lo + n) % 64).int()}
        shards.append(write_shard(root, 0, k, t))
    atomic_write_json(root / MANIFEST, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "complete": True, "model": {"name": "synthetic"},
        "tokenizer": {}, "sites": [SITE], "dims": {SITE: d}, "site_shapes": {SITE: [d]}, "dtype": "fp32",
        "context_length": 64, "world_size": 1, "shard_rows": shard_rows, "total_rows": rows, "harvest": {},
        "shards": shards})


def encode_only(rows: StoreRows, lat: DictionaryLatents) -> float:
    t0 = time.perf_counter()
    n = 0
    for ch in rows.chunks():
        z = lat(ch.acts)
        n += z.shape[0]
    return n / (time.perf_counter() - t0)


def cache_pass(rows: StoreRows, lat: DictionaryLatents, out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    build_cache(rows, lat, out, CacheConfig(progress=False))
    return rows.n_rows / (time.perf_counter() - t0)


CHILD = """
import json, sys, threading, time, torch
from actlab.dictionary import load
from actlab.explain import CacheConfig, DictionaryLatents, StoreRows, build_cache
from actlab.store import ActivationStore
store, sae, out, br, site = sys.argv[1:6]
torch.set_num_threads(1)
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
lat = DictionaryLatents(load(sae))
rows = StoreRows(ActivationStore(store), site, int(br))
base, peak, done = rss(), [0], [False]
def watch():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
t = threading.Thread(target=watch, daemon=True)
t.start()
build_cache(rows, lat, out, CacheConfig(progress=False))
done[0] = True
t.join()
print(json.dumps({"base_kb": base, "peak_kb": max(peak[0], rss())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-rows", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as td:
        root = Path(td)
        build_store(root / "store", a.rows, a.d)
        sae = build(DictConfig(arch="topk", d_in=a.d, d_sae=a.d_sae, k=a.k, site=SITE), seed=0)
        sae.save(root / "sae")
        rows = StoreRows(ActivationStore(root / "store"), SITE, a.batch_rows)
        lat = DictionaryLatents(sae)
        encode_only(rows, lat)   # warm the page cache and the allocator
        enc, cac = [], []
        for _ in range(a.repeats):
            enc.append(encode_only(rows, lat))
            cac.append(cache_pass(rows, lat, root / "cache"))
        e, c = statistics.median(enc), statistics.median(cac)
        cache = LatentCache(root / "cache")
        entries = int(cache.count.sum())
        disk = sum(p.stat().st_size for p in (root / "cache").glob("shard-*.safetensors"))
        r = subprocess.run([sys.executable, "-c", CHILD, str(root / "store"), str(root / "sae"),
                            str(root / "cache2"), str(a.batch_rows), SITE], capture_output=True, text=True, check=True)
        mem = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"store {a.rows} tokens x d={a.d} fp32; TopK SAE {a.d_sae} latents, k={a.k}; chunks of {a.batch_rows} rows; "
          f"threads {torch.get_num_threads()}")
    print(f"encode-only  {e:10.0f} tokens/s   (runs: {', '.join(f'{x:.0f}' for x in enc)})")
    print(f"cache pass   {c:10.0f} tokens/s   (runs: {', '.join(f'{x:.0f}' for x in cac)})")
    print(f"ratio cache / encode-only = {c / e:.3f}  (target >= 0.80)")
    per = disk / entries
    n_shards = len(cache.config["shards"])
    stats_b = a.d_sae * (8 + 4 + 8 + 8 * len(cache.hist[0]))
    print(f"on disk: {disk / 2**20:.1f} MiB in {n_shards} shard(s) for {entries} activations = {per:.2f} bytes per "
          f"activation: 16 B per entry (row i64, latent i32, value f32) + 12 B per token of row tables "
          f"({12 * a.rows / entries:.2f} B per activation at k={a.k}) + each shard's partial statistics "
          f"({stats_b / 2**20:.2f} MiB per shard at {a.d_sae} latents)")
    print(f"RSS during a cache pass run alone: peak {mem['peak_kb'] / 1024:.0f} MiB, {mem['base_kb'] / 1024:.0f} MiB "
          f"before it (imports + the SAE, whose weights are {2 * a.d * a.d_sae * 4 / 2**20:.0f} MiB): "
          f"+{(mem['peak_kb'] - mem['base_kb']) / 1024:.0f} MiB for the pass")
    m = 1_000_000
    ent = m * a.k
    shards = -(-ent // (1 << 20))
    tot = ent * 16 + m * 12 + shards * stats_b
    print(f"extrapolated to 1M tokens (k={a.k}: {ent} activations, {shards} shards of 2^20 entries): "
          f"{tot / 2**30:.2f} GiB on disk = {tot / ent:.1f} B per activation; memory flat: one shard buffer "
          f"(2^20 entries, 16 MiB + its row tables) plus the chunk being encoded ({a.batch_rows} x {a.d_sae} fp32 = "
          f"{a.batch_rows * a.d_sae * 4 / 2**20:.0f} MiB dense latents)")


if __name__ == "__main__":
    main()
