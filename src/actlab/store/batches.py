"""The shuffled batch iterator behind ``ActivationStore.batches``.

Shards are visited in a seeded random order, forming one virtual row stream; with ``world`` > 1 each rank takes an
equal contiguous part of it (the remainder rows are dropped so every rank yields the same number of batches). The
stream is cut into windows of whole shard segments, up to ``buffer_rows`` rows each (a shard larger than a window is
split). A loader thread reads each window, one ahead of the one being served, into one of two reused buffers with
plain sequential reads, having asked the kernel to read the next two windows in the background
(``POSIX_FADV_WILLNEED``; they land in the page cache, not in process memory),
and computes the crc32 of every whole tensor piece by piece as its bytes arrive (no second read). The
window's rows are permuted and every batch is one serial gather (``index_select``, GIL released) from the buffer:
which rows share a batch, and their order, are uniformly random within the window.

Why buffers and not memory maps: mapping the page cache costs a page fault (or a populate) per 4 KiB page, about as
much as copying the bytes, while gathers from a huge-page buffer skip most TLB misses. Process memory: the two window
buffers and a few batches; the shards themselves are only ever read in file order.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from actlab.store.format import META_KEYS, ST_DTYPES, crc32, read_range
from actlab.utils import prefetch as run_ahead

WINDOW_BYTES = 64 << 20
"""Default window (shuffle buffer) size in bytes when ``buffer_rows`` is not given; two buffers are held."""

_AHEAD = 2  # windows the kernel is asked to read ahead of the one being read (page cache, not process memory)
_PIECE = 1 << 20  # bytes per read call: small enough that the crc32 that follows reads it from cache


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
    """Segments grouped into windows of at most ``size`` rows: whole segments while they fit (so a tensor's crc can
    be checked on the bytes read), a segment longer than ``size`` split into window-sized pieces."""
    out, cur, fill = [], [], 0
    for i, a, b in segs:
        while a < b:
            if fill and fill + b - a > size:
                out.append(cur)
                cur, fill = [], 0
            k = min(b - a, size)  # the whole segment when it fits beside others
            cur.append((i, a, a + k))
            fill += k
            a += k
            if fill >= size:
                out.append(cur)
                cur, fill = [], 0
    if cur:
        out.append(cur)
    return out


def _word(row_bytes: int) -> torch.dtype:
    """The widest integer type dividing a row, so a gather moves rows in as few elements as possible."""
    return next(t for t, k in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2), (torch.uint8, 1))
                if row_bytes % k == 0)


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A new tensor on memory from numpy's allocator: glibc recycles same-sized blocks, where torch's allocator
    maps fresh pages per batch (page faults + zeroing, ~1/3 of a gather's cost here)."""
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype)) \
        if dtype != torch.bfloat16 else torch.from_numpy(np.empty(shape, np.int16)).view(torch.bfloat16)


def _to_out(rows: torch.Tensor, stored: torch.dtype, d: int, dtype: torch.dtype) -> torch.Tensor:
    """Gathered rows (integer words) as ``[n, d]`` in ``dtype``."""
    t = rows.view(stored).reshape(rows.shape[0], d)
    return t if dtype == stored else _empty(tuple(t.shape), dtype).copy_(t)


def _willneed(path, offset: int, length: int) -> None:
    """Start asynchronous readahead of a file range (no-op where posix_fadvise is missing)."""
    if hasattr(os, "posix_fadvise") and length > 0:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


class _Window:
    """A window's rows, read into a reused buffer as one ``[1, rows, words]`` integer tensor."""

    def __init__(self, store, site: str, win: list[tuple[int, int, int]], row_bytes: int, buf: np.ndarray,
                 ahead: list[tuple[int, int, int]] = ()):
        paths = {i: store._shard_file(i) for i, _, _ in [*win, *ahead]}  # checked once: present, full size
        for i, a, b in ahead:  # the kernel reads the next windows in the background while this one is read
            _willneed(paths[i], store.shards[i]["tensors"][site]["offsets"][0] + a * row_bytes, (b - a) * row_bytes)
        mv = memoryview(buf)
        off = 0
        for i, a, b in win:
            t = store.shards[i]["tensors"][site]
            crc = None  # the running crc32 when the whole tensor is read here: checked on the bytes as they come
            if store.verify_reads and (i, site) not in store._verified:
                if a == 0 and b == t["shape"][0]:
                    crc = 0
                else:
                    store._ensure_verified(i, site)
            n = (b - a) * row_bytes
            for piece in read_range(paths[i], t["offsets"][0] + a * row_bytes, n, mv[off: off + n],
                                    store.shards[i]["file"], _PIECE):
                if crc is not None:
                    crc = crc32(piece, crc)
            if crc is not None:
                store._mark_verified(i, site, crc)
            off += n
        self.n = off // row_bytes
        self.rows = torch.from_numpy(buf[:off]).view(_word(row_bytes)).view(1, self.n, -1)

    def gather(self, sel: torch.Tensor) -> torch.Tensor:
        """Rows ``sel`` (any order) as a new ``[len(sel), words]`` tensor: one serial memcpy per row (the dim-1
        path of ``index_select``: no OpenMP workers spinning beside the loader)."""
        out = _empty((1, len(sel), self.rows.shape[2]), self.rows.dtype)
        torch.index_select(self.rows, 1, sel, out=out)
        return out[0]

    def slice(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` in storage order, copied (the buffer is reused)."""
        return _empty((hi - lo, self.rows.shape[2]), self.rows.dtype).copy_(self.rows[0, lo:hi])


def _take(w: _Window, idx: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
    """Rows ``idx[lo:hi]`` of the window; ``lo:hi`` when not shuffling."""
    return w.slice(lo, hi) if idx is None else w.gather(idx[lo:hi])


def _perm(n: int, block_rows: int, g: torch.Generator) -> np.ndarray:
    """A random order of range(n) that keeps runs of ``block_rows`` consecutive rows together."""
    if block_rows <= 1:
        return torch.randperm(n, generator=g).numpy()
    nb = -(-n // block_rows)
    idx = (torch.randperm(nb, generator=g).numpy()[:, None] * block_rows + np.arange(block_rows)).reshape(-1)
    return idx[idx < n] if n % block_rows else idx


def _batches(store, site, batch_size, shuffle, seed, buffer_rows, dtype, drop_last, rank, world, block_rows=1):
    t0 = store.shards[0]["tensors"][site]
    np_dtype, stored = ST_DTYPES[t0["dtype"]]
    d = store.dims.get(site) or int(np.prod(t0["shape"][1:]))
    row_bytes = np.dtype(np_dtype).itemsize * d
    window = max(batch_size, buffer_rows or WINDOW_BYTES // row_bytes)
    wins = _windows(_segments(store, shuffle, seed, rank, world), window)
    cap = max((sum(b - a for _, a, b in w) for w in wins), default=0) * row_bytes
    bufs: list[np.ndarray] = []  # two, allocated on first use: window k is read into bufs[k % 2]
    g = torch.Generator().manual_seed(seed * 1_000_003 + rank + 1)
    carry: list[torch.Tensor] = []  # < batch_size rows left over from the previous window
    n_carry = 0
    with ThreadPoolExecutor(1, thread_name_prefix="actlab-store-load") as loader:
        def load(k: int) -> Future:  # window k is read while window k - 1 is served (its buffer was k - 2's)
            if len(bufs) <= k % 2:
                bufs.append(np.empty(cap, np.uint8))
            return loader.submit(_Window, store, site, wins[k], row_bytes, bufs[k % 2],
                                 [s for later in wins[k + 1: k + 1 + _AHEAD] for s in later])

        nxt = load(0) if wins else None
        for k in range(len(wins)):
            w = nxt.result()
            nxt = load(k + 1) if k + 1 < len(wins) else None
            n = w.n
            idx = torch.from_numpy(_perm(n, block_rows, g)) if shuffle else None
            pos = 0
            if n_carry:  # complete the partial batch with the first rows of this window
                k2 = min(batch_size - n_carry, n)
                carry.append(_take(w, idx, 0, k2))
                n_carry += k2
                pos = k2
                if n_carry == batch_size:
                    yield _to_out(torch.cat(carry), stored, d, dtype)
                    carry, n_carry = [], 0
            while n - pos >= batch_size:
                yield _to_out(_take(w, idx, pos, pos + batch_size), stored, d, dtype)
                pos += batch_size
            if n > pos:
                carry.append(_take(w, idx, pos, n))
                n_carry += n - pos
            del w
    if n_carry and not drop_last:
        yield _to_out(torch.cat(carry), stored, d, dtype)


def iterate(store, site: str, batch_size: int, shuffle: bool, seed: int, buffer_rows: int | None, dtype: torch.dtype,
            drop_last: bool, rank: int, world: int, prefetch: int = 2, block_rows: int = 1) -> Iterator[torch.Tensor]:
    if site in META_KEYS:
        raise KeyError(f"{site!r} is row metadata, not a site")
    store._check_key(site)
    if batch_size < 1 or (buffer_rows is not None and buffer_rows < 1) or block_rows < 1:
        raise ValueError(f"batch_size and buffer_rows must be >= 1; got {batch_size}, {buffer_rows}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    if not store.shards:
        return iter(())
    gen = _batches(store, site, batch_size, shuffle, seed, buffer_rows, dtype, drop_last, rank, world, block_rows)
    return run_ahead(gen, prefetch) if prefetch > 0 else gen
