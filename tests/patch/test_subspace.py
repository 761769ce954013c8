"""Subspace patching, the distilled dormant-pathway illusion example (all numbers of the spec), DAS."""
import math

import pytest
import torch

import actlab
from actlab.patch import LogitDiff
from actlab.patch.subspace import (SubspacePatch, das, illusion_check, interchange_accuracy, lm_score, lm_target_loss, readout_weight,
                                   rowspace_split, subspace_effect)


class Distilled(torch.nn.Module):
    """h(x) = (x, x, 0); W = [[1,0,0],[0,0,1]] reads e1 and e3; y = 1^T W h = h1 + h3."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(1, 3, bias=False)
        self.read = torch.nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0], [1.0], [0.0]]))
            self.read.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))

    def forward(self, x):
        return self.read(self.hidden(x)).sum(-1)


def _toy():
    m = actlab.wrap(Distilled())
    base, source = torch.tensor([[-1.0]]), torch.tensor([[1.0]])
    site = "module:hidden"
    effect = lambda d: subspace_effect(m, base, source, site, d, lambda y: y).normalized  # noqa: E731
    return m, base, source, site, effect


def test_distilled_illusion_example():
    m, base, source, site, effect = _toy()
    e = torch.eye(3)
    v = (e[1] + e[2]) / math.sqrt(2)
    r = subspace_effect(m, base, source, site, v, lambda y: y)
    assert (r.base, r.source, r.patched) == pytest.approx((-1.0, 1.0, 0.0), abs=1e-6)
    assert effect(v) == pytest.approx(0.5, abs=1e-6)
    assert effect(e[1]) == pytest.approx(0.0, abs=1e-6)  # disconnected
    assert effect(e[2]) == pytest.approx(0.0, abs=1e-6)  # dormant
    assert effect(e[0]) == pytest.approx(1.0, abs=1e-6)  # the true feature
    W = readout_weight(m, "module:read:in")
    v_row, v_null = rowspace_split(v, W)
    torch.testing.assert_close(v_row, e[2] / math.sqrt(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(v_null, e[1] / math.sqrt(2), atol=1e-6, rtol=0)
    acts = m.record(torch.tensor([[-1.0], [1.0], [1.0], [-1.0]]), [site])[site]
    full = subspace_effect(m, base, source, site, None, lambda y: y).normalized
    rep = illusion_check(v, W, effect, acts=acts, full_effect=full)
    assert rep.effect_v == pytest.approx(0.5, abs=1e-6)
    assert rep.effect_row == pytest.approx(0.0, abs=1e-6) and rep.effect_null == pytest.approx(0.0, abs=1e-6)
    assert rep.var_row == pytest.approx(0.0, abs=1e-9) and rep.var_null > 0.1
    assert rep.illusion_likely
    assert {"no_component_reproduces", "needs_null_space", "dormant_row_component"} <= set(rep.flags)
    assert full == pytest.approx(1.0)
    # the faithful direction passes every check
    ok = illusion_check(e[0], W, effect, acts=acts, full_effect=full)
    assert not ok.illusion_likely and ok.effect_v == pytest.approx(1.0) and float(ok.v_null.norm()) < 1e-6


def test_das_learns_an_orthonormal_subspace_that_moves_behaviour():
    m, base, source, site, effect = _toy()
    res = das(m, base, source, site, lambda y: ((y - 1.0) ** 2).mean(), k=1, steps=150, lr=0.05)
    assert res.losses[-1] < 1e-3 < res.losses[0]
    assert float(res.basis.norm()) == pytest.approx(1.0, abs=1e-5)
    assert effect(res.basis[0]) == pytest.approx(1.0, abs=0.03)


def test_das_and_subspace_patch_on_tiny_lm(tiny):
    m = tiny("tiny-llama")
    ids = [m.tokenizer(c)["input_ids"][-1] for c in "xy"]
    base, source = "the cat sat on", "the bat sat on"
    W = readout_weight(m, "blocks.0.mlp_act")
    assert W.shape == (64, 128)
    res = das(m, base, source, "blocks.0.resid_post", lm_target_loss(ids[0]), k=2, steps=25, lr=0.05)
    assert res.losses[-1] < res.losses[0]
    torch.testing.assert_close(res.basis @ res.basis.T, torch.eye(2), atol=1e-5, rtol=0)
    # a full-rank subspace patch equals patching the whole activation
    full = subspace_effect(m, base, source, "blocks.0.resid_post", torch.eye(64), lm_score(LogitDiff(*ids)))
    whole = subspace_effect(m, base, source, "blocks.0.resid_post", None, lm_score(LogitDiff(*ids)))
    assert full.patched == pytest.approx(whole.patched, abs=1e-4) and whole.normalized == pytest.approx(1.0, abs=1e-4)
    # interchange-intervention accuracy: a whole-site patch predicts what the source run predicts
    src_pred = m(source).logits[:, -1].argmax(-1)
    assert interchange_accuracy(m, base, source, "blocks.0.resid_post", None, src_pred) == 1.0
    assert interchange_accuracy(m, base, source, "blocks.0.resid_post", torch.eye(64), src_pred) == 1.0


def test_bad_basis_and_readout_errors(tiny):
    m = tiny("tiny-llama")
    with pytest.raises(ValueError, match="no single readout weight"):
        readout_weight(m, "blocks.0.resid_post")
    with pytest.raises(ValueError, match=r"must be \[out, d=3\]"):
        rowspace_split(torch.ones(3), torch.ones(2, 4))
    src = torch.zeros(1, 3, 64)
    with m.intervene({"blocks.0.resid_post": SubspacePatch(source=src, basis=torch.ones(32))}):
        with pytest.raises(ValueError, match="basis has last dim 32"):
            m(torch.tensor([[1, 5, 6]]))


def test_subspace_patch_serializes(tmp_path):
    from actlab import load_interventions, save_interventions

    iv = SubspacePatch(source=torch.randn(1, 3, 8), basis=torch.randn(2, 8), positions=[1])
    p = save_interventions(tmp_path / "sp.json", {"blocks.0.resid_post": iv})
    (site, back), = load_interventions(p)
    assert site == "blocks.0.resid_post" and isinstance(back, SubspacePatch) and back.positions == [1]
    assert torch.equal(back.basis, iv.basis) and torch.equal(back.source, iv.source)
