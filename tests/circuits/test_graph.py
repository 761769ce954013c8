"""Attribution graphs: the planted two-latent chain, influence and pruning, circuit-tracer JSON, validation."""
from __future__ import annotations

import json

import pytest
import torch

from actlab.circuits import (
    AttributionGraph,
    GraphConfig,
    attribute,
    compute_influence,
    graph_json,
    node_influence,
    normalize_matrix,
    prune_graph,
    top_paths,
    write_graph_files,
)
from actlab.circuits.validate import validate_by_ablation

from .conftest import PROMPT, T_TOKEN, X_TOKEN, random_transcoders

# circuit-tracer 0.5.0, circuit_tracer/frontend/graph_models.py: the pydantic models' fields, in order
CT_METADATA = ["slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version"]
CT_QPARAMS = ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"]
CT_NODE = ["node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
           "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"]
CT_TYPES = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str, "token_prob": float,
            "is_target_logit": bool, "run_idx": int, "reverse_ctx_idx": int, "jsNodeId": str, "clerp": str}


@pytest.fixture(scope="module")
def chain(planted):
    m, tcs, ab = planted
    return m, tcs, ab, attribute(m, tcs, PROMPT, target=T_TOKEN, dtype=torch.float64)


def test_planted_chain_is_the_top_path(chain):
    *_, (A, B), g = chain
    last = len(PROMPT) - 1
    score, path = top_paths(g, 1)[0]
    assert [g.node_label(i) for i in path] == [f"tok {X_TOKEN}@{last}", f"L0/f{A}@{last}", f"L1/f{B}@{last}",
                                              f"logit {T_TOKEN}"]
    assert score > 0.5
    assert g.identity_error < 1e-4
    # A and B are also the two most influential latents, and survive pruning
    infl = node_influence(g)[:g.n_features]
    top2 = {g.node_label(i) for i in infl.topk(2).indices.tolist()}
    assert top2 == {f"L0/f{A}@{last}", f"L1/f{B}@{last}"}
    pr = prune_graph(g, 0.8, 0.98)
    kept = {g.node_label(i) for i in pr.node_mask.nonzero()[:, 0].tolist()}
    assert {f"L0/f{A}@{last}", f"L1/f{B}@{last}"} <= kept


def test_influence_series_equals_inverse_and_pruning_thresholds(chain):
    *_, g = chain
    A = normalize_matrix(g.adjacency)
    w = g.target_weights.to(A.dtype)
    s, inv = compute_influence(A, w, "series"), compute_influence(A, w, "inverse")
    assert torch.allclose(s, inv, atol=1e-10)
    loose, tight = prune_graph(g, 0.99, 0.99), prune_graph(g, 0.5, 0.9)
    assert tight.node_mask.sum() <= loose.node_mask.sum()
    assert tight.edge_mask.sum() <= loose.edge_mask.sum()
    with pytest.raises(ValueError, match="node_threshold"):
        prune_graph(g, 1.5)
    # a kept edge joins kept nodes only
    d, s_ = loose.edge_mask.nonzero(as_tuple=True)
    assert loose.node_mask[d].all() and loose.node_mask[s_].all()


def test_max_feature_nodes_explores_by_influence(chain):
    """With a budget of 2 latent rows, the influence-guided search picks exactly the planted chain."""
    m, tcs, (A, B), _ = chain
    g = attribute(m, tcs, PROMPT, GraphConfig(max_feature_nodes=2, batch_size=1, update_interval=1),
                  target=T_TOKEN, dtype=torch.float64)
    last = len(PROMPT) - 1
    assert {g.node_label(i) for i in range(g.n_features)} == {f"L0/f{A}@{last}", f"L1/f{B}@{last}"}
    assert g.identity_error < 1e-4


def test_graph_json_matches_circuit_tracer_schema(chain, tmp_path):
    m, _, (A, B), g = chain
    obj = graph_json(g, "planted", tokenizer=m.tokenizer)
    assert list(obj) == ["metadata", "qParams", "nodes", "links"]
    assert list(obj["metadata"]) == CT_METADATA
    assert list(obj["qParams"]) == CT_QPARAMS
    assert obj["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    assert obj["metadata"]["prompt_tokens"] == [m.tokenizer.decode([t]) for t in PROMPT]
    P, L = len(PROMPT), g.n_layers
    ids = set()
    for n in obj["nodes"]:
        assert list(n) == CT_NODE
        for k, t in CT_TYPES.items():
            assert type(n[k]) is t, (k, n)
        ids.add(n["node_id"])
        kind = n["feature_type"]
        if kind == "cross layer transcoder":
            layer, feat, pos = (int(v) for v in n["node_id"].split("_"))
            assert n["feature"] == (layer + feat) * (layer + feat + 1) // 2 + feat     # cantor pairing
            assert n["jsNodeId"] == f"{layer}_{feat}-0" and n["ctx_idx"] == pos and n["layer"] == str(layer)
            assert isinstance(n["activation"], float) and isinstance(n["influence"], float)
        elif kind == "mlp reconstruction error":
            _, layer, pos = n["node_id"].split("_")
            assert n["feature"] == -1 and n["jsNodeId"] == f"{layer}_{pos}-0" and n["activation"] is None
        elif kind == "embedding":
            _, vid, pos = n["node_id"].split("_")
            assert n["layer"] == "E" and n["feature"] == int(pos) == n["ctx_idx"] and n["jsNodeId"] == f"E_{vid}-{pos}"
            assert int(vid) == PROMPT[int(pos)]
        else:
            assert kind == "logit"
            assert n["node_id"] == f"{L + 1}_{T_TOKEN}_{P - 1}" and n["layer"] == str(L + 1)
            assert n["is_target_logit"] and n["jsNodeId"] == f"L_{T_TOKEN}-{P - 1}"
            assert n["clerp"].startswith('Output "') and 0 < n["token_prob"] <= 1
    assert {f"E_{t}_{p}" for p, t in enumerate(PROMPT)} <= ids       # tokens and logits always kept
    assert f"0_{A}_{P - 1}" in ids and f"1_{B}_{P - 1}" in ids
    assert obj["links"] and all(list(e) == ["source", "target", "weight"] for e in obj["links"])
    assert all(e["source"] in ids and e["target"] in ids for e in obj["links"])
    w = {(e["source"], e["target"]): e["weight"] for e in obj["links"]}
    la = next(i for i in range(g.n_features) if g.node_label(i) == f"L0/f{A}@{P - 1}")
    lb = next(i for i in range(g.n_features) if g.node_label(i) == f"L1/f{B}@{P - 1}")
    assert w[(f"0_{A}_{P - 1}", f"1_{B}_{P - 1}")] == pytest.approx(float(g.adjacency[lb, la]))
    full = graph_json(g, "all", tokenizer=m.tokenizer, node_threshold=1.0, edge_threshold=1.0)
    errs = [n for n in full["nodes"] if n["feature_type"] == "mlp reconstruction error"]
    assert errs                                            # error nodes (GELU vs ReLU, distractor writes) appear
    for n in errs:
        zero, layer, pos = n["node_id"].split("_")
        assert zero == "0" and int(layer) < L and int(pos) < P and n["layer"] == layer and n["ctx_idx"] == int(pos)
        assert n["jsNodeId"] == f"{layer}_{pos}-0"
    path = write_graph_files(g, "planted", tmp_path, tokenizer=m.tokenizer)
    assert json.loads(path.read_text()) == json.loads(json.dumps(obj))
    write_graph_files(g, "other", tmp_path, tokenizer=m.tokenizer)
    write_graph_files(g, "planted", tmp_path, tokenizer=m.tokenizer)
    idx = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [x["slug"] for x in idx["graphs"]] == ["other", "planted"]


def test_graph_save_load_roundtrip(chain, tmp_path):
    *_, g = chain
    g.save(tmp_path / "g")
    h = AttributionGraph.load(tmp_path / "g")
    assert torch.equal(h.adjacency, g.adjacency) and torch.equal(h.computed, g.computed)
    assert h.prompt == g.prompt and h.n_layers == g.n_layers and h.identity_error == g.identity_error


def test_latent_target(chain):
    m, tcs, (A, B), _ = chain
    last = len(PROMPT) - 1
    g = attribute(m, tcs, PROMPT, target_feature=(1, last, B), dtype=torch.float64)
    assert g.identity_error < 1e-4 and g.n_targets == 1
    assert all(int(g.active_features[g.selected_features[i], 0]) < 1 for i in range(g.n_features))
    assert [g.node_label(i) for i in top_paths(g)[0][1]] == [f"tok {X_TOKEN}@{last}", f"L0/f{A}@{last}",
                                                             f"target L1/f{B}@{last}"]


def test_ablation_moves_the_target_as_the_graph_predicts(biased):
    """Small ablations (5% of a latent) in the replacement model: the graph's total effects predict the change."""
    m = biased("tiny-gpt2")
    tcs = random_transcoders(m)
    g = attribute(m, tcs, "The cat sat on the mat", GraphConfig(max_n_logits=1), dtype=torch.float64)
    r = validate_by_ablation(m, tcs, g, k=10, mode="replacement", scale=0.05)
    assert r.baseline_error < 1e-4                 # the replacement run reproduces the clean target
    assert r.correlation > 0.95
    rel = ((r.predicted - r.actual).abs().sum() / r.actual.abs().sum()).item()
    rel_direct = ((r.direct - r.actual).abs().sum() / r.actual.abs().sum()).item()
    assert rel < 0.35 and rel < rel_direct
    with pytest.raises(ValueError, match="mode"):
        validate_by_ablation(m, tcs, g, mode="nope")
