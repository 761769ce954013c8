"""``ActivationStore``: memory-mapped reader of a harvested store: random row access, token/doc/position lookup,
and a shuffled batch iterator with a bounded buffer for training. Every tensor region is checked against its crc32
the first time it is touched (``verify_reads``), so a corrupted shard fails loudly, naming the file."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from actlab.store.format import (DOC, crc32, META_KEYS, POS, ST_DTYPES, TOKENS, StoreCorruptError, StoreError,
                                 load_manifest, read_range)
from actlab.utils import parse_dtype

log = logging.getLogger(__name__)


class ActivationStore:
    """A store folder opened for reading. ``len(store)`` rows; ``read(site, rows)`` -> ``[n, d]`` tensors."""

    def __init__(self, path: str | os.PathLike, verify_reads: bool = True):
        self.path = Path(path)
        self.manifest: dict = load_manifest(self.path)
        self.verify_reads = verify_reads
        self.shards: list[dict] = self.manifest["shards"]
        rows = [s["rows"] for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]) if rows else np.zeros(1, np.int64)
        self._maps: dict[tuple[int, str], np.memmap] = {}
        self._verified: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        if not self.manifest.get("complete", False):
            log.warning("store %s is incomplete (a harvest is running or was interrupted); %d rows readable",
                        self.path, len(self))

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.manifest.get("dims", {}))

    @property
    def site_shapes(self) -> dict[str, list[int]]:
        """Trailing shape per site as recorded (e.g. [heads, d_head] for attn.z); rows hold it flattened."""
        return dict(self.manifest.get("site_shapes", {}))

    @property
    def dtype(self) -> torch.dtype:
        return parse_dtype(self.manifest["dtype"])

    @property
    def context_length(self) -> int:
        return int(self.manifest["context_length"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, rows={len(self)}, sites={self.sites}, dtype={self.manifest['dtype']},"
                f" shards={len(self.shards)}, model={self.manifest['model']['name']!r})")

    # -- low level -----------------------------------------------------------------------------------------
    def _check_key(self, key: str) -> None:
        if key not in META_KEYS and key not in self.manifest["sites"]:
            raise KeyError(f"site {key!r} is not in this store; stored sites: {self.sites}")

    def _shard_file(self, i: int) -> Path:
        """The path of shard ``i`` after checking it exists with the manifest's size."""
        sh = self.shards[i]
        f = self.path / sh["file"]
        if not f.exists():
            raise StoreCorruptError(f"shard {sh['file']} is listed in the manifest but missing from {self.path}")
        if f.stat().st_size != sh["bytes"]:
            raise StoreCorruptError(f"shard {sh['file']} has {f.stat().st_size} bytes, the manifest says "
                                    f"{sh['bytes']} (truncated or overwritten)")
        return f

    def _crc_failed(self, i: int, key: str) -> StoreCorruptError:
        return StoreCorruptError(f"shard {self.shards[i]['file']}: checksum mismatch in tensor {key!r} (the file is "
                                 f"corrupted); run `actlab store info {self.path} --verify`")

    def _mark_verified(self, i: int, key: str, crc: int) -> None:
        """Record the crc32 computed over a tensor's full bytes (raises if it differs from the manifest)."""
        if crc != self.shards[i]["tensors"][key]["crc32"]:
            raise self._crc_failed(i, key)
        self._verified.add((i, key))

    def _ensure_verified(self, i: int, key: str) -> None:
        """crc-check one tensor of shard ``i`` once (no-op when verify_reads is off or already checked)."""
        if not self.verify_reads or (i, key) in self._verified:
            return
        f = self._shard_file(i)
        a, b = self.shards[i]["tensors"][key]["offsets"]
        crc = 0
        for piece in read_range(f, a, b - a, memoryview(bytearray(min(b - a, 8 << 20))), self.shards[i]["file"],
                                piece=8 << 20):
            crc = crc32(piece, crc)
        self._mark_verified(i, key, crc)

    def _map(self, i: int, key: str) -> np.memmap:
        """The memory map of one tensor of shard ``i`` (crc-checked on first use when verify_reads)."""
        m = self._maps.get((i, key))
        if m is not None:
            return m
        with self._lock:
            m = self._maps.get((i, key))
            if m is not None:
                return m
            f = self._shard_file(i)
            self._ensure_verified(i, key)
            t = self.shards[i]["tensors"][key]
            np_dtype, _ = ST_DTYPES[t["dtype"]]
            a, b = t["offsets"]
            shape = tuple(t["shape"])
            rows = shape[0]
            shape2 = (rows, int(np.prod(shape[1:])) if len(shape) > 1 else 1) if key not in META_KEYS else (rows,)
            m = np.memmap(f, dtype=np_dtype, mode="r", offset=a, shape=shape2) if b > a else np.zeros(shape2, np_dtype)
            self._maps[(i, key)] = m
            return m

    def _torch_dtype(self, i: int, key: str) -> torch.dtype:
        return ST_DTYPES[self.shards[i]["tensors"][key]["dtype"]][1]

    def _to_tensor(self, arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t

    def _rows(self, rows) -> torch.Tensor:
        n = len(self)
        if isinstance(rows, slice):
            return torch.arange(*rows.indices(n))
        if isinstance(rows, int):
            rows = [rows]
        idx = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        idx = torch.where(idx < 0, idx + n, idx)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"row index out of range for a store of {n} rows")
        return idx

    def _gather(self, key: str, rows) -> torch.Tensor:
        self._check_key(key)
        idx = self._rows(rows)
        if not self.shards:
            raise StoreError(f"store {self.path} holds no shards yet")
        shard_of = np.searchsorted(self.offsets, idx.numpy(), side="right") - 1
        first = self._map(0, key)
        out = np.empty((idx.numel(), *first.shape[1:]), dtype=first.dtype)
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = idx.numpy()[sel] - self.offsets[s]
            m = self._map(int(s), key)
            if len(local) and (local[-1] - local[0] + 1 == len(local)) and np.all(np.diff(local) == 1):
                out[sel] = m[local[0]: local[-1] + 1]
            else:
                out[sel] = m[local]
        return self._to_tensor(out, self._torch_dtype(0, key))

    # -- public reading ------------------------------------------------------------------------------------
    def read(self, site: str, rows, dtype: torch.dtype | str | None = None) -> torch.Tensor:
        """Rows (slice | list | LongTensor | int) of a site as ``[n, d]`` (stored dtype unless ``dtype``)."""
        if site in META_KEYS:
            raise KeyError(f"{site!r} is row metadata; use tokens() / doc_pos()")
        t = self._gather(site, rows)
        return t if dtype is None else t.to(parse_dtype(dtype))

    def tokens(self, rows) -> torch.Tensor:
        """Token ids ``[n]`` (long) of rows."""
        return self._gather(TOKENS, rows).long()

    def doc_pos(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """``(doc [n], pos [n])``: the document index (into load_texts(data)) and token position in it."""
        return self._gather(DOC, rows).long(), self._gather(POS, rows).long()

    def describe(self, as_json: bool = False) -> str:
        """A summary of the manifest (model, tokenizer, data, rows, filters, sites), or the manifest as JSON."""
        import json

        m = self.manifest
        if as_json:
            return json.dumps(m, indent=2)
        h = m.get("harvest", {})
        lines = [f"store      {self.path}",
                 f"format     {m['format']} v{m['format_version']}   complete={self.complete}",
                 f"model      {m['model']['name']} (revision {m['model'].get('revision') or '-'}; weights "
                 f"{h.get('weights') or '-'}; run in {h.get('model_dtype') or '-'})",
                 f"tokenizer  {m['tokenizer'].get('class')} vocab={m['tokenizer'].get('vocab_size')}",
                 f"data       {h.get('data')} (sha256 {h.get('data_sha256')})",
                 f"rows       {len(self)} in {len(self.shards)} shard(s) of {m.get('shard_rows')} rows; "
                 f"context_length={self.context_length}; dtype={m['dtype']}; world_size={m.get('world_size')}",
                 f"filters    positions={h.get('positions')} exclude_bos={h.get('exclude_bos')} "
                 f"exclude_special={h.get('exclude_special')} seed={h.get('seed')}"]
        lines += [f"site       {s}  d={self.dims.get(s)}  shape={self.site_shapes.get(s)}" for s in self.sites]
        return "\n".join(lines)

    def verify(self) -> list[str]:
        """Check every listed shard (presence, size, header, crc32 of every tensor); returns the problems found."""
        from actlab.store.verify import verify_store

        return verify_store(self)

    # -- training iterator ---------------------------------------------------------------------------------
    def batches(self, site: str, batch_size: int = 4096, shuffle: bool = True, seed: int = 0,
                buffer_rows: int | None = None, dtype: torch.dtype | str = torch.float32, drop_last: bool = False,
                rank: int = 0, world: int = 1, prefetch: int = 2, block_rows: int = 1) -> Iterator[torch.Tensor]:
        """One epoch of ``[B, d]`` batches of a site, rows uniformly shuffled (membership and order) within windows
        of up to ``buffer_rows`` rows (default: 64 MiB of rows; two window buffers are held). Each shard is read
        front to back, a window ahead of the one served, so the disk never sees a random read.

        ``rank``/``world`` give each data-parallel rank an equal disjoint part; ``prefetch`` batches are prepared
        in a background thread; ``block_rows`` > 1 shuffles runs of that many consecutive rows (coarser, cheaper).
        See actlab.store.batches for the algorithm.
        """
        from actlab.store.batches import iterate

        return iterate(self, site, batch_size, shuffle, seed, buffer_rows, parse_dtype(dtype), drop_last, rank,
                       world, prefetch, block_rows)
