"""Interventional causal graph on a planted MLP: causal units kept, a perfectly correlated copy excluded."""
import pytest
import torch

import actlab
from actlab.patch.causal_graph import (CausalGraphConfig, causal_graph, correlation_scores, grad_x_act_scores,
                                       unit_ace)


def _planted():
    """x[8] -> fc1[10] relu -> fc2[16] relu -> out[3]. Class 0's logit reads only fc2 units 3 and 7; fc2 unit 11
    copies unit 3 exactly but has zero outgoing weight; fc2 units 3, 7 read only fc1 units 2 and 5."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 10), torch.nn.ReLU(), torch.nn.Linear(10, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(10, 8, generator=g))
        net[0].bias.fill_(0.5)
        w2 = torch.randn(16, 10, generator=g).abs()
        w2[:, [2, 5]] = 0
        w2[3], w2[7] = 0, 0
        w2[3, 2], w2[7, 5] = 1.5, 2.0
        w2[11] = w2[3]
        net[2].weight.copy_(w2)
        net[2].bias.fill_(0.1)
        w3 = torch.randn(3, 16, generator=g)
        w3[0] = 0
        w3[0, 3], w3[0, 7] = 1.0, -1.5
        w3[:, 11] = 0
        net[4].weight.copy_(w3)
        net[4].bias.zero_()
    return actlab.wrap(net)


def test_planted_causal_graph():
    m = _planted()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    score = lambda out: out[:, 0]  # noqa: E731
    # zero ablation: this planted net is linear along its causal paths, so mean ablation has no effect at all
    # (checked below); the graph used to pass with ref='mean' on float noise (~1e-8 ACEs)
    g = causal_graph(m, x, ["module:1", "module:3"], score, CausalGraphConfig(ref="zero"))
    assert g.nodes["module:3"] == [3, 7]
    assert g.nodes["module:1"] == [2, 5]
    assert g.ace["module:3"][11].item() == 0.0  # zero outgoing weight: exactly no causal effect
    assert {(e[1], e[3]) for e in g.edges} == {(2, 3), (5, 7)}
    assert g.joint_effect is not None and abs(g.joint_effect) > 0
    # the correlation baseline credits the copy as much as the original; gradient x activation gives it 0
    corr = correlation_scores(m, x, "module:3", score)
    assert corr[11].item() == pytest.approx(corr[3].item(), abs=1e-5) and corr[11] > 0.3
    gxa = grad_x_act_scores(m, x, "module:3", score)
    assert gxa[11].item() == 0.0 and gxa[3].item() != 0.0
    top = unit_ace(m, x, "module:3", score, CausalGraphConfig(ref="zero"))
    assert top[11].item() == 0.0 and set(top.abs().topk(2).indices.tolist()) == {3, 7}
    # closed forms (the readout is linear in module:3): ACE(u) = w[u] * (E[h_u] - ref_u), so zero ablation gives
    # w[u] * E[h_u] with its sign, and mean ablation gives exactly 0 (what the mutation pass found unchecked)
    h = m.record(x, ["module:3"])["module:3"]
    w = m.module[4].weight[0].detach()
    for u in (3, 7):
        assert top[u].item() == pytest.approx(float(w[u] * h[:, u].mean()), rel=1e-4, abs=1e-6)
    mean_ace = unit_ace(m, x, "module:3", score, CausalGraphConfig(ref="mean"))
    assert mean_ace.abs().max().item() < 1e-5
    noise = causal_graph(m, x, ["module:1", "module:3"], score, CausalGraphConfig(ref="mean"))
    assert noise.nodes == {"module:1": [], "module:3": []} and noise.joint_effect is None  # rounding is no effect
    assert top[7].item() < 0 < top[3].item()  # unit 7 reads out with -1.5, unit 3 with +1.0


def test_conv_channels_and_config_errors():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        net[4].weight.zero_()
        net[4].weight[0, 1] = 1.0
    m = actlab.wrap(net)
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    ace = unit_ace(m, x, "module:1", lambda o: o[:, 0], CausalGraphConfig(ref="zero", unit_dim=1))
    assert ace.shape == (4,) and ace[[0, 2, 3]].abs().max() == 0
    h = m.record(x, ["module:1"])["module:1"]  # zero-ablating channel 1 removes its pooled value (readout weight 1)
    assert ace[1].item() == pytest.approx(h[:, 1].mean().item(), rel=1e-5)
    # mean ablation through GAP + a linear head has no effect in expectation (it used to pass on rounding noise)
    mean_ace = unit_ace(m, x, "module:1", lambda o: o[:, 0], CausalGraphConfig(unit_dim=1))
    assert mean_ace.abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="ref must be"):
        CausalGraphConfig(ref="median")
