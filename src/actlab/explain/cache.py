"""Latent cache: stream rows (a store, or a model on texts) through a latent source and keep, per latent, its firing
statistics (count, max, sum, a log-spaced histogram of active values) and its active entries sparsely
``(row, latent, value)``, in shards of bounded size, so memory stays flat however many tokens are cached.

Folder layout (an artifact of kind ``explain.latent_cache``; docs/explain.md):
``shard-NNNNNN.safetensors`` (entries ``row`` i64 / ``latent`` i32 / ``value`` f32, the shard's rows' ``tokens``,
``doc``, ``pos`` i32, and its partial ``count``/``max``/``sum``/``hist``), ``progress.json`` (complete shards, for
resumption), and at the end ``cfg.json`` + ``stats.safetensors`` (totals). A run killed at any moment (SIGKILL
included) is continued by rerunning it: complete shards are kept, the rest is recomputed from the same fixed chunk
boundaries, so the result equals an uninterrupted run file for file. The folder is locked while a run writes it.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from actlab.artifact import (
    ArtifactError,
    atomic_write_json,
    folder_lock,
    load_artifact,
    load_tensors,
    read_json,
    save_artifact,
    save_tensors,
)
from actlab.explain.sources import LatentSource, RowSource

log = logging.getLogger(__name__)
Tensor = torch.Tensor
KIND = "explain.latent_cache"
FORMAT_VERSION = 1
PROGRESS = "progress.json"
STATS_FILE = "stats.safetensors"
ENTRY_KEYS = ("row", "latent", "value")
ROW_KEYS = ("tokens", "doc", "pos")
STAT_KEYS = ("count", "max", "sum", "hist")


@dataclass
class CacheConfig:
    """How to cache latents (saved in cfg.json; every field but ``progress`` identifies the cache on resume)."""

    threshold: float = 0.0
    """A latent is active on a row when its value is > threshold (only those entries are stored)."""
    shard_entries: int = 1 << 20
    """Close a shard once it holds at least this many entries (bounds memory: ~16 bytes per entry)."""
    shard_rows: int = 1 << 18
    """... or once it covers at least this many rows (bounds the per-row token/doc/pos tables)."""
    hist_bins: int = 24
    """Bins of the activation histogram, log-spaced over [hist_min, hist_max] (values outside go to the ends)."""
    hist_min: float = 1e-3
    """Lower edge of the histogram."""
    hist_max: float = 1e3
    """Upper edge of the histogram."""
    progress: bool = True
    """Show a tqdm bar."""

    def __post_init__(self) -> None:
        if self.shard_entries < 1 or self.shard_rows < 1 or self.hist_bins < 1:
            raise ValueError(f"shard_entries, shard_rows and hist_bins must be >= 1; got {self.shard_entries}, "
                             f"{self.shard_rows}, {self.hist_bins}")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0 (negate a direction to cache its negative side); got "
                             f"{self.threshold}")
        if not 0 < self.hist_min < self.hist_max:
            raise ValueError(f"need 0 < hist_min < hist_max; got {self.hist_min}, {self.hist_max}")

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        return d


def hist_edges(cfg: CacheConfig) -> Tensor:
    """The ``hist_bins + 1`` log-spaced bin edges of the activation histogram."""
    return torch.logspace(math.log10(cfg.hist_min), math.log10(cfg.hist_max), cfg.hist_bins + 1)


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.safetensors"


class _Buffer:
    """Entries and row tables of the shard being filled, plus its partial statistics."""

    def __init__(self, n: int, cfg: CacheConfig, row0: int, chunk0: int):
        self.n, self.cfg, self.row0, self.chunk0 = n, cfg, row0, chunk0
        self.parts: dict[str, list[Tensor]] = {k: [] for k in ENTRY_KEYS + ROW_KEYS}
        self.count = torch.zeros(n, dtype=torch.int64)
        self.max = torch.zeros(n, dtype=torch.float32)
        self.sum = torch.zeros(n, dtype=torch.float64)
        self.hist = torch.zeros(n, cfg.hist_bins, dtype=torch.int64)
        self.edges = hist_edges(cfg)[1:-1]
        self.rows = self.entries = 0

    def add(self, z: Tensor, chunk) -> None:
        r, j = (z > self.cfg.threshold).nonzero(as_tuple=True)
        v = z[r, j]
        self.parts["row"].append(r.long() + self.row0 + self.rows)
        self.parts["latent"].append(j.int())
        self.parts["value"].append(v.float())
        for k in ROW_KEYS:
            self.parts[k].append(getattr(chunk, k).int())
        self.count += torch.bincount(j, minlength=self.n)
        self.max = torch.maximum(self.max, torch.zeros(self.n).scatter_reduce_(0, j, v.float(), "amax"))
        self.sum.index_add_(0, j, v.double())
        b = torch.bucketize(v.float(), self.edges)
        self.hist.view(-1).index_add_(0, j.long() * self.cfg.hist_bins + b, torch.ones_like(b, dtype=torch.int64))
        self.rows += z.shape[0]
        self.entries += v.numel()

    def full(self) -> bool:
        return self.entries >= self.cfg.shard_entries or self.rows >= self.cfg.shard_rows

    def tensors(self) -> dict[str, Tensor]:
        t = {k: torch.cat(v) if v else torch.zeros(0) for k, v in self.parts.items()}
        t["row"], t["latent"] = t["row"].long(), t["latent"].int()
        t.update(count=self.count, max=self.max, sum=self.sum, hist=self.hist)
        return t


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k}: {a.get(k)!r} here vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def _start(out: Path, ident: dict) -> list[dict]:
    """Complete shards of an earlier run with the same identity (removing anything else it left)."""
    prog_path = out / PROGRESS
    if not prog_path.exists():
        leftovers = [p.name for p in out.iterdir() if p.name != ".actlab.lock"]
        if leftovers:
            raise ArtifactError(f"{out} is not empty and holds no latent cache progress ({leftovers[:5]}); "
                                f"use an empty or new folder")
        return []
    prog = read_json(prog_path, what="latent cache progress")
    if prog.get("identity") != ident:
        raise ArtifactError(f"{out} holds a latent cache of other settings ({_diff(ident, prog.get('identity', {}))})"
                            f"; use another folder")
    shards = prog["shards"]
    keep = {s["file"] for s in shards} | {PROGRESS, ".actlab.lock"}
    for p in out.iterdir():   # temp files of a killed write, a shard written but not yet listed
        if p.name not in keep and (p.name.endswith(".tmp") or p.name.startswith("shard-")):
            p.unlink()
    return shards


def _pass(rows: RowSource, latents: LatentSource, out: Path, cfg: CacheConfig, ident: dict,
          chunks: range) -> list[dict]:
    """Cache the chunks ``chunks`` into shards in ``out`` (resuming its progress); rows numbered from 0 there."""
    shards = _start(out, ident)
    chunk0 = shards[-1]["chunk_end"] if shards else chunks.start
    row0 = shards[-1]["row_end"] if shards else 0
    if shards:
        log.warning("resuming the latent cache in %s after %d complete shard(s) (%d rows)", out, len(shards), row0)
    bar = _bar(cfg, rows, chunk0)
    buf = _Buffer(latents.n_latents, cfg, row0, chunk0)

    def flush(chunk_end: int) -> _Buffer:
        name = shard_name(len(shards))
        t = buf.tensors()
        save_tensors(out / name, t)   # no extra metadata: a 2-key header is ordered at random
        shards.append({"file": name, "chunk_start": buf.chunk0, "chunk_end": chunk_end, "row_start": buf.row0,
                       "row_end": buf.row0 + buf.rows, "entries": buf.entries})
        atomic_write_json(out / PROGRESS, {"identity": ident, "shards": shards})
        return _Buffer(latents.n_latents, cfg, buf.row0 + buf.rows, chunk_end)

    c = chunk0
    if chunk0 < chunks.stop:
        for c, chunk in enumerate(itertools.islice(rows.chunks(chunk0), chunks.stop - chunk0), start=chunk0):
            z = latents(chunk.acts)
            if z.shape != (chunk.acts.shape[0], latents.n_latents):
                raise ValueError(f"the latent source returned shape {list(z.shape)} for {chunk.acts.shape[0]} rows;"
                                 f" expected [{chunk.acts.shape[0]}, {latents.n_latents}]")
            buf.add(z.detach().float().cpu(), chunk)
            if bar is not None:
                bar.update(z.shape[0])
            if buf.full():
                buf = flush(c + 1)
    if buf.rows:
        buf = flush(c + 1)
    if bar is not None:
        bar.close()
    if not shards or shards[-1]["chunk_end"] < chunks.stop:   # record completion even for an empty range
        atomic_write_json(out / PROGRESS, {"identity": ident, "shards": shards, "chunk_end": chunks.stop})
    return shards


def build_cache(rows: RowSource, latents: LatentSource, out: str | Path, cfg: CacheConfig | None = None,
                extra: dict | None = None, *, rank: int | None = None,
                world: int | None = None) -> LatentCache | None:
    """Cache ``latents`` over ``rows`` into the folder ``out`` (resuming a killed run with the same settings).

    Under ``torchrun`` (or with explicit ``rank`` / ``world``), rank ``r`` caches its contiguous block of chunks
    into ``out/rank-r/`` (resumable on its own); rank 0 then lists every rank's shards in order in ``cfg.json``
    (their rows offset by the rows of earlier ranks), so the cache equals a single-process one row for row.
    Without torch.distributed initialised, whichever rank finishes last merges; the others return None."""
    from actlab import distributed

    cfg = cfg or CacheConfig()
    out = Path(out)
    ident = {"format_version": FORMAT_VERSION, "rows": rows.describe(), "latents": latents.describe(),
             "cache": cfg.identity()}
    r = distributed.rank() if rank is None else int(rank)
    w = distributed.world_size() if world is None else int(world)
    if (out / "cfg.json").exists():
        done = LatentCache(out)
        if done.config.get("identity") != ident:
            raise ArtifactError(f"{out} holds a finished latent cache of other settings "
                                f"({_diff(ident, done.config.get('identity', {}))}); use another folder")
        return done
    if w <= 1:
        with folder_lock(out, what="explain cache"):
            if (out / "cfg.json").exists():
                return build_cache(rows, latents, out, cfg, extra, rank=0, world=1)
            shards = _pass(rows, latents, out, cfg, ident, range(rows.n_chunks))
            _finish(out, shards, latents, cfg, ident, extra)
        return LatentCache(out)
    part = out / f"rank-{r:03d}"
    with folder_lock(part, what=f"explain cache rank {r}"):
        _pass(rows, latents, part, cfg, {**ident, "rank": r, "world": w},
              distributed.shard_range(rows.n_chunks, r, w))
    if distributed.is_initialized():
        distributed.barrier()
    if r == 0 or not distributed.is_initialized():
        _merge(out, w, rows.n_chunks, latents, cfg, ident, extra)
    if distributed.is_initialized():
        distributed.barrier()
    return LatentCache(out) if (out / "cfg.json").exists() else None


def _merge(out: Path, world: int, n_chunks: int, latents: LatentSource, cfg: CacheConfig, ident: dict,
           extra: dict | None) -> None:
    """List every rank's shards in rank order with row offsets, once all ranks have finished their block."""
    from actlab import distributed

    parts = []
    for k in range(world):
        prog = out / f"rank-{k:03d}" / PROGRESS
        if not prog.exists():
            return   # another rank is not done (without torch.distributed: the last rank merges)
        p = read_json(prog, what="latent cache progress")
        if p.get("identity") != {**ident, "rank": k, "world": world}:
            raise ArtifactError(f"{prog} was written with other settings; use another folder")
        end = p.get("chunk_end", p["shards"][-1]["chunk_end"] if p["shards"] else -1)
        if end < distributed.shard_range(n_chunks, k, world).stop:
            return
        parts.append(p["shards"])
    shards, offset = [], 0
    for k, part in enumerate(parts):
        for s in part:
            shards.append({**s, "file": f"rank-{k:03d}/{s['file']}", "row_offset": offset,
                           "row_start": s["row_start"] + offset, "row_end": s["row_end"] + offset})
        offset += part[-1]["row_end"] if part else 0
    with folder_lock(out, what="explain cache"):
        if not (out / "cfg.json").exists():
            _finish(out, shards, latents, cfg, ident, extra)


def _finish(out: Path, shards: list[dict], latents: LatentSource, cfg: CacheConfig, ident: dict,
            extra: dict | None) -> None:
    totals = _totals(out, shards, latents.n_latents, cfg)
    config = {"identity": ident, "n_latents": latents.n_latents, "n_rows": shards[-1]["row_end"] if shards else 0,
              "site": latents.site, "shards": shards, "hist_edges": hist_edges(cfg).tolist(),
              "extra": extra or {}}
    save_artifact(out, KIND, config, totals, version=FORMAT_VERSION, tensors_file=STATS_FILE)


def _bar(cfg: CacheConfig, rows: RowSource, chunk0: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    total = getattr(rows, "n_rows", None)
    return tqdm(total=total, initial=min(chunk0 * getattr(rows, "batch_rows", 0), total or 0), unit="tok",
                desc="explain cache")


def _totals(out: Path, shards: list[dict], n: int, cfg: CacheConfig) -> dict[str, Tensor]:
    t = {"count": torch.zeros(n, dtype=torch.int64), "max": torch.zeros(n), "sum": torch.zeros(n, dtype=torch.float64),
         "hist": torch.zeros(n, cfg.hist_bins, dtype=torch.int64)}
    for s in shards:
        p = load_tensors(out / s["file"], names=STAT_KEYS)
        t["count"] += p["count"]
        t["max"] = torch.maximum(t["max"], p["max"])
        t["sum"] += p["sum"]
        t["hist"] += p["hist"]
    return t


class LatentCache:
    """A finished latent cache folder: totals per latent, row tables, and the sparse entries (read on first use)."""

    def __init__(self, folder: str | Path):
        art = load_artifact(folder, KIND, version=FORMAT_VERSION, tensors_file=STATS_FILE)
        self.folder, self.config = Path(folder), art.config
        self.n_latents, self.n_rows = int(art.config["n_latents"]), int(art.config["n_rows"])
        self.count, self.max = art.tensors["count"], art.tensors["max"]
        self.sum, self.hist = art.tensors["sum"], art.tensors["hist"]
        self.hist_edges = torch.tensor(art.config["hist_edges"])
        self._rows: dict[str, Tensor] | None = None
        self._entries: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    @property
    def density(self) -> Tensor:
        """Fraction of rows on which each latent is active ``[n_latents]``."""
        return self.count.double() / max(self.n_rows, 1)

    @property
    def mean_active(self) -> Tensor:
        """Mean value of each latent where active (0 for latents that never fire)."""
        return self.sum / self.count.clamp_min(1)

    @property
    def source(self) -> dict[str, Any]:
        """The latent source's description (type, site, path of a dictionary, ...)."""
        return self.config["identity"]["latents"]

    @property
    def rows_source(self) -> dict[str, Any]:
        """The row source's description (store path, model and tokenizer names, ...)."""
        return self.config["identity"]["rows"]

    def _load(self) -> None:
        parts: dict[str, list[Tensor]] = {k: [] for k in ENTRY_KEYS + ROW_KEYS}
        for s in self.config["shards"]:
            t = load_tensors(self.folder / s["file"], names=ENTRY_KEYS + ROW_KEYS)
            t["row"] = t["row"] + int(s.get("row_offset", 0))   # shards of rank r > 0 count rows from 0
            for k, part in parts.items():
                part.append(t[k])
        cat = {k: torch.cat(v).long() if k != "value" else torch.cat(v) for k, v in parts.items()}
        self._rows = {k: cat[k] for k in ROW_KEYS}
        order = torch.argsort(cat["latent"], stable=True)   # entries grouped by latent, rows ascending within
        lat = cat["latent"][order]
        ptr = torch.zeros(self.n_latents + 1, dtype=torch.long)
        ptr[1:] = torch.bincount(lat, minlength=self.n_latents).cumsum(0)
        self._entries = (cat["row"][order], lat, cat["value"][order], ptr)

    def row_table(self, key: str) -> Tensor:
        """Per-row ``tokens``, ``doc`` or ``pos`` ``[n_rows]`` (long)."""
        if self._rows is None:
            self._load()
        return self._rows[key]

    def entries(self) -> tuple[Tensor, Tensor, Tensor]:
        """All entries ``(row, latent, value)``, grouped by latent."""
        if self._entries is None:
            self._load()
        return self._entries[:3]

    def latent(self, j: int) -> tuple[Tensor, Tensor]:
        """``(rows, values)`` where latent ``j`` is active, rows ascending."""
        if not 0 <= j < self.n_latents:
            raise IndexError(f"latent {j} out of range: the cache holds {self.n_latents} latents")
        if self._entries is None:
            self._load()
        row, _, val, ptr = self._entries
        return row[ptr[j]: ptr[j + 1]], val[ptr[j]: ptr[j + 1]]

    def dense(self, j: int, rows: Tensor | None = None) -> Tensor:
        """Latent ``j``'s value on ``rows`` (all rows by default), 0 where not active."""
        r, v = self.latent(j)
        full = torch.zeros(self.n_rows)
        full[r] = v
        return full if rows is None else full[rows]
