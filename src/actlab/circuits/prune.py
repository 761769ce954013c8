"""Influence and pruning of attribution graphs (circuit-tracer's scheme), and the top path to a target.

The adjacency is normalised row-wise (``|A| / sum |A|``: each target's inputs as fractions); the influence of a node
on the targets is ``w @ (A + A^2 + ...)`` = ``w @ ((I - A)^-1 - I)`` with ``w`` the target weights. The graph is a
DAG (sources sit in earlier layers), so the power series ends after at most depth terms; ``method='inverse'``
solves the linear system instead (same numbers, a check). Nodes are kept up to a cumulative influence fraction,
then edges by edge influence, then nodes left without an outgoing (or, for latents, incoming) edge are dropped.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from actlab.circuits.graph import AttributionGraph

Tensor = torch.Tensor


def normalize_matrix(A: Tensor) -> Tensor:
    """``|A|`` with each row divided by its sum (rows of zeros stay zero)."""
    n = A.abs()
    return n / n.sum(1, keepdim=True).clamp_min(1e-10)


def compute_influence(A: Tensor, weights: Tensor, method: str = "series", max_iter: int = 1000) -> Tensor:
    """``weights @ (A + A^2 + ...)`` for a nilpotent (DAG) ``A``: power series or ``(I - A)^-1 - I``."""
    if method == "inverse":
        n = A.shape[0]
        eye = torch.eye(n, dtype=torch.float64)
        B = torch.linalg.solve((eye - A.double()).T, weights.double())    # w (I - A)^-1
        return (B - weights.double()).to(A.dtype)
    if method != "series":
        raise ValueError(f"influence method must be 'series' or 'inverse'; got {method!r}")
    cur = weights @ A
    infl = cur.clone()
    for _ in range(max_iter):
        cur = cur @ A
        if not cur.any():
            return infl
        infl += cur
    raise RuntimeError(f"influence did not converge after {max_iter} terms (is the adjacency acyclic?)")


def node_influence(graph: AttributionGraph, method: str = "series") -> Tensor:
    """``[N]``: each node's total (normalised, absolute) influence on the weighted targets."""
    return compute_influence(normalize_matrix(graph.adjacency), graph.target_weights.to(graph.adjacency.dtype),
                             method)


def edge_influence(pruned: Tensor, weights: Tensor) -> Tensor:
    """``[N, N]``: normalised edge weight times the influence (plus own weight) of its target."""
    norm = normalize_matrix(pruned)
    infl = compute_influence(norm, weights) + weights
    return norm * infl[:, None]


def find_threshold(scores: Tensor, threshold: float) -> Tensor:
    """The score above which the top scores carry ``threshold`` of the total."""
    s = scores.sort(descending=True).values
    cum = s.cumsum(0) / s.sum()
    i = min(int(torch.searchsorted(cum, torch.tensor(threshold, dtype=cum.dtype))), len(cum) - 1)
    return s[i]


class PruneResult(NamedTuple):
    node_mask: Tensor          # [N] bool: nodes kept
    edge_mask: Tensor          # [N, N] bool: edges kept
    cumulative_scores: Tensor  # [N]: each node's rank as a cumulative influence fraction (lower = more important)


def prune_graph(graph: AttributionGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98
                ) -> PruneResult:
    """Keep the nodes carrying ``node_threshold`` of the influence (tokens and targets always), then the edges
    carrying ``edge_threshold`` of the edge influence; iterate away nodes left without edges."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {v}")
    P, K, nf = graph.n_pos, graph.n_targets, graph.n_features
    w = graph.target_weights.to(graph.adjacency.dtype)
    infl = node_influence(graph)
    node_mask = infl >= find_threshold(infl, node_threshold)
    node_mask[-K - P:] = True
    pruned = graph.adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    scores = edge_influence(pruned, w)
    edge_mask = scores >= find_threshold(scores.flatten(), edge_threshold)
    old = node_mask.clone()
    node_mask[:-K - P] &= edge_mask[:, :-K - P].any(0)
    node_mask[:nf] &= edge_mask[:nf].any(1)
    while not torch.equal(node_mask, old):
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:-K - P] &= edge_mask[:, :-K - P].any(0)
        node_mask[:nf] &= edge_mask[:nf].any(1)
    s, order = infl.sort(descending=True)
    cum = torch.zeros_like(infl)
    cum[order] = s.cumsum(0) / s.sum()
    return PruneResult(node_mask, edge_mask, cum)


def top_paths(graph: AttributionGraph, k: int = 1, target: int = 0) -> list[tuple[float, list[int]]]:
    """The ``k`` source-to-target paths with the largest product of normalised edge weights into target ``target``
    (0: the first target logit), as ``(score, [node, ..., target node])``, best first. A path starts at a token or
    error node (a source with no inputs) and follows edges toward the target."""
    A = normalize_matrix(graph.adjacency).double()
    N = A.shape[0]
    t = N - graph.n_targets + target
    # best[s]: best product from s to t; DAG, so N relaxations at most (depth in practice)
    best = torch.zeros(N, dtype=torch.float64)
    best[t] = 1.0
    for _ in range(N):
        nb = torch.maximum(best, (A * best[:, None]).max(0).values)
        nb[t] = 1.0
        if torch.equal(nb, best):
            break
        best = nb
    nxt = (A * best[:, None]).argmax(0)
    leaves = (graph.adjacency.abs().sum(1) == 0)
    leaves[t] = False
    starts = leaves.nonzero()[:, 0]
    ranked = starts[best[starts].argsort(descending=True)][:k]
    out = []
    for s in ranked.tolist():
        path, cur = [s], s
        while cur != t and len(path) <= N:
            cur = int(nxt[cur])
            path.append(cur)
        out.append((float(best[s]), path))
    return out


__all__ = ["PruneResult", "compute_influence", "edge_influence", "find_threshold", "node_influence",
           "normalize_matrix", "prune_graph", "top_paths"]
