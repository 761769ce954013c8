"""The shuffled batch iterator behind ``ActivationStore.batches``.

Shards are visited in a seeded random order, forming one virtual row stream; with ``world`` > 1 each rank takes an
equal contiguous part of it (the remainder rows are dropped so every rank yields the same number of batches). The
stream is read in windows of ``buffer_rows // 2`` contiguous rows (sequential, memory-mapped reads); each window is
permuted and served as batches while a background thread reads the next window. So at most ``buffer_rows`` rows
(stored dtype) plus one batch are held, and disk reads stay sequential.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from actlab.store.format import META_KEYS


def _segments(store, shuffle: bool, seed: int, rank: int, world: int) -> list[tuple[int, int, int]]:
    n = len(store.shards)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else range(n)
    segs = [(i, 0, store.shards[i]["rows"]) for i in order if store.shards[i]["rows"]]
    if world == 1:
        return segs
    total = sum(b - a for _, a, b in segs)
    per = total // world
    lo, hi = rank * per, (rank + 1) * per
    out, pos = [], 0
    for i, a, b in segs:
        s, e = max(a, lo - pos + a), min(b, hi - pos + a)
        if e > s:
            out.append((i, s, e))
        pos += b - a
    return out


def _windows(segs: list[tuple[int, int, int]], size: int) -> list[list[tuple[int, int, int]]]:
    out, cur, fill = [], [], 0
    for i, a, b in segs:
        while a < b:
            k = min(b - a, size - fill)
            cur.append((i, a, a + k))
            fill += k
            a += k
            if fill == size:
                out.append(cur)
                cur, fill = [], 0
    if cur:
        out.append(cur)
    return out


def iterate(store, site: str, batch_size: int, shuffle: bool, seed: int, buffer_rows: int, dtype: torch.dtype,
            drop_last: bool, rank: int, world: int) -> Iterator[torch.Tensor]:
    if site in META_KEYS:
        raise KeyError(f"{site!r} is row metadata, not a site")
    store._check_key(site)
    if batch_size < 1 or buffer_rows < 2:
        raise ValueError(f"batch_size must be >= 1 and buffer_rows >= 2; got {batch_size}, {buffer_rows}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    if not store.shards:
        return
    window = max(batch_size, buffer_rows // 2)
    wins = _windows(_segments(store, shuffle, seed, rank, world), window)
    stored = store._torch_dtype(0, site)
    g = torch.Generator().manual_seed(seed * 1_000_003 + rank + 1)

    def load(win) -> torch.Tensor:
        first = store._map(win[0][0], site)
        out = np.empty((sum(b - a for _, a, b in win), *first.shape[1:]), dtype=first.dtype)
        k = 0
        for i, a, b in win:
            out[k: k + b - a] = store._map(i, site)[a:b]
            k += b - a
        t = torch.from_numpy(out)
        return t.view(torch.bfloat16) if stored == torch.bfloat16 else t

    carry = None
    with ThreadPoolExecutor(1, thread_name_prefix="actlab-store-read") as ex:
        fut = ex.submit(load, wins[0]) if wins else None
        for j in range(len(wins)):
            buf = fut.result()
            fut = ex.submit(load, wins[j + 1]) if j + 1 < len(wins) else None
            if carry is not None and len(carry):
                buf = torch.cat([carry, buf])
            n_full = len(buf) // batch_size
            if shuffle:
                perm = torch.randperm(len(buf), generator=g)
                for b in range(n_full):
                    yield buf.index_select(0, perm[b * batch_size:(b + 1) * batch_size]).to(dtype)
                carry = buf.index_select(0, perm[n_full * batch_size:])
            else:
                for b in range(n_full):
                    yield buf[b * batch_size:(b + 1) * batch_size].to(dtype, copy=True)
                carry = buf[n_full * batch_size:].clone()
    if carry is not None and len(carry) and not drop_last:
        yield carry.to(dtype)
