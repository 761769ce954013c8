"""Level set traversal (logistic regression, MLP, digits CNN) and BAS box search on planted maps."""
from __future__ import annotations

import pytest
import torch

from actlab.viz.bas import bas_localize, bas_loss, best_box, box_mask
from actlab.viz.traverse import TraverseConfig, class_confidence, level_set_traverse, line_confidence


def test_logistic_regression_orthogonal_steps_keep_the_logit_and_reach_the_projection():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(20, generator=g, dtype=torch.float64), 0.3
    f = lambda x: x.flatten(1) @ w + b
    src, tgt = torch.randn(20, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64)
    r = level_set_traverse(f, src, tgt, TraverseConfig(steps=400, eta=0.1, clip=None, stop=1e-9))
    assert float((r.values - r.level).abs().max()) < 1e-6                  # logit constant along the path
    assert sum(r.corrections) == 0                                           # exact steps never need a correction
    proj = tgt - ((tgt @ w + b - r.level) / (w @ w)) * w
    assert torch.allclose(r.final, proj, atol=1e-6)
    line = line_confidence(f, src, r.final)                                 # a flat level set: the line stays on it
    assert float((line - r.level).abs().max()) < 1e-9 and len(line) == 11


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_mlp_confidence_never_drops_below_the_level(seed):
    """Curved level sets: orthogonal steps alone fall up to ~0.016 below the level here; the corrections hold it."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    x = torch.randn(2, 10, dtype=torch.float64)
    cls = int(net(x[:1]).argmax())
    f = class_confidence(net, cls)
    r = level_set_traverse(f, x[0], x[1], TraverseConfig(steps=100, eta=0.3, clip=None))
    assert float(r.values.min()) >= r.level - 1e-6
    assert sum(r.corrections) > 0                       # the corrective steps were needed
    assert r.distances[-1] < 0.5 * r.distances[0]       # the level set may end before the target


def test_digits_cnn_traversal_keeps_confidence(digits_cnn, digits16):
    _, te = digits16
    src, tgt = te.x[te.y == 3][0], te.x[te.y == 7][0]
    f = class_confidence(digits_cnn, 3, "logprob")
    r = level_set_traverse(f, src, tgt, TraverseConfig(steps=40, eta=0.15))
    assert float(r.values.min()) >= r.level - 1e-5
    assert r.distances[-1] < 0.5 * r.distances[0]
    assert r.path.min() >= 0 and r.path.max() <= 1
    line = line_confidence(f, src, r.final)
    assert line[0] == pytest.approx(r.values[0].item(), abs=1e-5) and line[-1] == pytest.approx(r.values[-1].item(),
                                                                                                  abs=1e-5)
    with pytest.raises(ValueError, match="shape"):
        level_set_traverse(f, src, tgt[:, :8])


def test_bas_minimiser_is_the_planted_box():
    h = w = 12
    box = (3, 2, 8, 6)
    a = box_mask(h, w, box) * (0.5 + torch.rand(h, w, generator=torch.Generator().manual_seed(0)))
    for beta in (0.05, 0.2, 0.5, 5.0):                                       # any 0 < beta < total / box area
        best, ties = best_box(a, beta)
        assert best == box and ties == [box], beta
    _, ties = best_box(a, 0.0)                                               # beta = 0: every box containing it ties
    assert box in ties and (0, 0, h, w) in ties
    assert all(t[0] <= 3 and t[1] <= 2 and t[2] >= 8 and t[3] >= 6 for t in ties)
    assert len(ties) == 4 * 3 * 5 * 7
    assert float(bas_loss(a, box_mask(h, w, box), 0.0)) == pytest.approx(0.0, abs=1e-7)


def test_box_search_equals_the_direct_loss_of_every_box():
    from actlab.viz.bas import box_losses

    a = torch.rand(5, 6, generator=torch.Generator().manual_seed(2))
    loss, boxes = box_losses(a, 0.3)
    direct = torch.stack([bas_loss(a.double(), box_mask(5, 6, tuple(b)).double(), 0.3) for b in boxes.tolist()])
    assert len(boxes) == 15 * 21 and torch.allclose(loss, direct, atol=1e-12)


def test_bas_localises_a_planted_blob_on_a_cnn():
    """A GAP CNN whose only signal is the channel-0 activation: its Grad-CAM box is the bright square."""
    conv = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 1.0
        conv.bias.zero_()
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[4].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        net[4].bias.zero_()
    import actlab

    m = actlab.wrap(net)
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, 2:5, 4:9] = 1.0
    assert bas_localize(m, x, 0, "module:1", beta=0.2) == (2, 4, 5, 9)


def _iou(a, b):
    t, le, bb, r = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, bb - t) * max(0, r - le)
    area = lambda z: (z[2] - z[0]) * (z[3] - z[1])
    return inter / (area(a) + area(b) - inter)


def test_bas_localises_digits_planted_on_a_larger_canvas(digits_cnn, digits16):
    """The digits CNN is convolutional + GAP, so it reads a 40x40 canvas with one 16x16 test digit planted at a random
    place; the BAS box on its conv2 Grad-CAM finds the digit's ink box twice as well as a fixed central box (mean IoU
    0.437 vs 0.218 on these 30 digits; random activation maps give 0.125)."""
    _, te = digits16
    g = torch.Generator().manual_seed(0)
    got, centre = [], []
    for i in range(30):
        x = torch.zeros(1, 1, 40, 40)
        r, c = torch.randint(0, 25, (2,), generator=g).tolist()
        x[0, 0, r:r + 16, c:c + 16] = te.x[i, 0]
        ink = te.x[i, 0] > 0.1
        rows, cols = ink.any(1).nonzero(), ink.any(0).nonzero()
        box = (r + int(rows.min()), c + int(cols.min()), r + int(rows.max()) + 1, c + int(cols.max()) + 1)
        got.append(_iou(bas_localize(digits_cnn, x, int(te.y[i]), "module:conv2", 0.2), box))
        centre.append(_iou((12, 12, 28, 28), box))
    mean, base = sum(got) / len(got), sum(centre) / len(centre)
    assert mean > 0.35 and mean > 1.6 * base, (mean, base)
