"""Interventional causal graphs over hidden units (channels/neurons), arXiv 2305.08950.

Node effect ``ACE(u) = E_x[s(x) - s(x | do(u = u_ref))]``; edge effect = mean |change| of a downstream unit when
an upstream unit is intervened on; nodes and edges kept layer by layer from the output backwards. Correlation and
gradient x activation scores are provided as the baselines the spec compares against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
from tqdm.auto import tqdm

from actlab.core import Fn

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class CausalGraphConfig:
    """Settings of ``causal_graph``."""

    ref: str = "mean"
    """intervention value: 'zero', 'mean' (dataset mean of the unit, the spec's recommendation) or 'tensor'."""
    unit_dim: int = -1
    """the dim of a site's activation that indexes units (-1 neurons, 1 conv channels of [b, C, H, W])."""
    node_threshold: float = 1e-6
    """keep a node when |ACE| exceeds this fraction of the layer's largest |ACE| (and > 0)."""
    top_k: int | None = None
    """keep at most this many nodes per layer (by |ACE|); None = threshold only."""
    edge_threshold: float = 1e-6
    """keep an edge when its effect exceeds this fraction of the largest edge effect between the two layers."""
    min_effect: float = 1e-6
    """keep a node only when |ACE| also exceeds this absolute floor (float rounding is not an effect: mean
    ablation through a linear readout gives ACE ~1e-8, which the relative threshold alone would keep)."""

    def __post_init__(self):
        if self.ref not in ("zero", "mean", "tensor"):
            raise ValueError(f"ref must be 'zero', 'mean' or 'tensor', got {self.ref!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.min_effect < 0:
            raise ValueError(f"min_effect must be >= 0, got {self.min_effect}")


def _unit_values(act: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Per-unit mean over every other dim -> [n_units]."""
    d = unit_dim % act.dim()
    return act.transpose(d, -1).reshape(-1, act.shape[d]).mean(0)


def _do_unit(unit: int, value: torch.Tensor, unit_dim: int) -> Fn:
    def f(act, ctx):
        out = act.clone()
        idx = [slice(None)] * act.dim()
        idx[unit_dim % act.dim()] = unit
        out[tuple(idx)] = value.to(act.dtype)
        return out
    return Fn(fn=f)


def reference_values(m: Model, inputs, site: str, cfg: CausalGraphConfig, ref_values=None) -> torch.Tensor:
    """The per-unit intervention value for ``site`` (zeros, dataset mean, or the given tensor)."""
    act = m.record(inputs, [site])[site]
    n = act.shape[cfg.unit_dim]
    if cfg.ref == "zero":
        return torch.zeros(n)
    if cfg.ref == "mean":
        return _unit_values(act.float(), cfg.unit_dim)
    if ref_values is None or ref_values.shape != (n,):
        raise ValueError(f"ref='tensor' needs ref_values of shape [{n}] for {site!r}")
    return ref_values


def unit_ace(m: Model, inputs, site: str, score: Callable, cfg: CausalGraphConfig | None = None, *,
             ref_values=None, progress: bool = False) -> torch.Tensor:
    """ACE of every unit of ``site`` on ``score(output) -> [batch]`` (mean over the batch) -> [n_units]."""
    cfg = cfg or CausalGraphConfig()
    ref = reference_values(m, inputs, site, cfg, ref_values)
    with torch.no_grad():
        s0 = score(m(inputs)).float()
        out = torch.empty(len(ref))
        for u in tqdm(range(len(ref)), desc=f"ACE {site}", disable=not progress):
            with m.intervene({site: _do_unit(u, ref[u], cfg.unit_dim)}):
                out[u] = (s0 - score(m(inputs)).float()).mean()
    return out


def edge_effects(m: Model, inputs, up_site: str, down_site: str, up_units: list[int], cfg: CausalGraphConfig | None = None,
                 *, ref_values=None) -> torch.Tensor:
    """Mean |change| of each downstream unit when each upstream unit is set to its reference: [n_up, n_down]."""
    cfg = cfg or CausalGraphConfig()
    ref = reference_values(m, inputs, up_site, cfg, ref_values)
    with torch.no_grad():
        base = m.record(inputs, [down_site])[down_site].float()
        rows = []
        for u in up_units:
            with m.intervene({up_site: _do_unit(u, ref[u], cfg.unit_dim)}):
                new = m.record(inputs, [down_site])[down_site].float()
            rows.append(_unit_values((new - base).abs(), cfg.unit_dim))
    return torch.stack(rows) if rows else torch.zeros(0, base.shape[cfg.unit_dim])


@dataclass
class CausalGraph:
    """Kept units per site (forward order), their ACE, and kept edges ``(up_site, u, down_site, w, effect)``."""

    sites: list[str]
    nodes: dict[str, list[int]]
    ace: dict[str, torch.Tensor]
    edges: list[tuple[str, int, str, int, float]] = field(default_factory=list)
    ref: str = "mean"
    joint_effect: float | None = None
    """score drop when every kept unit of the last site is intervened on together (effects are not additive)."""

    def to_dict(self) -> dict:
        return {"sites": self.sites, "nodes": self.nodes, "ace": {k: v.tolist() for k, v in self.ace.items()},
                "edges": [list(e) for e in self.edges], "ref": self.ref, "joint_effect": self.joint_effect}


def _keep(ace: torch.Tensor, cfg: CausalGraphConfig) -> list[int]:
    a = ace.abs()
    top = float(a.max()) if a.numel() else 0.0
    keep = [i for i in range(len(a)) if a[i] > cfg.min_effect and a[i] > cfg.node_threshold * top]
    keep.sort(key=lambda i: -float(a[i]))
    return sorted(keep[:cfg.top_k] if cfg.top_k else keep)


def causal_graph(m: Model, inputs, sites: list[str], score: Callable, cfg: CausalGraphConfig | None = None, *,
                 progress: bool = False) -> CausalGraph:
    """Build the graph over ``sites`` (forward order): output-side layer first by ACE, then each earlier layer keeps
    units with a nonzero ACE *and* an edge into a kept unit of the next layer."""
    cfg = cfg or CausalGraphConfig()
    if not sites:
        raise ValueError("causal_graph needs at least one site")
    m.check_sites(sites)
    ace = {s: unit_ace(m, inputs, s, score, cfg, progress=progress) for s in sites}
    nodes = {sites[-1]: _keep(ace[sites[-1]], cfg)}
    edges = []
    for up, down in zip(reversed(sites[:-1]), reversed(sites[1:])):
        cand = _keep(ace[up], cfg)
        eff = edge_effects(m, inputs, up, down, cand, cfg)
        kept_down = nodes[down]
        top = float(eff[:, kept_down].max()) if eff.numel() and kept_down else 0.0
        keep = []
        for i, u in enumerate(cand):
            for w in kept_down:
                e = float(eff[i, w])
                if e > 0 and e > cfg.edge_threshold * top:
                    edges.append((up, u, down, w, e))
                    if u not in keep:
                        keep.append(u)
        nodes[up] = sorted(keep)
    last = sites[-1]
    joint = None
    if nodes[last]:
        ref = reference_values(m, inputs, last, cfg)
        with torch.no_grad():
            s0 = score(m(inputs)).float()
            ivs = [(last, _do_unit(u, ref[u], cfg.unit_dim)) for u in nodes[last]]
            with m.intervene(ivs):
                joint = float((s0 - score(m(inputs)).float()).mean())
    return CausalGraph(list(sites), {s: nodes[s] for s in sites}, ace, edges, cfg.ref, joint)


def correlation_scores(m: Model, inputs, site: str, score: Callable, unit_dim: int = -1) -> torch.Tensor:
    """Baseline: |Pearson correlation| across inputs between each unit's (mean) activation and the score."""
    with torch.no_grad(), m.recording([site]) as rec:
        s = score(m(inputs)).float()
    a = rec[site].float()
    d = unit_dim % a.dim()
    a = a.transpose(d, -1).reshape(a.shape[0], -1, a.shape[d]).mean(1)  # [batch, units]
    a = a - a.mean(0)
    s = s - s.mean()
    den = a.norm(dim=0) * s.norm()
    return ((a * s[:, None]).sum(0) / den.clamp_min(1e-12)).abs()


def grad_x_act_scores(m: Model, inputs, site: str, score: Callable, unit_dim: int = -1) -> torch.Tensor:
    """Baseline: mean over inputs of gradient x activation per unit (a first-order ACE with ref = 0)."""
    with m.recording([site], grad=True) as rec:
        s = score(m(inputs)).float()
        s.sum().backward()
    a = rec[site]
    ga = (rec.grad(site) * a).detach().float()
    d = unit_dim % ga.dim()
    return ga.transpose(d, -1).reshape(-1, ga.shape[d]).sum(0) / ga.shape[0]
