"""One streaming pass that feeds every statistic: residual stream (massive activations), MLP hidden units
(sparsity) and linear-layer inputs (ranges, kurtosis, outliers). Memory is O(layers x width), not O(tokens).

Fed on the fly from hooks during the model's forward pass (``collect``), or from any source of ``[b, p, d]``
tensors through ``StatsCollector.update`` (e.g. an ``ActivationStore``; see ``collect_from_store``).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from actlab.stats.massive import LayerMassive
from actlab.stats.quant import ChannelStats, stats_threads
from actlab.stats.sparsity import SparsityStats

if TYPE_CHECKING:
    from actlab.models import Model
    from actlab.store import ActivationStore

log = logging.getLogger(__name__)


def linear_input_groups(model: Model, include_head: bool = False) -> dict[str, list[str]]:
    """Linear layers that read the same tensor (q/k/v, gate/up) grouped under one name, found by watching one
    short forward pass: ``{group_name: [module paths]}``. The group name is the first path with the sibling
    names joined, e.g. ``model.layers.0.self_attn.{q_proj,k_proj,v_proj}``."""
    from actlab.stats.calibration import linear_layers

    paths = linear_layers(model, include_head)
    seen: dict[tuple, list[str]] = {}

    def make(p):
        def h(act, ctx):   # same tensor and same parent module (freed memory is reused across layers)
            seen.setdefault((act.data_ptr(), tuple(act.shape), p.rsplit(".", 1)[0]), []).append(p)
        return h

    x = torch.full((1, 4), _some_token(model), dtype=torch.long, device=model.device)
    with torch.no_grad(), model.hooks([(f"module:{p}:in", make(p)) for p in paths]):
        model(x, use_cache=False) if model.config is not None else model(x)
    groups = {}
    for ps in seen.values():
        heads = {p.rsplit(".", 1)[0] for p in ps}
        if len(ps) == 1 or len(heads) != 1:
            name = ps[0]
        else:
            name = f"{ps[0].rsplit('.', 1)[0]}.{{{','.join(p.rsplit('.', 1)[1] for p in ps)}}}"
        groups[name] = ps
    return groups


def _some_token(model: Model) -> int:
    tok = model.tokenizer
    for attr in ("bos_token_id", "eos_token_id"):
        v = getattr(tok, attr, None) if tok is not None else None
        if v is not None:
            return int(v)
    return 1


def group_kind(name: str) -> str:
    """The layer-independent kind of a site or group name (``layers.7.`` -> ``layers.{i}.``)."""
    return re.sub(r"\.(\d+)\.", ".{i}.", name, count=1)


def layer_index(name: str) -> int:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


@dataclass
class StatsCollector:
    """Accumulators by site: ``massive`` (resid_post per layer), ``sparsity`` (mlp_act per layer), ``channels``
    (linear-input groups). ``update(site, act, ids)`` routes a ``[b, p, d]`` tensor to its accumulator."""

    massive: dict[str, LayerMassive] = field(default_factory=dict)
    sparsity: dict[str, SparsityStats] = field(default_factory=dict)
    channels: dict[str, ChannelStats] = field(default_factory=dict)
    n_tokens: int = 0
    n_seq: int = 0
    seconds: float = 0.0
    threads: int | None = None
    """CPU threads for the accumulator math (None: leave torch's setting). On a quiet machine switching the
    thread count around every hand-over costs more than it saves (accumulators 1.7 s vs 2.3 s per 2048 SmolLM2
    tokens); on an oversubscribed one, 1 thread avoids OpenMP stalls (20-100x slower elementwise ops were seen
    with 2 threads on a loaded 2-core machine)."""

    def update(self, site: str, act: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Route one ``[b, p, d]`` tensor to its accumulator(s)."""
        self.update_many([(site, act, ids)])

    def update_many(self, items: list[tuple[str, torch.Tensor, torch.Tensor | None]]) -> None:
        """Route several tensors under one thread-count switch (switching costs a thread wake-up each time)."""
        if not items:
            return
        t0 = time.perf_counter()
        with stats_threads(self.threads, items[0][1].device):
            for site, act, ids in items:
                if site in self.massive:
                    self.massive[site].update(act, ids)
                if site in self.sparsity:
                    self.sparsity[site].update(act)
                if site in self.channels:
                    self.channels[site].update(act)
        self.seconds += time.perf_counter() - t0


def make_collector(model: Model, massive: bool = True, sparsity: bool = True, outliers: bool = True,
                   sparsity_eps: float | None | str = "auto", top_k: int = 10) -> tuple[StatsCollector, dict]:
    """A collector for ``model`` plus the hook plan ``{hook site: collector key}``."""
    from actlab.stats.sparsity import mlp_threshold

    col = StatsCollector()
    plan: dict[str, str] = {}
    n = model.n_layers
    if massive:
        for i in range(n):
            s = f"blocks.{i}.resid_post"
            if s in model.sites:
                col.massive[s] = LayerMassive(model.d_model, top_k=top_k)
                plan[s] = s
    if sparsity:
        eps = mlp_threshold(model) if sparsity_eps == "auto" else sparsity_eps
        for i in range(n):
            s = f"blocks.{i}.mlp_act"
            if s in model.sites:
                col.sparsity[s] = SparsityStats(int(model.adapter.d_mlp), eps)
                plan[s] = s
    if outliers:
        from actlab.stats.calibration import weight_out_in

        mods = dict(model.module.named_modules())
        for name, paths in linear_input_groups(model).items():
            d = weight_out_in(model, mods[paths[0]]).shape[1]
            col.channels[name] = ChannelStats(int(d))
            plan[f"module:{paths[0]}:in"] = name
    return col, plan


def collect(model: Model, ids: torch.Tensor, col: StatsCollector, plan: dict[str, str], batch_size: int = 4,
            progress: bool = True, flush_every: int = 6) -> StatsCollector:
    """Run the model over contexts ``ids`` ``[n, L]`` (no padding), feeding every planned site to ``col`` from
    inside the forward pass; the pass stops after the last needed site. Activations are handed over in groups of
    ``flush_every`` (about one layer's sites), so at most that many are held at once."""
    from tqdm.auto import tqdm

    from actlab.core import StopForward

    if ids.dim() != 2:
        raise ValueError(f"collect needs token ids [n_contexts, length]; got shape {list(ids.shape)}")
    current: dict[str, torch.Tensor] = {}
    calls: list[str] = []          # hook order seen in the first batch; afterwards stop after the last one
    state = {"last": None}

    pending: list = []

    def make(site, key):
        def h(act, ctx):
            pending.append((key, act.detach(), current["ids"]))
            if len(pending) >= flush_every or site == state["last"]:
                col.update_many(pending)
                pending.clear()
            if state["last"] is None:
                calls.append(site)
            elif site == state["last"]:
                raise StopForward
        return h

    with torch.no_grad(), model.hooks([(s, make(s, k)) for s, k in plan.items()]):
        for s in tqdm(range(0, len(ids), batch_size), desc="stats", unit="batch", disable=not progress):
            x = ids[s:s + batch_size].to(model.device)
            current["ids"] = x
            try:
                model(x, use_cache=False)
            except StopForward:
                pass
            col.update_many(pending)
            pending.clear()
            if state["last"] is None and calls:
                state["last"] = calls[-1]
            col.n_tokens += x.numel()
            col.n_seq += x.shape[0]
    return col


def collect_from_store(store: ActivationStore, col: StatsCollector, site_map: dict[str, str], batch_contexts: int = 8) -> StatsCollector:
    """Feed ``col`` from an ``actlab.store.ActivationStore`` holding whole contexts (rows in context order):
    ``site_map`` maps store site names to collector keys; rows are regrouped into ``[b, L, d]`` sequences."""
    L = store.context_length
    if len(store) % L:
        raise ValueError(f"store {store.path} holds {len(store)} rows, not whole contexts of {L} tokens (harvest with "
                         "positions='all' and no token exclusions to compute per-sequence statistics)")
    n_ctx = len(store) // L
    for s in range(0, n_ctx, batch_contexts):
        rows = list(range(s * L, min(n_ctx, s + batch_contexts) * L))
        toks = store.tokens(rows).view(-1, L)
        for site, key in site_map.items():
            a = store.read(site, rows, dtype=torch.float32)
            col.update(key, a.view(-1, L, a.shape[-1]), toks)
        col.n_tokens += len(rows)
        col.n_seq += len(rows) // L
    return col
