"""Export a pruned attribution graph as circuit-tracer / Neuronpedia graph JSON.

The field names, their order and the id schemes are those circuit-tracer 0.5's ``create_graph_files`` writes (its
pydantic ``Metadata``/``QParams``/``Node`` models): latent ``node_id = "{layer}_{latent}_{pos}"`` with
``feature = cantor(layer, latent)``, error ``"0_{layer}_{pos}"``, token ``"E_{id}_{pos}"``, logit
``"{n_layers + 1}_{id}_{pos}"``; links ``{source, target, weight}`` for every kept edge between kept nodes; a
``graph-metadata.json`` index beside the graph. A latent target (not a logit) is written as a latent node whose
``clerp`` says it is the target.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from actlab.circuits.prune import prune_graph

if TYPE_CHECKING:
    from actlab.circuits.graph import AttributionGraph

SCHEMA_VERSION = 1
NODE_FIELDS = ("node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
               "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation")
METADATA_FIELDS = ("slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version")
QPARAMS_FIELDS = ("pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos")


def cantor(x: int, y: int) -> int:
    """Cantor pairing: one integer per (layer, latent), circuit-tracer's ``feature`` of a latent node."""
    return (x + y) * (x + y + 1) // 2 + y


def _node(node_id: str, feature: int, layer: str, ctx_idx: int, feature_type: str, jsNodeId: str, *,
          token_prob: float = 0.0, is_target_logit: bool = False, clerp: str = "", influence: float | None = None,
          activation: float | None = None) -> dict[str, Any]:
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": ctx_idx, "feature_type": feature_type,
            "token_prob": token_prob, "is_target_logit": is_target_logit, "run_idx": 0, "reverse_ctx_idx": 0,
            "jsNodeId": jsNodeId, "clerp": clerp, "influence": influence, "activation": activation}


def feature_node(layer: int, pos: int, latent: int, influence: float | None = None,
                 activation: float | None = None, clerp: str = "") -> dict[str, Any]:
    return _node(f"{layer}_{latent}_{pos}", cantor(layer, latent), str(layer), pos, "cross layer transcoder",
                 f"{layer}_{latent}-0", influence=influence, activation=activation, clerp=clerp)


def error_node(layer: int, pos: int, influence: float | None = None) -> dict[str, Any]:
    return _node(f"0_{layer}_{pos}", -1, str(layer), pos, "mlp reconstruction error", f"{layer}_{pos}-0",
                 influence=influence)


def token_node(pos: int, vocab_id: int, influence: float | None = None) -> dict[str, Any]:
    return _node(f"E_{vocab_id}_{pos}", pos, "E", pos, "embedding", f"E_{vocab_id}-{pos}", influence=influence)


def logit_node(pos: int, vocab_id: int, token: str, n_layers: int, target: bool, prob: float) -> dict[str, Any]:
    layer = str(n_layers + 1)
    return _node(f"{layer}_{vocab_id}_{pos}", vocab_id, layer, pos, "logit", f"L_{vocab_id}-{pos}",
                 token_prob=prob, is_target_logit=target, clerp=f'Output "{token}" (p={prob:.3f})')


def graph_json(graph: AttributionGraph, slug: str, *, scan: str | None = None, tokenizer: Any = None,
               node_threshold: float = 0.8, edge_threshold: float = 0.98,
               transcoder_list: list[str] | None = None) -> dict[str, Any]:
    """The graph as circuit-tracer's JSON object (``metadata``, ``qParams``, ``nodes``, ``links``), pruned."""
    pr = prune_graph(graph, node_threshold, edge_threshold)
    nf, L, P = graph.n_features, graph.n_layers, graph.n_pos
    cum = pr.cumulative_scores.tolist()

    def decode(i: int) -> str:
        return tokenizer.decode([int(i)]) if tokenizer is not None else str(int(i))

    nodes: dict[int, dict] = {}
    for i in pr.node_mask.nonzero()[:, 0].tolist():
        kind = graph.node_kind(i)
        if kind == "feature":
            a = int(graph.selected_features[i])
            l_, p, j = graph.active_features[a].tolist()
            nodes[i] = feature_node(l_, p, j, cum[i], float(graph.activation_values[a]))
        elif kind == "error":
            l_, p = divmod(i - nf, P)
            nodes[i] = error_node(l_, p, cum[i])
        elif kind == "token":
            p = i - nf - L * P
            nodes[i] = token_node(p, int(graph.input_tokens[p]), cum[i])
        else:
            t = i - nf - (L + 1) * P
            if graph.target_feature is not None:
                l_, p, j = graph.target_feature
                act = graph.activation_values[(graph.active_features == graph.active_features.new_tensor(
                    graph.target_feature)).all(1)]
                nodes[i] = feature_node(l_, p, j, cum[i], float(act[0]) if act.numel() else None,
                                        clerp="attribution target")
            else:
                vid = int(graph.logit_tokens[t])
                nodes[i] = logit_node(P - 1, vid, decode(vid), L, t == 0, float(graph.logit_probabilities[t]))
    dst, srcs = pr.edge_mask.nonzero(as_tuple=True)
    w = graph.adjacency[dst, srcs].tolist()
    links = [{"source": nodes[s]["node_id"], "target": nodes[d]["node_id"], "weight": x}
             for s, d, x in zip(srcs.tolist(), dst.tolist(), w) if s in nodes and d in nodes]
    used = {e["source"] for e in links} | {e["target"] for e in links}
    keep = [n for n in nodes.values() if n["node_id"] in used or n["feature_type"] in ("embedding", "logit")]
    tl = list(transcoder_list if transcoder_list is not None else graph.meta.get("transcoders", []))
    meta = {"slug": slug, "scan": scan or f"actlab-{graph.meta.get('model', 'model')}", "transcoder_list": tl,
            "prompt_tokens": [decode(t) for t in graph.input_tokens.tolist()], "prompt": graph.prompt,
            "node_threshold": node_threshold, "schema_version": SCHEMA_VERSION}
    qp = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": meta, "qParams": qp, "nodes": keep, "links": links}


def write_graph_files(graph: AttributionGraph, slug: str, out: str | Path, **kw: Any) -> Path:
    """Write ``{out}/{slug}.json`` and add its metadata to ``{out}/graph-metadata.json`` (replacing an entry of
    the same slug), as circuit-tracer's ``create_graph_files`` does; returns the graph file's path."""
    from actlab.artifact import atomic_write_json, read_json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"graph output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    obj = graph_json(graph, slug, **kw)
    path = atomic_write_json(out / f"{slug}.json", obj)
    idx_path = out / "graph-metadata.json"
    idx = read_json(idx_path, what="graph index") if idx_path.exists() else {"graphs": []}
    idx["graphs"] = [g for g in idx.get("graphs", []) if g.get("slug") != slug] + [obj["metadata"]]
    atomic_write_json(idx_path, idx)
    return path


__all__ = ["METADATA_FIELDS", "NODE_FIELDS", "QPARAMS_FIELDS", "cantor", "graph_json", "write_graph_files"]
