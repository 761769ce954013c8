"""On-disk layout of an activation store: names, the manifest, safetensors headers, checksums. See FORMAT.md."""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

FORMAT = "actlab-activation-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress-rank{rank:03d}.json"
SHARD = "shard-r{rank:03d}-{index:06d}.safetensors"
TMP_PREFIX = "."  # shards are written as ".<name>.tmp" then renamed
TOKENS, DOC, POS = "_tokens", "_doc", "_pos"  # per-row metadata tensors in every shard
META_KEYS = (TOKENS, DOC, POS)

ST_DTYPES = {"F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16),
             "BF16": (np.uint16, torch.bfloat16), "I32": (np.int32, torch.int32), "I64": (np.int64, torch.int64)}
ST_CODES = {tt: code for code, (_, tt) in ST_DTYPES.items()}


class StoreError(Exception):
    """A store that cannot be used as asked (missing, foreign, incompatible)."""


class StoreCorruptError(StoreError):
    """A shard or the manifest does not match its checksums."""


def read_header(path: Path) -> tuple[dict, int]:
    """(safetensors header dict, byte offset where the data starts)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise StoreCorruptError(f"shard {path.name}: truncated ({len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise StoreCorruptError(f"shard {path.name}: bad safetensors header length {n}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"shard {path.name}: unreadable safetensors header ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


try:  # zlib-ng: the same crc32 (polynomial and values), ~2.5x faster here (vectorised); GIL released like zlib
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - optional speed-up
    from zlib import crc32


def read_range(path: Path, offset: int, n: int, dest: memoryview, name: str,
               piece: int = 1 << 20) -> Iterator[memoryview]:
    """Read bytes ``[offset, offset + n)`` of shard file ``path`` into ``dest`` in pieces of at most ``piece``
    bytes, yielding each piece as it lands (so a crc32 can follow it while it is in cache); ``dest`` shorter than
    ``n`` is reused from its start. A file ending early raises ``StoreCorruptError`` naming shard ``name``."""
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        got = 0
        while got < n:
            at = got % len(dest)
            k = f.readinto(dest[at: at + min(n - got, len(dest) - at, piece)])
            if not k:
                raise StoreCorruptError(f"shard {name}: unexpected end of file")
            yield dest[at: at + k]
            got += k


def crc_of(t: torch.Tensor) -> int:
    """crc32 of a contiguous CPU tensor's bytes (equal to the crc of its bytes in a safetensors file)."""
    t = t.contiguous()
    return crc32(t.view(torch.uint8).numpy().data) if t.numel() else 0


def crc_of_array(a: np.ndarray) -> int:
    return crc32(np.ascontiguousarray(a).data) if a.size else 0


def load_manifest(root: Path) -> dict:
    """The manifest of a store folder; clear errors when missing, corrupt or foreign."""
    root = Path(root)
    if not root.exists():
        raise StoreError(f"activation store {str(root)!r} does not exist")
    p = root / MANIFEST
    if not p.exists():
        raise StoreError(f"{str(root)!r} is not an activation store: {MANIFEST} is missing")
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"{p} is corrupt: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{p} is not an actlab activation store manifest (format={m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(f"{p} has format version {m['format_version']}; this actlab reads <= {FORMAT_VERSION}")
    return m
