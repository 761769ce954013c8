"""SmolLM2 (real model, 30 blocks, RMSNorm, grouped-query attention): the replacement model reproduces the model and
every computed row sums exactly, with untrained TopK transcoders (the identity does not depend on training)."""
from __future__ import annotations

import pytest
import torch

from actlab.circuits import GraphConfig, attribute, graph_json, top_paths

from .conftest import random_transcoders


@pytest.mark.real
def test_smollm2_graph_identity_and_export(smollm2):
    tcs = random_transcoders(smollm2, "topk", d_sae=64)
    g = attribute(smollm2, tcs, "The capital of France is", GraphConfig(max_n_logits=2, max_feature_nodes=40),
                  dtype=torch.float64)
    assert g.meta["fit_error"] < 1e-4
    scale = float(g.pre_activation[g.computed].abs().max())
    assert g.identity_error < 1e-5 * max(1.0, scale)
    assert g.n_features == 40 and g.meta["n_active"] > 40
    path = top_paths(g)[0][1]
    assert g.node_kind(path[-1]) == "logit" and g.node_kind(path[0]) in ("token", "error")
    j = graph_json(g, "france", tokenizer=smollm2.tokenizer)
    assert any(n["feature_type"] == "logit" and n["is_target_logit"] for n in j["nodes"])
