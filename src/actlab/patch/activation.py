"""Activation patching: sweep sites x positions (x heads), batching many patch cells into one forward pass.

Each cell (site, positions, head) becomes one row of an expanded batch; a per-row bool-mask intervention writes
the source run's activation only where that row's mask is set, so a whole sweep costs a few forwards instead of
one per cell (see ``bench/patch_sweep.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from actlab.core import Intervention
from actlab.patch.common import MetricLike, PatchResult, PromptPairs, last_logits, make_pairs, site_list

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


@dataclass
class RowMaskPatch(Intervention):
    """Rows of an expanded batch take ``source`` where ``mask`` is True.

    ``source``: [rows, pos, ...] (same shape as the activation); ``mask``: bool [rows, pos] or, for per-head sites,
    [rows, pos, heads]. Not serializable (a transient sweep helper).
    """

    source: torch.Tensor = None
    mask: torch.Tensor = None

    def edit(self, act, ctx):
        if tuple(self.source.shape) != tuple(act.shape):
            raise ValueError(f"RowMaskPatch source has shape {list(self.source.shape)}; the activation at "
                             f"{ctx.site!r} is {list(act.shape)}")
        mask = self.mask
        if tuple(mask.shape) != tuple(act.shape[:mask.dim()]):
            raise ValueError(f"RowMaskPatch mask has shape {list(mask.shape)}; expected the leading dims of "
                             f"{list(act.shape)} at {ctx.site!r}")
        mask = mask.view(*mask.shape, *([1] * (act.dim() - mask.dim())))
        return torch.where(mask.to(act.device), self.source.to(device=act.device, dtype=act.dtype), act)


@dataclass
class GrowRows(Intervention):
    """At a block's input: append ``count`` copies of row 0 (the unpatched base run) to the batch.

    Why: every cell of a sweep shares the base run up to the block holding its site, so the forward starts at batch
    1 and grows block by block (cells patched there by ``RowsPatch``): the layers before a cell's block run once, not
    once per cell. ``order``: a shared list each firing appends ``block`` to. Not serializable (a sweep helper)."""

    count: int = 0
    order: list = None
    block: int = 0

    def edit(self, act, ctx):
        self.order.append(self.block)
        return torch.cat([act, act[:1].expand(self.count, *act.shape[1:])])


@dataclass
class RowsPatch(Intervention):
    """Rows of a (grown) batch take ``source`` [1, pos, ...] where ``mask`` (bool [rows, pos] or [rows, pos, heads])
    is set. Not serializable (a sweep helper)."""

    source: torch.Tensor = None
    mask: torch.Tensor = None

    def edit(self, act, ctx):
        if tuple(self.source.shape[1:]) != tuple(act.shape[1:]) or self.mask.shape[0] != act.shape[0]:
            raise ValueError(f"RowsPatch source {list(self.source.shape)} / mask {list(self.mask.shape)} do not fit "
                             f"the activation {list(act.shape)} at {ctx.site!r}")
        mask = self.mask.view(*self.mask.shape, *([1] * (act.dim() - self.mask.dim())))
        return torch.where(mask.to(act.device), self.source.to(device=act.device, dtype=act.dtype), act)


@dataclass(frozen=True)
class Cell:
    """One patch: ``site``, the columns it covers (bool [width]), and a head index for per-head sites (or None)."""

    site: str
    cols: tuple[int, ...]
    head: int | None = None


def position_cells(width: int, positions) -> tuple[list[tuple[int, ...]], list[str] | None]:
    """Column groups for a positions spec: 'each' (one cell per column), 'all' (one cell), or single columns from
    'last', an int, a slice or a list (negative = from the end)."""
    if positions == "each":
        return [(j,) for j in range(width)], None
    if positions == "all":
        return [tuple(range(width))], ["all"]
    if positions == "last":
        positions = [-1]
    if isinstance(positions, slice):
        positions = list(range(width))[positions]
        if not positions:
            raise ValueError(f"the position slice selects no column of prompts of width {width}")
    if isinstance(positions, int):
        positions = [positions]
    if isinstance(positions, (list, tuple)):
        cols = [(p if p >= 0 else width + p,) for p in positions]
        for (c,), p in zip(cols, positions):
            if not 0 <= c < width:
                raise ValueError(f"position {p} is out of range for prompts of width {width}")
        return cols, None
    raise ValueError(f"positions must be 'each', 'all', 'last', an int, a slice or a list of ints; got {positions!r}")


def _cell_mask(cells: list[Cell], width: int, heads: int | None) -> torch.Tensor:
    """bool [len(cells), width(, heads)]: where each cell writes the source."""
    mask = torch.zeros((len(cells), width) + ((heads,) if heads else ()), dtype=torch.bool)
    for r, c in enumerate(cells):
        cols = torch.as_tensor(c.cols)
        if c.head is None:
            mask[r, cols] = True
        else:
            mask[r, cols, c.head] = True
    return mask


def _block(site: str) -> int | None:
    parts = site.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def can_grow(m: Model, sites) -> bool:
    """True when every site lies inside a block (``blocks.{i}.*``) and is a plain tensor the engine can hand over
    with more batch rows: not an attention pattern, a part of a fused projection, a flattened MoE token view or an
    output rebuilt from it; and the blocks' inputs (``resid_pre``, where the batch grows) are plain too."""
    for s in set(sites):
        if _block(s) is None:
            return False
        for name in (s, f"blocks.{_block(s)}.resid_pre"):
            spec = m.sitemap.resolve(name)
            if spec.pattern or spec.split is not None or spec.flat_tokens or spec.rebuild is not None:
                return False
    return True


def run_cells_grown(m: Model, pairs: PromptPairs, cells: list[Cell], metric: MetricLike,
                    source: dict[str, torch.Tensor], *, base: str, batch_size: int = 64,
                    progress: bool = False) -> torch.Tensor | None:
    """``run_cells`` with a growing batch: per pair and chunk of ``batch_size`` cells, one forward of the base row;
    at each block's input the chunk's cells of that block are appended (``GrowRows``) and patched at their sites
    (``RowsPatch``). None when the model's forward cannot carry the grown batch (a RuntimeError / IndexError) or a
    block input does not fire exactly once in order: the caller then runs one row per cell."""
    n, width = pairs.n, pairs.width
    out = torch.empty(len(cells), n)
    bar = tqdm(total=len(cells) * n, desc="patch", disable=not progress, unit="row")
    try:
        for lo in range(0, len(cells), batch_size):
            chunk = sorted(range(lo, min(len(cells), lo + batch_size)), key=lambda i: _block(cells[i].site))
            blocks = sorted({_block(cells[i].site) for i in chunk})
            rows_upto = {b: 1 + sum(_block(cells[i].site) <= b for i in chunk) for b in blocks}
            by_site: dict[str, list[int]] = {}
            for r, i in enumerate(chunk, start=1):        # row 0 is the unpatched base run
                by_site.setdefault(cells[i].site, []).append(r)
            for p in range(n):
                rows_pair = torch.tensor([p], device=pairs.clean_ids.device)
                order: list[int] = []
                ivs = [(f"blocks.{b}.resid_pre", GrowRows(count=rows_upto[b] - (rows_upto[prev] if k else 1),
                                                          order=order, block=b))
                       for k, (prev, b) in enumerate(zip([None] + blocks[:-1], blocks))]
                for site, rows in by_site.items():
                    src = source[site][p:p + 1]
                    heads = src.shape[2] if src.dim() == 4 else None
                    mask = torch.zeros((rows_upto[_block(site)], width) + ((heads,) if heads else ()), dtype=torch.bool)
                    mask[rows] = _cell_mask([cells[chunk[r - 1]] for r in rows], width, heads)
                    ivs.append((site, RowsPatch(source=src, mask=mask.to(src.device))))
                with torch.no_grad(), m.intervene(ivs):
                    logits = last_logits(m, pairs.inputs(base, rows_pair))
                if order != blocks or logits.shape[0] != 1 + len(chunk):
                    return None                               # a block input fired twice or never
                vals = metric(logits, rows_pair.expand(logits.shape[0])).float().cpu()
                out[chunk, p] = vals[1:]
                bar.update(len(chunk))
    except (RuntimeError, IndexError) as e:
        log.info("activation patching: the forward cannot carry a grown batch (%s); one row per cell instead", e)
        return None
    finally:
        bar.close()
    return out


def run_cells(m: Model, pairs: PromptPairs, cells: list[Cell], metric: MetricLike, source: dict[str, torch.Tensor], *,
              base: str, batch_size: int = 64, progress: bool = False, grow: bool = True) -> torch.Tensor:
    """Metric for every (cell, pair): ``[n_cells, n_pairs]``. ``grow`` (where ``can_grow``): ``run_cells_grown``;
    else rows = cells x pairs, ``batch_size`` rows a forward, each row the whole base run with its patch."""
    if grow and can_grow(m, [c.site for c in cells]):
        vals = run_cells_grown(m, pairs, cells, metric, source, base=base, batch_size=batch_size, progress=progress)
        if vals is not None:
            return vals
    n = pairs.n
    width = pairs.width
    total = len(cells) * n
    out = torch.empty(total)
    cell_of = torch.arange(total) // n
    pair_of = torch.arange(total) % n
    bar = tqdm(total=total, desc="patch", disable=not progress, unit="row")
    for lo in range(0, total, batch_size):
        hi = min(total, lo + batch_size)
        rows_pair = pair_of[lo:hi].to(pairs.clean_ids.device)
        by_site: dict[str, list[int]] = {}
        for r in range(lo, hi):
            by_site.setdefault(cells[int(cell_of[r])].site, []).append(r - lo)
        ivs = []
        for site, rows in by_site.items():
            src = source[site][rows_pair]
            heads = src.shape[2] if src.dim() == 4 else None
            mask = torch.zeros((hi - lo, width) + ((heads,) if heads else ()), dtype=torch.bool)
            mask[rows] = _cell_mask([cells[int(cell_of[lo + r])] for r in rows], width, heads)
            ivs.append((site, RowMaskPatch(source=src, mask=mask.to(src.device))))
        with torch.no_grad(), m.intervene(ivs):
            logits = last_logits(m, pairs.inputs(base, rows_pair))
        out[lo:hi] = metric(logits, rows_pair).float().cpu()
        bar.update(hi - lo)
    bar.close()
    return out.view(len(cells), n)


def activation_patch(m: Model, clean, corrupt=None, metric: MetricLike = None, sites="blocks.*.resid_pre", *,
                     positions="each", heads: bool = False, direction: str = "denoise", batch_size: int = 64,
                     align: str = "strict", progress: bool = False) -> PatchResult:
    """Patch each (site, position[, head]) cell from one run into the other and measure ``metric``.

    ``clean``/``corrupt``: prompts (texts or ids), or ``clean`` a ready ``PromptPairs``. ``direction='denoise'``
    runs the corrupted prompt and patches clean activations in (effect 1 = clean behaviour restored);
    ``'noise'`` runs the clean prompt with corrupted activations. ``heads=True`` patches per head on per-head
    sites (``blocks.{i}.attn.z``). Result dims: ``site, position[, head]`` (position label 'all' for a whole site).
    """
    if metric is None:
        raise ValueError("activation_patch needs a metric, e.g. LogitDiff(correct_id, incorrect_id)")
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pairs = clean if isinstance(clean, PromptPairs) else make_pairs(m, clean, corrupt, align=align)
    sites = site_list(m, sites)
    base, src_name = ("corrupt", "clean") if direction == "denoise" else ("clean", "corrupt")
    source = m.record(pairs.inputs(src_name), sites)
    n_heads = None
    if heads:
        shapes = {s: tuple(source[s].shape) for s in sites}
        bad = [s for s, sh in shapes.items() if len(sh) != 4]
        if bad:
            raise ValueError(f"heads=True needs per-head sites ([batch, pos, head, d_head], e.g. 'blocks.0.attn.z'); "
                             f"{bad[0]!r} has shape {list(shapes[bad[0]])}")
        n_heads = shapes[sites[0]][2]
    pos_groups, pos_labels = position_cells(pairs.width, positions)
    if pos_labels is None:
        all_labels = pairs.position_labels()
        pos_labels = [all_labels[g[0]] for g in pos_groups]
    cells = [Cell(s, g, h) for s in sites for g in pos_groups for h in (range(n_heads) if heads else [None])]
    with torch.no_grad():
        idx = torch.arange(pairs.n, device=pairs.clean_ids.device)
        clean_v = metric(last_logits(m, pairs.inputs("clean")), idx).float().mean().item()
        corrupt_v = metric(last_logits(m, pairs.inputs("corrupt")), idx).float().mean().item()
    vals = run_cells(m, pairs, cells, metric, source, base=base, batch_size=batch_size, progress=progress)
    shape = (len(sites), len(pos_groups)) + ((n_heads,) if heads else ())
    dims = ("site", "position") + (("head",) if heads else ())
    labels = {"site": sites, "position": pos_labels}
    if heads:
        labels["head"] = [str(h) for h in range(n_heads)]
    per_pair = vals.view(*shape, pairs.n)
    log.info("activation patching: %d cells x %d pairs", len(cells), pairs.n)
    return PatchResult(per_pair.mean(-1), dims, labels, clean_v, corrupt_v, getattr(metric, "name", "metric"),
                       "activation", direction, per_pair, {"width": pairs.width, "n_pairs": pairs.n})
