"""The shuffled batch iterator behind ``ActivationStore.batches``.

Shards are visited in a seeded random order, forming one virtual row stream; with ``world`` > 1 each rank takes an
equal contiguous part of it (the remainder rows are dropped so every rank yields the same number of batches). The
stream is cut into windows of ``buffer_rows`` rows. A loader thread reads each window front to back with large
sequential reads into a RAM buffer (so a store far larger than RAM streams at disk speed: no random page faults),
one window ahead of the one being served; the window's rows are permuted and every batch is gathered from the
buffer (``torch.index_select``, multi-threaded, GIL released). Which rows share a batch is uniformly random within a
window; inside a batch rows come in storage order, which a mean-over-batch loss cannot see (``shuffle_within=True``
re-randomizes it at the cost of a copy). Memory: two window buffers plus a few prefetched batches.
A shard tensor read whole is crc32-checked on the bytes just read (no second pass); a partial one (``world`` > 1)
is checked separately, once per ActivationStore object.
"""
from __future__ import annotations

import queue
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from actlab.store.format import META_KEYS, ST_DTYPES, StoreCorruptError

WINDOW_BYTES = 256 << 20
"""Default window (shuffle buffer) size in bytes when ``buffer_rows`` is not given; two are alive at a time."""


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


def _word(row_bytes: int) -> torch.dtype:
    """The widest integer type dividing a row, so a gather moves rows in as few elements as possible."""
    return next(t for t, k in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2), (torch.uint8, 1))
                if row_bytes % k == 0)


def _to_out(rows: torch.Tensor, stored: torch.dtype, d: int, dtype: torch.dtype) -> torch.Tensor:
    """Gathered rows (integer words) as ``[n, d]`` in ``dtype``."""
    t = rows.view(stored).reshape(rows.shape[0], d)
    return t if dtype == stored else t.to(dtype)


def _load_window(store, site: str, win: list[tuple[int, int, int]], row_bytes: int) -> torch.Tensor:
    """Read a window's segments sequentially into one ``[n, row_bytes / word]`` buffer; crc-check whole tensors."""
    n = sum(b - a for _, a, b in win)
    buf = torch.empty(n * row_bytes, dtype=torch.uint8)
    mv = memoryview(buf.numpy())
    pos = 0
    for i, a, b in win:
        t = store.shards[i]["tensors"][site]
        whole = a == 0 and b == t["shape"][0]
        check = store.verify_reads and (i, site) not in store._verified
        if check and not whole:
            store._ensure_verified(i, site)
        f = store._shard_file(i)
        want = (b - a) * row_bytes
        with open(f, "rb", buffering=0) as fh:
            fh.seek(t["offsets"][0] + a * row_bytes)
            got = 0
            while got < want:
                k = fh.readinto(mv[pos + got: pos + want])
                if not k:
                    raise StoreCorruptError(f"shard {store.shards[i]['file']}: unexpected end of file")
                got += k
        if check and whole:
            store._mark_verified(i, site, zlib.crc32(mv[pos: pos + want]))
        pos += want
    return buf.view(_word(row_bytes)).view(n, -1)


def _perm(n: int, block_rows: int, g: torch.Generator) -> np.ndarray:
    """A random order of range(n) that keeps runs of ``block_rows`` consecutive rows together."""
    if block_rows <= 1:
        return torch.randperm(n, generator=g).numpy()
    nb = -(-n // block_rows)
    idx = (torch.randperm(nb, generator=g).numpy()[:, None] * block_rows + np.arange(block_rows)).reshape(-1)
    return idx[idx < n] if n % block_rows else idx


def _batches(store, site, batch_size, shuffle, seed, buffer_rows, dtype, drop_last, rank, world, block_rows=1,
             shuffle_within=False):
    t0 = store.shards[0]["tensors"][site]
    np_dtype, stored = ST_DTYPES[t0["dtype"]]
    d = store.dims.get(site) or int(np.prod(t0["shape"][1:]))
    row_bytes = np.dtype(np_dtype).itemsize * d
    window = max(batch_size, buffer_rows or WINDOW_BYTES // row_bytes)
    wins = _windows(_segments(store, shuffle, seed, rank, world), window)
    g = torch.Generator().manual_seed(seed * 1_000_003 + rank + 1)
    carry: list[torch.Tensor] = []  # < batch_size rows left over from the previous window
    n_carry = 0
    with ThreadPoolExecutor(1, thread_name_prefix="actlab-store-load") as loader:
        nxt = loader.submit(_load_window, store, site, wins[0], row_bytes) if wins else None
        for k in range(len(wins)):
            buf = nxt.result()
            nxt = loader.submit(_load_window, store, site, wins[k + 1], row_bytes) if k + 1 < len(wins) else None
            n = buf.shape[0]
            idx = torch.from_numpy(_perm(n, block_rows, g)) if shuffle else None

            def take(lo: int, hi: int, within: bool = False) -> torch.Tensor:
                if idx is None:
                    return buf[lo:hi]
                sel = idx[lo:hi].sort().values
                if within:
                    sel = sel[torch.randperm(hi - lo, generator=g)]
                return buf.index_select(0, sel)

            pos = 0
            if n_carry:  # complete the partial batch with the first rows of this window
                k2 = min(batch_size - n_carry, n)
                carry.append(take(0, k2).clone())
                n_carry += k2
                pos = k2
                if n_carry == batch_size:
                    yield _to_out(torch.cat(carry), stored, d, dtype)
                    carry, n_carry = [], 0
            while n - pos >= batch_size:
                out = _to_out(take(pos, pos + batch_size, shuffle_within), stored, d, dtype)
                yield out if shuffle or dtype != stored else out.clone()  # a view would pin the window buffer
                pos += batch_size
            if n > pos:
                carry.append(take(pos, n).clone())
                n_carry += n - pos
            del buf
    if n_carry and not drop_last:
        yield _to_out(torch.cat(carry), stored, d, dtype)


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


def iterate(store, site: str, batch_size: int, shuffle: bool, seed: int, buffer_rows: int | None, dtype: torch.dtype,
            drop_last: bool, rank: int, world: int, prefetch: int = 2, block_rows: int = 1,
            shuffle_within: bool = False) -> Iterator[torch.Tensor]:
    if site in META_KEYS:
        raise KeyError(f"{site!r} is row metadata, not a site")
    store._check_key(site)
    if batch_size < 1 or (buffer_rows is not None and buffer_rows < 1) or block_rows < 1:
        raise ValueError(f"batch_size and buffer_rows must be >= 1; got {batch_size}, {buffer_rows}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    if not store.shards:
        return iter(())
    gen = _batches(store, site, batch_size, shuffle, seed, buffer_rows, dtype, drop_last, rank, world, block_rows,
                   shuffle_within)
    return _Prefetch(gen, prefetch) if prefetch > 0 else gen
