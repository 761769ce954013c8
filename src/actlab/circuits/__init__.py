"""Transcoder attribution graphs: the local replacement model of a prompt (transcoders at every MLP, attention
patterns and norm scales frozen, error nodes), exact edge weights, influence pruning and path search,
circuit-tracer / Neuronpedia graph JSON, and validation by ablation. docs/circuits.md shows the use."""
from actlab.circuits.export import cantor, graph_json, write_graph_files
from actlab.circuits.graph import AttributionGraph, GraphConfig, attribute, salient_logits
from actlab.circuits.prune import (
    PruneResult,
    compute_influence,
    node_influence,
    normalize_matrix,
    prune_graph,
    top_paths,
)
from actlab.circuits.replacement import ReplacementModel, encode_prompt, transcoder_layers

__all__ = ["AttributionGraph", "GraphConfig", "PruneResult", "ReplacementModel", "attribute", "cantor",
           "compute_influence", "encode_prompt", "graph_json", "node_influence", "normalize_matrix", "prune_graph",
           "salient_logits", "top_paths", "transcoder_layers", "write_graph_files"]
