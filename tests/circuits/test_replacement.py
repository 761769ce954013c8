"""The local replacement model: exact edge sums, reproduction of the model's own activations, batching."""
from __future__ import annotations

import pytest
import torch

from actlab.circuits import ReplacementModel, attribute
from actlab.circuits.graph import GraphConfig

from .conftest import random_transcoders

TEXT = "The cat sat on the mat"
CASES = [("tiny-gpt2", "relu", False), ("tiny-llama", "topk", True), ("tiny-neox", "jumprelu", False),
         ("tiny-mixtral", "relu", True)]


@pytest.mark.parametrize("name,arch,skip", CASES)
def test_node_preactivations_equal_incoming_edges_plus_bias(biased, name, arch, skip):
    """Every computed row: sum of edges + constant == the node's value computed independently from the model's
    own recorded MLP inputs (latents) or logits (targets), on random biases, norm gains and transcoders."""
    m = biased(name)
    tcs = random_transcoders(m, arch, skip=skip)
    g = attribute(m, tcs, TEXT, GraphConfig(max_n_logits=3, desired_logit_prob=1.0), dtype=torch.float64)
    L = m.adapter.n_layers
    sites = [f"blocks.{i}.mlp_in" for i in range(L)] + ["logits"]
    rec = m.record(m.tokenize(TEXT), sites, stop_early=False)
    want = []
    for n in range(g.n_features):
        l_, p, j = g.active_features[g.selected_features[n]].tolist()
        tc = tcs[l_]
        want.append(float(tc.pre_acts(rec[f"blocks.{l_}.mlp_in"][0, p]).detach()[j]))
        assert float(tc.encode(rec[f"blocks.{l_}.mlp_in"][0, p:p + 1]).detach()[0, j]) == pytest.approx(
            float(g.activation_values[g.selected_features[n]]), abs=1e-5)
    lg = rec["logits"][0, -1].double()
    want += (lg[g.logit_tokens] - lg.mean()).tolist()
    rows = g.computed.nonzero()[:, 0]
    assert len(rows) == g.n_features + g.n_targets == len(want)
    got = g.adjacency[rows].sum(1) + g.bias[rows]
    err = (got - torch.tensor(want, dtype=got.dtype)).abs().max().item()
    scale = max(1.0, max(abs(w) for w in want))
    assert err <= 2e-5 * scale, (name, err)
    assert g.identity_error <= 2e-5 * scale
    # the edges are not trivially the bias: latents and tokens carry most of the value
    assert g.adjacency[rows].abs().sum() > g.bias[rows].abs().sum()
    assert g.meta["fit_error"] < 1e-4


def test_affine_model_reproduces_clean_run_and_zero_sources_give_biases_only(biased):
    m = biased("tiny-gpt2")
    tcs = random_transcoders(m)
    rm = ReplacementModel.build(m, tcs, TEXT, dtype=torch.float64)
    mlp_in, final = rm.forward(rm.embed, rm.injections())
    assert (mlp_in - rm.mlp_in).abs().max() < 1e-5
    logits = final[-1] @ rm.W_U + (0.0 if rm.b_U is None else rm.b_U)
    assert (logits - rm.logits).abs().max() < 1e-4
    # linearity: f(a + b) - f(0) == (f(a) - f(0)) + (f(b) - f(0))
    z = torch.zeros_like(rm.embed), torch.zeros_like(rm.errors)
    f0 = rm.forward(*z)[0]
    fa = rm.forward(rm.embed, z[1])[0] - f0
    fb = rm.forward(z[0], rm.injections())[0] - f0
    assert torch.allclose(fa + fb + f0, mlp_in, atol=1e-9)


def test_rows_batched_equal_one_at_a_time_and_respect_causality(biased):
    m = biased("tiny-llama")
    tcs = random_transcoders(m, "topk")
    rm = ReplacementModel.build(m, tcs, TEXT, dtype=torch.float64)
    idx = torch.arange(0, rm.n_features, max(1, rm.n_features // 9))
    batch = rm.rows(*rm.encoder_rows(idx))
    for b, i in enumerate(idx.tolist()):
        one = rm.rows(*rm.encoder_rows(torch.tensor([i])))
        assert torch.allclose(one[0], batch[b], atol=1e-12)
        l_, p, _ = rm.features[i].tolist()
        src_layer = rm.features[:, 0]
        src_pos = rm.features[:, 1]
        later = (src_layer >= l_) | (src_pos > p)             # same/later layer or a later position: no edge
        assert not one[0, :rm.n_features][later].any()
        err = one[0, rm.n_features:rm.n_features + rm.n_layers * rm.n_pos].view(rm.n_layers, rm.n_pos)
        assert not err[l_:].any() and not err[:, p + 1:].any()


def test_bad_transcoder_sets_are_refused(tiny):
    from actlab.dictionary import DictConfig, build

    m = tiny("tiny-gpt2")
    tcs = random_transcoders(m)
    with pytest.raises(ValueError, match="missing blocks \\[1\\]"):
        attribute(m, tcs[:1], TEXT)
    sae = build(DictConfig(arch="relu", d_in=64, d_sae=16, site="blocks.0.mlp_in"))
    with pytest.raises(ValueError, match="is an SAE"):
        attribute(m, [sae, tcs[1]], TEXT)
    g = attribute(m, tcs, TEXT, GraphConfig(max_n_logits=1))
    with pytest.raises(ValueError, match="not active"):
        attribute(m, tcs, TEXT, target_feature=(1, 0, 10 ** 6))
    assert g.n_targets == 1
