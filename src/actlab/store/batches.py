"""The shuffled batch iterator behind ``ActivationStore.batches``.

Shards are visited in a seeded random order, forming one virtual row stream; with ``world`` > 1 each rank takes an
equal contiguous part of it (the remainder rows are dropped so every rank yields the same number of batches). The
stream is cut into windows of ``buffer_rows`` rows. A loader thread opens each window one ahead of the one being
served: it asks the kernel to read that window and the next in the background (``POSIX_FADV_WILLNEED``), maps the
window's segments and populates the maps in file order (``MADV_POPULATE_READ``), so a store far larger than RAM
streams at disk speed with no random page faults. The window's rows are permuted and every batch is gathered
straight from the page cache (``torch.index_select`` in serial-sized calls, GIL released). Which rows share a batch is
uniformly random within a window; inside a batch rows come in storage order, which a mean-over-batch loss cannot
see (``shuffle_within=True`` re-randomizes it at the cost of a copy). Process memory: a few batches; the two mapped
windows are page cache (shared, clean, unmapped when done). A shard tensor mapped whole is crc32-checked on the
mapped bytes (no second read); a partial one (``world`` > 1) is checked separately, once per ActivationStore object.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from actlab.store.format import META_KEYS, ST_DTYPES, crc32

WINDOW_BYTES = 64 << 20
"""Default window (shuffle buffer) size in bytes when ``buffer_rows`` is not given; two are mapped at a time."""


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


_SERIAL_ELEMS = 16384  # below ATen's parallel grain (32768 elements): index_select runs on the calling thread
_MADV_POPULATE_READ = 22  # Linux >= 5.14
_libc = None


def _populate(arr: np.ndarray) -> None:
    """Map every page of a file-backed array now, reading it in order (``MADV_POPULATE_READ``; through ctypes, so
    the GIL is released): later random gathers never wait on a page fault. A no-op where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):  # pragma: no cover - no libc madvise (non-Linux)
            _libc = False
    if not _libc or arr.nbytes == 0:
        return
    a = arr.ctypes.data
    start = a - a % mmap.PAGESIZE
    _libc.madvise(start, a + arr.nbytes - start, _MADV_POPULATE_READ)  # failure (old kernel) only costs speed


class _Window:
    """A window's shard segments, memory-mapped for its lifetime only and populated in order, seen as one
    indexable range of ``[rows, words]`` integer rows; batches are gathered straight from the page cache."""

    def __init__(self, store, site: str, win: list[tuple[int, int, int]], row_bytes: int,
                 ahead: list[tuple[int, int, int]] = ()):
        paths = {i: store._shard_file(i) for i, _, _ in [*win, *ahead]}  # checked once: present, full size
        for i, a, b in [*win, *ahead]:  # the kernel reads this window and the next in the background
            _willneed(paths[i], store.shards[i]["tensors"][site]["offsets"][0] + a * row_bytes, (b - a) * row_bytes)
        word = _word(row_bytes)
        self.maps: list[torch.Tensor] = []
        checks = []  # crc32 of whole mapped tensors, computed on a second thread while the next segment is read
        with ThreadPoolExecutor(1, thread_name_prefix="actlab-store-crc") as crc:
            for i, a, b in win:
                t = store.shards[i]["tensors"][site]
                m = np.memmap(paths[i], dtype=np.uint8, mode="r",
                              offset=t["offsets"][0] + a * row_bytes, shape=((b - a) * row_bytes,))
                _populate(m)
                if store.verify_reads and (i, site) not in store._verified:
                    if a == 0 and b == t["shape"][0]:  # whole tensor mapped: check the bytes we will read
                        checks.append((i, crc.submit(crc32, m)))
                    else:
                        store._ensure_verified(i, site)
                with warnings.catch_warnings():  # read-only map: the gathers only read it
                    warnings.simplefilter("ignore", UserWarning)
                    self.maps.append(torch.from_numpy(m).view(word).view(b - a, -1))
        for i, f in checks:
            store._mark_verified(i, site, f.result())
        self.starts = np.cumsum([0] + [b - a for _, a, b in win])
        self.n = int(self.starts[-1])
        self.words = self.maps[0].shape[1]
        self.chunk = max(1, _SERIAL_ELEMS // self.words)

    def gather(self, sel: torch.Tensor) -> torch.Tensor:
        """Rows ``sel`` (sorted ascending) as a new ``[len(sel), words]`` tensor."""
        out = _empty((len(sel), self.words), self.maps[0].dtype)
        cuts = np.searchsorted(sel.numpy(), self.starts)
        for s, m in enumerate(self.maps):
            lo, hi = int(cuts[s]), int(cuts[s + 1])
            local = sel[lo:hi] - int(self.starts[s])
            for a in range(0, hi - lo, self.chunk):  # serial-sized calls: no OpenMP workers spinning beside
                b = min(a + self.chunk, hi - lo)     # the loader thread (they cost more than they give here)
                torch.index_select(m, 0, local[a:b], out=out[lo + a: lo + b])
        return out

    def slice(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` in storage order, copied."""
        out = _empty((hi - lo, self.words), self.maps[0].dtype)
        for s, m in enumerate(self.maps):
            a, b = max(lo, int(self.starts[s])), min(hi, int(self.starts[s + 1]))
            if b > a:
                out[a - lo: b - lo] = m[a - int(self.starts[s]): b - int(self.starts[s])]
        return out


def _take(w: _Window, idx: torch.Tensor | None, lo: int, hi: int, within: bool, g: torch.Generator
          ) -> torch.Tensor:
    """Rows ``idx[lo:hi]`` of the window (storage order inside the batch unless ``within``); ``lo:hi`` when not
    shuffling."""
    if idx is None:
        return w.slice(lo, hi)
    out = w.gather(idx[lo:hi].sort().values)
    return out[torch.randperm(hi - lo, generator=g)] if within else out


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
        def load(k: int):  # window k is opened (read in order, checked) while window k - 1 is served
            return loader.submit(_Window, store, site, wins[k], row_bytes, wins[k + 1] if k + 1 < len(wins) else ())

        nxt = load(0) if wins else None
        for k in range(len(wins)):
            w = nxt.result()
            nxt = load(k + 1) if k + 1 < len(wins) else None
            n = w.n
            idx = torch.from_numpy(_perm(n, block_rows, g)) if shuffle else None
            pos = 0
            if n_carry:  # complete the partial batch with the first rows of this window
                k2 = min(batch_size - n_carry, n)
                carry.append(_take(w, idx, 0, k2, False, g))
                n_carry += k2
                pos = k2
                if n_carry == batch_size:
                    yield _to_out(torch.cat(carry), stored, d, dtype)
                    carry, n_carry = [], 0
            while n - pos >= batch_size:
                yield _to_out(_take(w, idx, pos, pos + batch_size, shuffle_within, g), stored, d, dtype)
                pos += batch_size
            if n > pos:
                carry.append(_take(w, idx, pos, n, False, g))
                n_carry += n - pos
            del w  # unmaps the window
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
