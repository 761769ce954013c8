"""The shuffled batch iterator behind ``ActivationStore.batches``.

Shards are visited in a seeded random order, forming one virtual row stream; with ``world`` > 1 each rank takes an
equal contiguous part of it (the remainder rows are dropped so every rank yields the same number of batches). The
stream is cut into windows of ``buffer_rows`` rows; each window's rows are permuted and every batch is gathered
straight from the memory-mapped shards (one copy: mapped page cache -> batch; the indices of a batch are sorted so
reads go forward through each shard). Which rows share a batch is random; within a batch rows come in storage
order, which a mean-over-batch loss cannot see (``shuffle_within=True`` re-randomizes it at the cost of a copy). A background thread prepares the
next batches while the caller uses the current one. Process memory stays bounded by a few batches plus the
window's index permutation (8 bytes per row); the shards themselves are page cache, shared and reclaimable.
Each shard tensor is crc32-checked once per ActivationStore object, on first touch.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import torch

from actlab.store.format import META_KEYS, ST_DTYPES


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


def _to_torch(rows: np.ndarray, stored: torch.dtype, np_dtype, d: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows (void records) as ``[n, d]`` in ``dtype``; bf16 -> fp32 by a 16-bit shift (exact, faster than a cast)."""
    n = rows.shape[0]
    if stored == torch.bfloat16 and dtype == torch.float32:
        u = rows.view(np.uint16).reshape(n, d)
        return torch.from_numpy(np.left_shift(u.astype(np.uint32), 16).view(np.float32))
    t = torch.from_numpy(rows.view(np_dtype).reshape(n, d))
    if stored == torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t if dtype == stored else t.to(dtype)


class _Window:
    """Rows of a few shard segments seen as one indexable range; gathers batches straight from the maps."""

    def __init__(self, store, site: str, win: list[tuple[int, int, int]], void: np.dtype):
        self.maps = [store._map(i, site).view(void).reshape(-1)[a:b] for i, a, b in win]
        self.starts = np.cumsum([0] + [b - a for _, a, b in win])
        self.n = int(self.starts[-1])

    def gather(self, sel: np.ndarray, out: np.ndarray, shuffle_within: np.ndarray | None) -> np.ndarray:
        if len(self.maps) == 1 and not len(sel) == 0:
            srt = np.sort(sel)
            np.take(self.maps[0], srt, out=out, mode="clip")
        else:
            srt = np.sort(sel)
            cuts = np.searchsorted(srt, self.starts)
            for s, m in enumerate(self.maps):
                lo, hi = cuts[s], cuts[s + 1]
                if hi > lo:
                    np.take(m, srt[lo:hi] - self.starts[s], out=out[lo:hi], mode="clip")
        return out if shuffle_within is None else np.take(out, shuffle_within, mode="clip")

    def slice(self, lo: int, hi: int) -> np.ndarray:
        parts = []
        for s, m in enumerate(self.maps):
            a, b = max(lo, self.starts[s]), min(hi, self.starts[s + 1])
            if b > a:
                parts.append(m[a - self.starts[s]: b - self.starts[s]])
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def _perm(n: int, block_rows: int, g: torch.Generator) -> np.ndarray:
    """A random order of range(n) that keeps runs of ``block_rows`` consecutive rows together."""
    if block_rows <= 1:
        return torch.randperm(n, generator=g).numpy()
    nb = -(-n // block_rows)
    idx = (torch.randperm(nb, generator=g).numpy()[:, None] * block_rows + np.arange(block_rows)).reshape(-1)
    return idx[idx < n] if n % block_rows else idx


def _batches(store, site, batch_size, shuffle, seed, buffer_rows, dtype, drop_last, rank, world, block_rows=1,
             shuffle_within=False):
    window = max(batch_size, buffer_rows)
    wins = _windows(_segments(store, shuffle, seed, rank, world), window)
    t0 = store.shards[0]["tensors"][site]
    np_dtype, stored = ST_DTYPES[t0["dtype"]]
    d = store.dims.get(site) or int(np.prod(t0["shape"][1:]))
    void = np.dtype((np.void, np.dtype(np_dtype).itemsize * d))
    g = torch.Generator().manual_seed(seed * 1_000_003 + rank + 1)
    carry = np.empty(0, dtype=void)  # < batch_size rows left over from the previous window
    for win in wins:
        w = _Window(store, site, win, void)
        idx = _perm(w.n, block_rows, g) if shuffle else None
        pos = 0
        if len(carry):  # complete the partial batch with the first rows of this window
            k = min(batch_size - len(carry), w.n)
            part = w.gather(idx[:k], np.empty(k, void), None) if shuffle else w.slice(0, k)
            carry = np.concatenate([carry, part])
            pos = k
            if len(carry) == batch_size:
                yield _to_torch(carry, stored, np_dtype, d, dtype)
                carry = np.empty(0, dtype=void)
        while w.n - pos >= batch_size:
            if shuffle:
                within = torch.randperm(batch_size, generator=g).numpy() if shuffle_within else None
                out = w.gather(idx[pos: pos + batch_size], np.empty(batch_size, void), within)
            else:
                out = w.slice(pos, pos + batch_size)
            yield _to_torch(out, stored, np_dtype, d, dtype)
            pos += batch_size
        if w.n > pos:
            rest = w.gather(idx[pos:], np.empty(w.n - pos, void), None) if shuffle else w.slice(pos, w.n)
            carry = np.concatenate([carry, rest])
    if len(carry) and not drop_last:
        yield _to_torch(carry, stored, np_dtype, d, dtype)


class _Prefetch:
    """Runs a generator in a background thread, ``depth`` items ahead; errors re-raised in the consumer."""

    _END = object()

    def __init__(self, gen, depth: int = 2):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.gen = gen
        self.t = threading.Thread(target=self._run, name="actlab-store-batches", daemon=True)
        self.t.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self.gen:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            self._put(e)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.q.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()

    def __del__(self):
        self.stop.set()


def iterate(store, site: str, batch_size: int, shuffle: bool, seed: int, buffer_rows: int, dtype: torch.dtype,
            drop_last: bool, rank: int, world: int, prefetch: int = 2, block_rows: int = 1,
            shuffle_within: bool = False) -> Iterator[torch.Tensor]:
    if site in META_KEYS:
        raise KeyError(f"{site!r} is row metadata, not a site")
    store._check_key(site)
    if batch_size < 1 or buffer_rows < 1 or block_rows < 1:
        raise ValueError(f"batch_size and buffer_rows must be >= 1; got {batch_size}, {buffer_rows}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    if not store.shards:
        return iter(())
    gen = _batches(store, site, batch_size, shuffle, seed, buffer_rows, dtype, drop_last, rank, world, block_rows,
                   shuffle_within)
    return _Prefetch(gen, prefetch) if prefetch > 0 else gen
