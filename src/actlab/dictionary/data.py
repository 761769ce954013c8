"""Batch sources for training and evaluation: in-memory tensors, an actlab store, or a model on the fly.

Every source yields ``x [B, d_in]`` (SAE) or ``(x, y)`` pairs (transcoder), optionally with a downstream gradient
(``(x, y, g)`` for g-SAE). Sources are re-creatable from a seed so a resumed run sees the same batches.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

Batch = torch.Tensor | tuple[torch.Tensor, ...]
Source = Callable[[int], Iterator[Batch]]   # epoch -> iterator of batches


def check_batch(t: torch.Tensor, d: int | None, what: str = "activations") -> torch.Tensor:
    """Shape [B, d] floating and finite, else a clear error."""
    if t.dim() != 2:
        raise ValueError(f"{what} must be [batch, d]; got shape {list(t.shape)}")
    if d is not None and t.shape[1] != d:
        raise ValueError(f"{what} have d={t.shape[1]} but the dictionary expects d_in={d} (d_in mismatch)")
    if not t.is_floating_point():
        raise TypeError(f"{what} must be floating point; got {t.dtype}")
    # one sum is non-finite whenever an element is (a finite sum overflowing is rare: then the full check decides)
    if not bool(torch.isfinite(t.sum(dtype=torch.float64))) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(1).sum())
        raise ValueError(f"{what} contain NaN/inf values ({bad} of {t.shape[0]} rows); clean the store or "
                         f"check the model's dtype (fp16 overflow?)")
    return t


def tensor_source(x: torch.Tensor, batch_size: int, y: torch.Tensor | None = None, seed: int = 0,
                  shuffle: bool = True, drop_last: bool = True) -> Source:
    """Batches of rows of in-memory tensors, reshuffled each epoch with ``seed + epoch``."""
    x = x.reshape(-1, x.shape[-1])
    if y is not None:
        y = y.reshape(-1, y.shape[-1])
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")

    def make(epoch: int):
        n = x.shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)) if shuffle else \
            torch.arange(n)
        stop = n - batch_size + 1 if drop_last else n
        for i in range(0, max(stop, 0), batch_size):
            sel = order[i:i + batch_size]
            yield x[sel] if y is None else (x[sel], y[sel])
    return make


def store_source(store, site: str, batch_size: int, site_out: str | None = None, seed: int = 0,
                 rank: int = 0, world: int = 1) -> Source:
    """Shuffled batches of a store's site (``store.batches``); with ``site_out``, aligned (x, y) row pairs."""
    for s in [site] + ([site_out] if site_out else []):
        if s not in store.sites:
            raise KeyError(f"the store at {getattr(store, 'path', '?')} has no site {s!r}; it holds {store.sites}")

    if site_out is None:
        def make(epoch: int):
            return store.batches(site, batch_size=batch_size, shuffle=True, seed=seed + epoch,
                                 dtype=torch.float32, drop_last=True, rank=rank, world=world)
        return make

    def make_pairs(epoch: int):
        n = len(store)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        order = order[rank::world]
        for i in range(0, order.numel() - batch_size + 1, batch_size):
            rows = order[i:i + batch_size].sort().values
            yield store.read(site, rows, dtype=torch.float32), store.read(site_out, rows, dtype=torch.float32)
    return make_pairs


def _contexts(model, texts: Sequence[str], context_length: int, seed: int):
    from actlab.data.pack import iter_contexts
    return iter_contexts(model.tokenizer, list(texts), context_length, seed=seed)


def site_width(model: Model, site: str) -> int:
    """Width of one row of ``site`` (heads flattened: ``attn.z`` is n_heads * d_head, ``mlp_act`` is d_mlp), from a
    two-token forward pass."""
    model.check_sites([site])
    ids = torch.ones(1, 2, dtype=torch.long)
    act = model.record(ids, sites=[site])[site]
    return math.prod(act.shape[2:])


def _rows(t: torch.Tensor, skip_first: int) -> torch.Tensor:
    """[B, L, ...] -> [B * (L - skip_first), width] (per-head sites flattened)."""
    return t[:, skip_first:].reshape(-1, math.prod(t.shape[2:]))


def model_source(model: Model, site: str, texts: Sequence[str], batch_size: int, site_out: str | None = None,
                 context_length: int = 128, contexts_per_forward: int = 8, with_grad: bool = False,
                 skip_first: int = 1, seed: int = 0) -> Source:
    """Record batches on the fly: pack ``texts`` into contexts, run the model, shuffle rows within a buffer.

    ``with_grad``: also return the gradient of next-token cross-entropy w.r.t. the site's activation (g-SAE).
    ``skip_first`` drops the first positions of every context (BOS rows carry huge, uninformative activations).
    """
    model.check_sites([site] + ([site_out] if site_out else []))
    if with_grad and not model.is_causal_lm:
        raise ValueError(f"with_grad uses the next-token loss's gradient, which needs a causal LM; {model.name} "
                         f"({model.family}) is not one")

    def rows_of(ids: torch.Tensor):
        if with_grad:
            return _record_with_grad(model, site, ids, skip_first)
        sites = [site] + ([site_out] if site_out else [])
        acts = model.record(ids, sites=sites, dtype=torch.float32)
        return [_rows(acts[s], skip_first) for s in sites]

    def make(epoch: int):
        buf: list[list[torch.Tensor]] = []
        g = torch.Generator().manual_seed(seed + epoch)
        pending: list[torch.Tensor] = []
        n_buf = 0

        def drain(final: bool):
            nonlocal buf, n_buf
            cols = [torch.cat(c) for c in zip(*buf)]
            perm = torch.randperm(cols[0].shape[0], generator=g)
            cols = [c[perm] for c in cols]
            n = cols[0].shape[0]
            stop = n if final else n - n % batch_size
            for i in range(0, stop - batch_size + 1, batch_size):
                b = [c[i:i + batch_size] for c in cols]
                yield b[0] if len(b) == 1 else tuple(b)
            rest = [c[stop:] for c in cols] if not final else []
            buf = [rest] if rest and rest[0].shape[0] else []
            n_buf = rest[0].shape[0] if buf else 0

        for ctx_ids, _doc, _pos in _contexts(model, texts, context_length, seed + epoch):
            pending.append(ctx_ids)
            if len(pending) < contexts_per_forward:
                continue
            cols = rows_of(torch.stack(pending))
            pending = []
            buf.append(cols)
            n_buf += cols[0].shape[0]
            if n_buf >= 4 * batch_size:
                yield from drain(False)
        if pending:
            buf.append(rows_of(torch.stack(pending)))
        if buf:
            yield from drain(True)
    return make


def _record_with_grad(model: Model, site: str, ids: torch.Tensor, skip_first: int) -> list[torch.Tensor]:
    """(acts, acts, d CE / d acts) at ``site`` for every position (next-token loss, mean over tokens)."""
    ids = ids.to(model.device)
    with model.recording([site], grad=True) as rec:
        logits = model(ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                 ids[:, 1:].reshape(-1))
        loss.backward()
        a, g = rec[site].detach().float(), rec.grad(site).float()
    a = _rows(a, skip_first)
    return [a, a, _rows(g, skip_first)]
