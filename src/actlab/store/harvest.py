"""``harvest``: stream a dataset's activations at chosen sites into a sharded store, resumable and torchrun-aware.

Contexts are packed deterministically from the data and a seed, rows (token positions) are selected by the
config, and each rank takes every ``world``-th context. The forward pass runs on ``model.record`` (stopping after
the last requested site) while a writer thread fills and writes shards. A rerun with the same settings continues
after the last complete shard; different settings on the same folder are refused.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from actlab import distributed as D
from actlab.artifact import ArtifactError, atomic_write_json, folder_lock
from actlab.core import context_position_mask
from actlab.data import data_fingerprint, iter_contexts, load_texts, resolve_data
from actlab.store.fingerprint import weights_fingerprint
from actlab.store.format import (
    DOC,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    POS,
    PROGRESS,
    TOKENS,
    StoreError,
    load_manifest,
)
from actlab.store.reader import ActivationStore
from actlab.store.writer import ShardWriter
from actlab.utils import dtype_name, parse_dtype, prefetch

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)
STORE_DTYPES = ("bf16", "fp16", "fp32")
SHARD_BYTES = 64 << 20


@dataclass
class HarvestConfig:
    """What to harvest and how; every field except the execution ones (batch_size, progress, queue_size,
    device) identifies the harvest, so rerunning with equal values resumes and different values are refused."""

    data: str
    """Dataset path: .txt, .jsonl, .parquet, a local Hugging Face dataset folder, or 'demo' (the bundled demo
    corpus; see actlab.data.load_texts)."""
    sites: list[str]
    """Sites to store, e.g. ['blocks.3.resid_post']; per-head sites are stored flattened ([.., heads*d_head])."""
    out: str
    """Output folder (created); a folder of another harvest is refused."""
    tokens: int | None = None
    """Rows to store in total over all ranks (after position filters); None = the whole dataset."""
    context_length: int = 128
    """Tokens per packed context."""
    batch_size: int = 32
    """Contexts per forward pass (execution only)."""
    store_dtype: str = "bf16"
    """Storage dtype of the activations: bf16, fp16 or fp32 (the model's own dtype is the model's)."""
    shard_rows: int | None = None
    """Rows per shard; None picks about 64 MiB per shard (a multiple of 256, at least 256)."""
    exclude_bos: bool = False
    """Drop rows whose token is the tokenizer's BOS (its massive activations upset SAE training)."""
    exclude_special: bool = False
    """Drop rows whose token is any special token of the tokenizer (BOS, EOS, pad, ...)."""
    positions: str = "all"
    """Context positions to keep, in the one position syntax: 'all', 'last', an index, a slice 'a:b' (e.g. '1:' skips
    position 0) or a list '0,5,9'."""
    seed: int = 0
    """Document shuffling seed (None-free: order is always seeded, hence reproducible)."""
    text_field: str = "text"
    """Field / column holding the text in .jsonl, .parquet and dataset folders."""
    add_bos: bool = True
    """Prefix each document with the tokenizer's BOS token when it has one."""
    progress: bool = True
    dry_run: bool = False
    """Print the estimate (time from a calibration batch, peak memory, disk) and stop without harvesting."""
    estimate: bool = True
    """Print that estimate first (when ``tokens`` is set) and refuse to start when the disk cannot hold the store."""
    """Show a tqdm bar (tokens/s, ETA) on rank 0."""
    queue_size: int = 4
    """Batches in flight between the forward pass and the writer thread (bounds memory)."""
    extra: dict = field(default_factory=dict, metadata={"cmd": False})
    """Free-form notes stored in the manifest (not part of the identity)."""
    dtype: str | None = field(default=None, metadata={"cmd": False})
    """Deprecated alias of ``store_dtype`` (its name before every ``--dtype`` meant the model dtype)."""

    def __post_init__(self):
        if isinstance(self.sites, str):
            self.sites = [self.sites]
        self.sites = [x.strip() for s in self.sites for x in str(s).split(",") if x.strip()]
        if not self.sites:
            raise ValueError("HarvestConfig.sites is empty: name at least one site")
        if len(set(self.sites)) != len(self.sites):
            raise ValueError(f"HarvestConfig.sites has duplicates: {self.sites}")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"HarvestConfig.tokens must be >= 1 (or None for everything); got {self.tokens}")
        if self.context_length < 1 or self.batch_size < 1:
            raise ValueError("HarvestConfig.context_length and batch_size must be >= 1")
        if self.shard_rows is not None and self.shard_rows < 1:
            raise ValueError(f"HarvestConfig.shard_rows must be >= 1; got {self.shard_rows}")
        if self.dtype is not None:
            if self.store_dtype not in ("bf16", self.dtype):
                raise ValueError(f"HarvestConfig got dtype={self.dtype!r} (the old name of store_dtype) and "
                                 f"store_dtype={self.store_dtype!r}; give store_dtype only")
            self.store_dtype, self.dtype = self.dtype, None
        try:
            name = dtype_name(parse_dtype(self.store_dtype))
        except (ValueError, KeyError, TypeError):
            name = None
        if name not in STORE_DTYPES:
            raise ValueError(f"HarvestConfig.store_dtype must be one of {STORE_DTYPES}; got {self.store_dtype!r}")
        self.store_dtype = name
        position_mask(self.positions, self.context_length)  # validates
        self.data = str(self.data)
        self.out = str(self.out)

    def identity(self, model: Model, world: int) -> dict:
        """The settings that define the rows of a harvest (compared on resume), the weights' fingerprint and the
        dtype the model runs in included: a name or a config.json does not identify weights."""
        return {"model": model.name, "revision": model.revision, "weights": weights_fingerprint(model),
                "model_dtype": dtype_name(model.dtype), "data": str(resolve_data(self.data).resolve()),
                "data_sha256": data_fingerprint(self.data), "text_field": self.text_field, "sites": self.sites,
                "tokens": self.tokens, "context_length": self.context_length, "dtype": self.store_dtype,
                "shard_rows": self.shard_rows, "exclude_bos": self.exclude_bos,
                "exclude_special": self.exclude_special, "positions": self.positions, "seed": self.seed,
                "add_bos": self.add_bos, "world_size": world}


def position_mask(spec: str, L: int) -> torch.Tensor:
    """Bool [L] mask of the context positions a spec keeps, in the one position syntax ('all', 'last', '-1', '1:',
    '0,5,9', ...; see ``actlab.core.parse_positions``)."""
    return context_position_mask(spec, L)


def _plan(cfg: HarvestConfig, tokenizer, docs: list[str], rank: int, world: int
          ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's contexts ``(ids, doc, pos, keep_mask)`` in order; the global row budget is counted on all ranks."""
    keep_pos = position_mask(cfg.positions, cfg.context_length)
    drop = set()
    if cfg.exclude_bos and tokenizer.bos_token_id is not None:
        drop.add(tokenizer.bos_token_id)
    if cfg.exclude_special:
        drop.update(tokenizer.all_special_ids)
    drop_t = torch.tensor(sorted(drop), dtype=torch.long)
    total, n_ctx = 0, 0
    for i, (ids, dd, pp) in enumerate(iter_contexts(tokenizer, docs, cfg.context_length, cfg.seed, cfg.add_bos)):
        n_ctx += 1
        mask = keep_pos & ~torch.isin(ids, drop_t) if len(drop) else keep_pos.clone()
        n = int(mask.sum())
        if cfg.tokens is not None and total + n > cfg.tokens:
            mask[mask.nonzero().squeeze(1)[cfg.tokens - total:]] = False
            n = cfg.tokens - total
        total += n
        if n and i % world == rank:
            yield ids, dd, pp, mask
        if cfg.tokens is not None and total >= cfg.tokens:
            break
    if total == 0:
        raise ValueError(f"the dataset {cfg.data!r} yields no rows: {n_ctx} context(s) of {cfg.context_length} "
                         f"tokens and none kept by the position/token filters (use a larger dataset or a shorter "
                         f"--context-length)")
    if cfg.tokens is not None and total < cfg.tokens and D.is_main():
        log.warning("the dataset holds only %d rows of the %d asked; storing all of them", total, cfg.tokens)


def _batches(plan: Iterator[tuple[torch.Tensor, ...]], batch_size: int, skip: int
             ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Stack the plan's contexts into ``(ids, doc, pos, keep_mask)`` batches, leaving out the first ``skip`` kept
    rows (stored by the run this one resumes)."""
    batch: list = []
    for ids, dd, pp, mask in plan:
        n = int(mask.sum())
        if skip >= n:
            skip -= n
            continue
        if skip:
            mask = mask.clone()
            mask[mask.nonzero().squeeze(1)[:skip]] = False
            skip = 0
        batch.append((ids, dd, pp, mask))
        if len(batch) == batch_size:
            yield tuple(torch.stack(x) for x in zip(*batch))
            batch = []
    if batch:
        yield tuple(torch.stack(x) for x in zip(*batch))


def _prepare(root: Path, ident: dict, rank: int) -> dict | None:
    """Check the output folder; returns the existing manifest (same harvest) or None (fresh folder)."""
    if root.exists() and not root.is_dir():
        raise StoreError(f"output {str(root)!r} exists and is not a folder")
    if root.exists() and (root / MANIFEST).exists():
        m = load_manifest(root)
        old = m.get("harvest", {})
        diff = [f"{k}: folder has {old.get(k)!r}, now {v!r}" for k, v in ident.items()
                if old.get(k) != v and k != "weights"]
        head = ""
        if old.get("weights") != ident["weights"]:
            was = (f"weights fingerprint {old['weights']}" if old.get("weights")
                   else "no weights fingerprint (written by an older actlab)")
            head = (f"output folder {str(root)!r} was harvested from other weights: the folder has {was} "
                    f"(model {old.get('model')!r}), this model {ident['model']!r} has weights fingerprint "
                    f"{ident['weights']}; resuming would mix two models' activations")
        if head or diff:
            msg = head or f"output folder {str(root)!r} belongs to another harvest"
            if diff:
                msg += "; differing settings: " + "; ".join(diff)
            raise StoreError(msg + ". Use another --out, or delete the folder to start over.")
        return m
    if root.exists() and any(not p.name.startswith(".") for p in root.iterdir()):
        raise StoreError(f"output folder {str(root)!r} is not empty and holds no {MANIFEST}; refusing to write "
                         f"into it (choose a new or empty folder)")
    return None


def _rows_on_disk(root: Path) -> int:
    """Rows a resume keeps from a killed or finished harvest in ``root`` (every rank's complete prefix; 0 for a new
    folder)."""
    if not root.is_dir():
        return 0
    rows = 0
    for p in root.glob(PROGRESS.split("{")[0] + "*.json"):
        try:
            shards = json.loads(p.read_text()).get("shards", [])
        except (OSError, ValueError):
            continue
        rows += sum(e.get("rows", 0) for e in _complete_prefix(root, shards, warn=False))
    return rows


def _complete_prefix(root: Path, shards: list[dict], warn: bool = True) -> list[dict]:
    """The longest prefix of ``shards`` whose files are present with the right size (a resume redoes the rest)."""
    good = []
    for e in shards:
        f = root / e.get("file", "")
        if not f.is_file() or f.stat().st_size != e.get("bytes"):
            if warn:
                log.warning("shard %s is missing or truncated; redoing from there", e.get("file"))
            break
        good.append(e)
    return good


def _load_progress(root: Path, rank: int, ident_hash: str) -> list[dict]:
    """This rank's complete shards (the longest prefix whose files are present with the right size)."""
    p = root / PROGRESS.format(rank=rank)
    if not p.exists():
        return []
    prog = json.loads(p.read_text())
    if prog.get("identity") != ident_hash:
        raise StoreError(f"{p} belongs to another harvest (identity {prog.get('identity')} != {ident_hash})")
    return _complete_prefix(root, prog.get("shards", []))


def _write_json(path: Path, obj: dict) -> None:
    """Rewrite a manifest/progress file atomically; a failure (a full disk) says that the complete shards are kept."""
    try:
        atomic_write_json(path, obj)
    except ArtifactError as e:
        raise StoreError(f"writing {path.name} to {path.parent} failed: {e}. The shards written before it are "
                         f"complete and kept; free space and rerun the same command to resume.") from e


def _manifest(base: dict, progress: list[dict], complete: bool) -> dict:
    shards = sorted((e for p in progress for e in p["shards"]), key=lambda e: (e["rank"], e["index"]))
    dims = next((p["dims"] for p in progress if p.get("dims")), {})
    shapes = next((p["site_shapes"] for p in progress if p.get("site_shapes")), {})
    return {**base, "complete": complete, "dims": dims, "site_shapes": shapes,
            "shard_rows": next((p["shard_rows"] for p in progress if p.get("shard_rows")), None),
            "total_rows": sum(e["rows"] for e in shards), "shards": shards}


def harvest(model: Model, cfg: HarvestConfig) -> ActivationStore | None:
    """Run (or resume) a harvest and return the store. Under torchrun every rank calls this with equal cfg. The
    output folder is locked for the run: a second harvest into it is refused naming the holder's PID. With
    ``dry_run`` it prints the estimate and returns None."""
    rank, world = D.init_from_env()
    try:
        model.check_sites(cfg.sites)
    except KeyError as e:
        raise ValueError(f"unknown site for {model.name}: {e.args[0]}") from None
    if model.tokenizer is None:
        raise ValueError(f"{model.name} has no tokenizer; harvest packs text and needs one")
    docs = load_texts(cfg.data, text_field=cfg.text_field)
    root = Path(cfg.out).expanduser()
    left = max(cfg.tokens - _rows_on_disk(root), 0) if cfg.tokens else 0      # a resumed run needs only the rest
    if (cfg.dry_run or cfg.estimate) and left:
        from actlab.store.estimate import check_harvest_disk, estimate_harvest
        est = estimate_harvest(model, cfg, left // world)
        if rank == 0:
            print(f"harvest {model.name} {','.join(cfg.sites)}: {est}", file=sys.stderr, flush=True)
        check_harvest_disk(est, str(root))
        if cfg.dry_run:
            return None
    if root.exists() and not root.is_dir():
        raise StoreError(f"output {str(root)!r} exists and is not a folder")
    with contextlib.ExitStack() as stack:
        err = None
        if rank == 0:   # one lock per harvest: rank 0 holds it and tells the other ranks whether it got it
            try:
                stack.enter_context(folder_lock(root, what="actlab harvest"))
            except ArtifactError as e:
                err = str(e)
        err = D.broadcast_object(err)
        if err:
            raise StoreError(err)
        return _harvest(model, cfg, docs, root, rank, world)


def _harvest(model: Model, cfg: HarvestConfig, docs: list[str], root: Path, rank: int, world: int
             ) -> ActivationStore:
    ident = cfg.identity(model, world)
    ident_hash = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    existing = _prepare(root, ident, rank)
    tok = model.tokenizer
    base = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": {"name": model.name, "revision": model.revision, "family": model.family},
            "tokenizer": {"name_or_path": getattr(tok, "name_or_path", ""), "class": type(tok).__name__,
                          "vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                          "special_ids": sorted(tok.all_special_ids)},
            "sites": cfg.sites, "dtype": cfg.store_dtype, "context_length": cfg.context_length, "world_size": world,
            "harvest": ident, "identity": ident_hash, "extra": cfg.extra}
    if existing is not None:
        base["created"] = existing.get("created", base["created"])
    if existing is None and rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _write_json(root / MANIFEST, _manifest(base, [], False))
    D.barrier()
    # temporary files of a killed run: this rank's half-written shards and progress, rank 0's manifest
    stale = [f".shard-r{rank:03d}-*.tmp", f".{PROGRESS.format(rank=rank)}.*.tmp"]
    stale += [f".{MANIFEST}.*.tmp"] if rank == 0 else []
    for pattern in stale:
        for t in root.glob(pattern):
            t.unlink(missing_ok=True)
    _run_rank(model, cfg, docs, root, rank, world, base, ident_hash)
    D.barrier()
    if rank == 0:
        progress = [json.loads((root / PROGRESS.format(rank=r)).read_text()) for r in range(world)
                    if (root / PROGRESS.format(rank=r)).exists()]
        _write_json(root / MANIFEST, _manifest(base, progress, all(p.get("done") for p in progress)
                                                     and len(progress) == world))
    D.barrier()
    return ActivationStore(root)


def _run_rank(model: Model, cfg: HarvestConfig, docs, root: Path, rank: int, world: int, base: dict,
              ident_hash: str) -> None:
    from tqdm.auto import tqdm

    done = _load_progress(root, rank, ident_hash)
    ppath = root / PROGRESS.format(rank=rank)
    prev = json.loads(ppath.read_text()) if ppath.exists() else {}
    state = {"rank": rank, "world_size": world, "identity": ident_hash, "shards": done, "done": False,
             "dims": prev.get("dims", {}), "site_shapes": prev.get("site_shapes", {}),
             "shard_rows": prev.get("shard_rows")}
    if prev.get("done") and len(done) == len(prev.get("shards", [])):
        return
    skip = sum(e["rows"] for e in done)
    dtype = parse_dtype(cfg.store_dtype)
    device = model.device

    def on_shard(entry: dict) -> None:
        state["shards"] = state["shards"] + [entry]
        _write_json(ppath, state)
        if world == 1:
            _write_json(root / MANIFEST, _manifest(base, [state], False))

    writer: ShardWriter | None = None
    bar = tqdm(total=(cfg.tokens // world if cfg.tokens else None), initial=skip, unit="tok", unit_scale=True,
               disable=not (cfg.progress and rank == 0), desc=f"harvest {model.name}", dynamic_ncols=True)
    ok = False
    try:
        def run(ids_cpu, doc, pos, mask):
            nonlocal writer
            ids = ids_cpu.to(device)
            acts = model.record(ids, cfg.sites, dtype=dtype, stop_early=True)
            mask_d = mask.to(device)
            chunk = {}
            for s in cfg.sites:
                a = acts[s]
                if s not in state["site_shapes"]:
                    state["site_shapes"][s] = list(a.shape[2:])
                    state["dims"][s] = int(torch.tensor(a.shape[2:]).prod()) if a.dim() > 2 else 1
                chunk[s] = a.reshape(a.shape[0], a.shape[1], -1)[mask_d].to("cpu", non_blocking=False)
            chunk[TOKENS] = ids_cpu[mask].to(torch.int32)
            chunk[DOC] = doc[mask].to(torch.int32)
            chunk[POS] = pos[mask].to(torch.int32)
            if writer is None:
                if state["shard_rows"] is None:
                    row_bytes = sum(v[:1].numel() * v.element_size() for v in chunk.values())
                    state["shard_rows"] = cfg.shard_rows or max(256, (SHARD_BYTES // row_bytes) // 256 * 256)
                writer = ShardWriter(root, rank, len(state["shards"]), state["shard_rows"], chunk, on_shard,
                                     cfg.queue_size)
            writer.put(chunk)
            bar.update(int(mask.sum()))

        with torch.no_grad():   # tokenizing and packing the next batches overlaps with this batch's forward
            for ids, dd, pp, mask in prefetch(_batches(_plan(cfg, model.tokenizer, docs, rank, world),
                                                       cfg.batch_size, skip)):
                run(ids, dd, pp, mask)
        if writer is not None:
            writer.close()
        ok = True
    finally:
        bar.close()
        if not ok and writer is not None:
            writer.abort()
    state["done"] = True
    _write_json(ppath, state)
