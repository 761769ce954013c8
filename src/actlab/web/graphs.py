"""Attribution graphs for the explorer's graph view: the circuit-tracer / Neuronpedia graph folders that
``actlab circuits graph`` writes (``graph-metadata.json`` listing slugs, ``<slug>.json`` per graph). A request names a
graph by the folder's id and a slug that must be listed in that folder's metadata; the file is then opened through
the same containment gate as every other served file, and the answer is bounded in nodes and links."""
from __future__ import annotations

import json
import re
from typing import Any

from actlab.web.paths import Forbidden, safe_file
from actlab.web.registry import Entry

SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
MAX_GRAPH_BYTES = 64 << 20
NODE_KEYS = ("node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "jsNodeId",
             "clerp", "influence", "activation")


def graph_slugs(e: Entry) -> list[str]:
    """The slugs a graph folder's ``graph-metadata.json`` lists (only safe names; others are not served)."""
    graphs = e.config.get("graphs") if isinstance(e.config, dict) else None
    return [g["slug"] for g in graphs or [] if isinstance(g, dict) and isinstance(g.get("slug"), str)
            and SLUG.match(g["slug"]) and ".." not in g["slug"]]


def graph_list(e: Entry) -> dict[str, Any]:
    """A graph folder's entry for the home page: its id, path and the graphs it holds (slug and prompt)."""
    meta = {g.get("slug"): g for g in e.config.get("graphs", []) if isinstance(g, dict)}
    return {"id": e.id, "path": e.rel, "graphs": [{"slug": s, "prompt": str(meta[s].get("prompt", ""))[:200]}
                                                  for s in graph_slugs(e)]}


def _rank(n: dict) -> float:
    v = n.get("influence")
    return float(v) if isinstance(v, (int, float)) else float("inf")


def bound_graph(obj: dict, max_nodes: int, max_links: int) -> dict[str, Any]:
    """``obj`` unchanged when within ``max_nodes`` / ``max_links``; else the tokens, logits and the most influential
    other nodes (smallest cumulative-influence rank) up to ``max_nodes``, and the strongest links (|weight|) among
    them up to ``max_links``, with ``truncated`` saying what was left out."""
    nodes, links = obj.get("nodes"), obj.get("links")
    if not isinstance(nodes, list) or not isinstance(links, list) or not all(
            isinstance(x, dict) for x in nodes + links):                 # a bad file is bad input (422), not a 500
        raise ValueError("graph file has no 'nodes' / 'links' lists of objects (not a circuit-tracer graph JSON)")
    out = {"metadata": obj.get("metadata", {}), "qParams": obj.get("qParams", {}), "nodes": nodes, "links": links,
           "truncated": None}
    if len(nodes) <= max_nodes and len(links) <= max_links:
        return out
    keep_always = [n for n in nodes if n.get("feature_type") in ("embedding", "logit")]
    rest = sorted((n for n in nodes if n.get("feature_type") not in ("embedding", "logit")), key=_rank)
    kept = (keep_always + rest)[:max(max_nodes, len(keep_always))]
    ids = {n.get("node_id") for n in kept}
    order = {id(n): i for i, n in enumerate(nodes)}
    kept.sort(key=lambda n: order[id(n)])                       # the file's order
    ls = [x for x in links if x.get("source") in ids and x.get("target") in ids]
    if len(ls) > max_links:
        top = set(map(id, sorted(ls, key=lambda x: -abs(float(x.get("weight") or 0)))[:max_links]))
        ls = [x for x in ls if id(x) in top]
    out.update(nodes=kept, links=ls, truncated={"nodes": len(nodes), "links": len(links), "max_nodes": max_nodes,
                                                "max_links": max_links})
    return out


def graph_view(e: Entry, slug: str, max_nodes: int, max_links: int) -> dict[str, Any]:
    """The graph ``slug`` of the graph folder ``e`` (as written, or bounded: ``bound_graph``)."""
    if slug not in graph_slugs(e):
        raise KeyError(f"no graph {slug!r} in {e.id}; known: {graph_slugs(e)[:20]}")
    if e.folder.joinpath("graph-metadata.json").is_symlink():
        raise Forbidden(f"{e.id}: graph-metadata.json is a symlink")
    path = safe_file(e.folder, f"{slug}.json")                  # containment: symlinks out are refused here
    if path.stat().st_size > MAX_GRAPH_BYTES:
        raise ValueError(f"graph file {slug}.json is over {MAX_GRAPH_BYTES >> 20} MiB; prune it harder "
                         "(actlab circuits graph --node-threshold / --edge-threshold)")
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"graph file {slug}.json is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"graph file {slug}.json is not a JSON object")   # noqa: TRY004 (422: bad file)
    out = bound_graph(obj, max_nodes, max_links)
    return {"id": e.id, "slug": slug, "path": e.rel, **out}
