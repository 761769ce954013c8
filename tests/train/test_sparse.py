"""Sparse connectivity (§3 lottery tickets, §4 SHARP rewiring): magnitude masks keep exactly the largest weights;
iterative magnitude pruning with rewinding recovers a planted sparse support and ends at the rewound init; a
prune-and-regrow step keeps the active count, drops the smallest active weights and regrows inactive ones at zero;
SHARP with sparse dynamic connectivity keeps its sparsity and replay still keeps earlier classes."""
from itertools import pairwise

import pytest
import torch

from actlab.train.configs import SharpConfig
from actlab.train.sharp import run_sharp
from actlab.train.sparse import (
    apply_masks,
    iterative_magnitude_pruning,
    magnitude_masks,
    mask_grads,
    prunable,
    prune_and_regrow,
    random_masks,
    sparsity_of,
)


def test_magnitude_masks_keep_the_largest_and_pruned_stay_pruned():
    w = torch.tensor([[0.1, -3.0, 0.5], [2.0, -0.2, 1.0]])
    m = magnitude_masks({"w": w}, 0.5)["w"]
    assert m.tolist() == [[False, True, False], [True, False, True]]
    prev = {"w": torch.tensor([[True, False, True], [True, True, True]])}      # -3.0 already pruned
    m2 = magnitude_masks({"w": w}, 0.5, prev)["w"]
    assert m2.tolist() == [[False, False, True], [True, False, True]]
    assert sparsity_of({"w": m2}) == 0.5
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_masks({"w": w}, 1.0)
    with pytest.raises(KeyError, match="name no parameter"):
        magnitude_masks({"w": w}, 0.5, {"v": m})


def test_imp_recovers_a_planted_sparse_support_and_rewinds():
    g = torch.Generator().manual_seed(0)
    support = torch.randperm(64, generator=g)[:8]
    w_true = torch.zeros(64)
    w_true[support] = (1 + torch.rand(8, generator=g)) * torch.sign(torch.randn(8, generator=g))
    x = torch.randn(512, 64, generator=g)
    y = x @ w_true + 0.05 * torch.randn(512, generator=g)
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 1, bias=False)
    init = lin.weight.detach().clone()

    def train(module, masks):
        opt = torch.optim.Adam(module.parameters(), lr=0.05)
        for _ in range(150):
            loss = (module(x)[:, 0] - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            mask_grads(module, masks)
            opt.step()
            apply_masks(module, masks)

    hist = iterative_magnitude_pruning(lin, train, rounds=3, rate=0.5)
    assert [round(sparsity_of(h), 4) for h in hist] == [0.5, 0.75, 0.875]
    assert set(hist[-1]["weight"][0].nonzero().flatten().tolist()) == set(support.tolist())
    torch.testing.assert_close(lin.weight, init * hist[-1]["weight"])      # rewound to init, masked
    assert all(torch.all(a["weight"] >= b["weight"]) for a, b in pairwise(hist))     # nested masks


def test_prune_and_regrow_keeps_the_count_drops_smallest_regrows_inactive():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5))
    g = torch.Generator().manual_seed(1)
    masks = random_masks(prunable(net), 0.6, g)
    apply_masks(net, masks)
    before = {n: p.detach().clone() for n, p in prunable(net).items()}
    new = prune_and_regrow(net, masks, 0.25, g)
    for n, p in prunable(net).items():
        old, cur = masks[n], new[n]
        assert int(cur.sum()) == int(old.sum())                                 # fixed sparsity
        dropped, grown = old & ~cur, cur & ~old
        k = round(0.25 * int(old.sum()))
        assert int(dropped.sum()) == int(grown.sum()) == k
        kept_mag = before[n].abs()[old & cur]
        assert before[n].abs()[dropped].max() <= kept_mag.min()                 # the smallest active ones
        assert torch.all(p[~cur] == 0) and torch.all(p[grown] == 0)             # regrown start at zero
        torch.testing.assert_close(p[old & cur], before[n][old & cur])
    assert prune_and_regrow(net, new, 0.0, g)["0.weight"].equal(new["0.weight"])


def test_sharp_with_sparse_dynamic_connectivity(one_thread):
    rep = run_sharp(SharpConfig(sparsity=0.5))            # seed 0: old-class accuracy 0.40 with replay vs 0.0
    r, n = rep["runs"]["replay"], rep["runs"]["no_replay"]
    assert r["sparsity"] == n["sparsity"] == 0.5 and r["rewirings"] == 15
    assert r["off_weights_nonzero"] == n["off_weights_nonzero"] == 0     # masked-off weights stayed at zero
    assert r["mean_old_acc"] > n["mean_old_acc"] + 0.1
    with pytest.raises(ValueError, match="sparsity=1.0"):
        SharpConfig(sparsity=1.0)
