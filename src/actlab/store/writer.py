"""The shard writer: a background thread that fills fixed-size shards and writes them atomically, so the model's
forward pass overlaps with serialization, checksums and disk writes. Memory: one shard buffer plus a bounded queue."""
from __future__ import annotations

import json
import logging
import os
import queue
import struct
import threading
from pathlib import Path
from typing import Callable

import torch

from actlab.artifact import fsync_dir
from actlab.store.format import SHARD, ST_CODES, StoreError, crc_of, read_header

log = logging.getLogger(__name__)


def encode_header(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors header (length prefix + JSON padded to 8 bytes) for tensors laid out in the given order."""
    header, at = {}, 0
    for k, t in tensors.items():
        n = t.numel() * t.element_size()
        header[k] = {"dtype": ST_CODES[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a plain safetensors file (header, then each tensor's bytes) with the umask's mode and fsync it: the
    shard format's own raw writer (FORMAT.md), the single place shard bytes hit the disk (tests patch it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(encode_header(tensors))
        for t in tensors.values():
            if t.numel():
                f.write(memoryview(t.contiguous().view(torch.uint8).numpy()))
        f.flush()
        os.fsync(f.fileno())


def write_shard(root: Path, rank: int, index: int, tensors: dict[str, torch.Tensor]) -> dict:
    """Write one shard under a temporary name, rename it when complete; returns its manifest entry."""
    name = SHARD.format(rank=rank, index=index)
    tmp = root / f".{name}.tmp"
    try:
        _save(tensors, tmp)
        header, data_start = read_header(tmp)
        entry = {"file": name, "rank": rank, "index": index, "rows": int(next(iter(tensors.values())).shape[0]),
                 "bytes": tmp.stat().st_size, "tensors": {}}
        for k, t in tensors.items():
            h = header[k]
            a, b = h["data_offsets"]
            entry["tensors"][k] = {"dtype": h["dtype"], "shape": h["shape"],
                                   "offsets": [data_start + a, data_start + b], "crc32": crc_of(t)}
        os.replace(tmp, root / name)
        fsync_dir(root)
        return entry
    except BaseException as e:
        if tmp.exists():
            tmp.unlink()
        if isinstance(e, OSError):
            raise StoreError(f"writing shard {name} to {root} failed: {e.strerror or e}. The shards written before "
                             f"it are complete and kept; free space and rerun the same command to resume.") from e
        raise


class ShardWriter:
    """Receives row chunks ``{key: [n, ...]}`` (sites plus token/doc/pos keys), writes shards of ``shard_rows``.

    ``on_shard(entry)`` runs in the writer thread after each shard is renamed into place (it records progress).
    Errors in the thread are re-raised in the caller at the next ``put`` or at ``close``.
    """

    def __init__(self, root: Path, rank: int, start_index: int, shard_rows: int, example: dict[str, torch.Tensor],
                 on_shard: Callable[[dict], None], queue_size: int = 4):
        self.root, self.rank, self.index, self.shard_rows = Path(root), rank, start_index, shard_rows
        self.on_shard = on_shard
        self.buf = {k: torch.empty((shard_rows, *v.shape[1:]), dtype=v.dtype) for k, v in example.items()}
        self.fill = 0
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="actlab-shard-writer", daemon=True)
        self.thread.start()

    def _flush(self) -> None:
        if self.fill == 0:
            return
        tensors = {k: v[: self.fill] for k, v in self.buf.items()}
        entry = write_shard(self.root, self.rank, self.index, tensors)
        self.on_shard(entry)
        self.index += 1
        self.fill = 0

    def _take(self, chunk: dict[str, torch.Tensor]) -> None:
        n = next(iter(chunk.values())).shape[0]
        start = 0
        while start < n:
            k = min(n - start, self.shard_rows - self.fill)
            for key, v in chunk.items():
                self.buf[key][self.fill: self.fill + k].copy_(v[start: start + k])
            self.fill += k
            start += k
            if self.fill == self.shard_rows:
                self._flush()

    def _run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is None:
                    self._flush()
                    return
                if self._stop.is_set():
                    return
                self._take(item)
        except BaseException as e:  # noqa: BLE001 - surfaced in the caller
            self.error = e
            self._stop.set()
            while True:  # drain so a blocked put() wakes up
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    break

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, chunk: dict[str, torch.Tensor]) -> None:
        while True:
            self._check()
            try:
                self.q.put(chunk, timeout=0.2)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    self._check()
                    raise StoreError("the shard writer thread stopped unexpectedly")

    def close(self) -> None:
        """Write the last (partial) shard and wait for the thread; re-raise its error if any."""
        self.put(None)  # type: ignore[arg-type]
        self.thread.join()
        self._check()

    def abort(self) -> None:
        """Stop without writing the partial shard (used when the harvest fails)."""
        self._stop.set()
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join(timeout=30)
