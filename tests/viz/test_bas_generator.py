"""BAS with a trained foreground generator: the spec's planted-box check, and localisation of digits on a canvas."""
from __future__ import annotations

import pytest
import torch

import actlab
from actlab.viz.bas import bas_localize, grad_cam
from actlab.viz.bas_generator import (
    BASConfig,
    bas_terms,
    box_iou,
    mask_box,
    planted_digits,
    site_cams,
    train_bas_generator,
)


def _planted_maps(n: int, seed: int, size: int = 12, eps: float = 0.1):
    """Images whose only strong signal is a planted box (values 0.5-1.5) over a faint background (0-eps)."""
    g = torch.Generator().manual_seed(seed)
    x = eps * torch.rand(n, 1, size, size, generator=g)
    boxes = []
    for i in range(n):
        h, w = torch.randint(3, 7, (2,), generator=g).tolist()
        t = int(torch.randint(0, size - h + 1, (1,), generator=g))
        le = int(torch.randint(0, size - w + 1, (1,), generator=g))
        x[i, 0, t:t + h, le:le + w] = 0.5 + torch.rand(h, w, generator=g)
        boxes.append((t, le, t + h, le + w))
    return x, torch.zeros(n, dtype=torch.long), boxes


def _box_classifier():
    """A GAP classifier whose class-0 activation map is its input (conv 1x1 = identity): A = the planted map."""
    conv = torch.nn.Conv2d(1, 1, 1)
    lin = torch.nn.Linear(1, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        lin.weight.copy_(torch.tensor([[4.0], [-4.0]]))
        lin.bias.zero_()
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), lin)
    return actlab.wrap(net.eval().requires_grad_(False))


def test_trained_generator_predicts_the_planted_box():
    """The spec's check with the learned generator: on held-out maps positive (strongly) only inside a planted box, the
    predicted box IS the planted box; without the area term the map spreads over the faint background (the beta = 0
    ties of the box search: boxes containing the planted one) and the box is the whole image."""
    m = _box_classifier()
    x, y, _ = _planted_maps(256, seed=0)
    xt, _, boxes = _planted_maps(100, seed=1)
    cfg = BASConfig(site="module:0", beta=1.0, steps=120, lr=0.03)
    g = train_bas_generator(m, x, y, cfg)
    got = g.boxes(xt)
    assert sum(a == b for a, b in zip(got, boxes)) >= 95                    # 99 / 100 measured
    _, lbg, la = g.history[-1]
    assert lbg < 0.3 and la < 0.2                                           # keeps the box's mass, not much more
    flat = train_bas_generator(m, x, y, BASConfig(site="module:0", beta=0.0, steps=40, lr=0.03))
    assert all(b == (0, 0, 12, 12) for b in flat.boxes(xt[:10]))


def test_generator_localises_digits_planted_on_a_canvas(digits_cnn, digits16):
    """A 16x16 test digit at a random place of a zero 32x32 canvas; the generator (trained on other canvases with
    image-level labels only) reads conv2 and its box matches the digit's ink box: mean IoU 0.77 on 100 held-out
    canvases vs 0.41 for the Grad-CAM box search and 0.35 for a fixed central box."""
    tr, te = digits16
    x, y, _ = planted_digits(tr.x[:256], tr.y[:256], 32, seed=0)
    xt, yt, boxes = planted_digits(te.x[:100], te.y[:100], 32, seed=1)
    g = train_bas_generator(digits_cnn, x, y, BASConfig(steps=100))
    iou = sum(box_iou(a, b) for a, b in zip(g.boxes(xt), boxes)) / len(boxes)
    search = sum(box_iou(bas_localize(digits_cnn, xt[i:i + 1], int(yt[i]), "module:conv2", 0.2), boxes[i])
                 for i in range(30)) / 30
    centre = sum(box_iou((8, 8, 24, 24), b) for b in boxes) / len(boxes)
    assert iou > 0.65 and iou > 1.4 * search and iou > 1.6 * centre, (iou, search, centre)


def test_bas_terms_masks_boxes_and_errors(digits_cnn):
    cam = torch.zeros(2, 4, 4)
    cam[:, 1:3, 1:3] = 1.0
    inside = (cam > 0).float()
    lbg, la = bas_terms(cam, inside)
    assert float(lbg) == 0.0 and float(la) == pytest.approx(0.25)
    lbg, _ = bas_terms(cam, torch.zeros(2, 4, 4))
    assert float(lbg) == pytest.approx(1.0)
    assert mask_box(inside[0], 0.5) == (1, 1, 3, 3)
    assert mask_box(torch.zeros(4, 4).index_put_((torch.tensor([2]), torch.tensor([3])), torch.tensor(0.3)),
                    0.5) == (2, 3, 3, 4)                                    # nothing passes: the maximum's pixel
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    x = torch.rand(3, 1, 16, 16)
    act, cams = site_cams(digits_cnn, x, torch.tensor([0, 1, 2]), "module:conv2")
    assert act.shape == (3, 32, 8, 8) and cams.shape == (3, 8, 8) and bool((cams >= 0).all())
    for i in range(3):                                                       # batched == one image at a time
        up = torch.nn.functional.interpolate(cams[i][None, None], size=(16, 16), mode="bilinear", align_corners=False)
        assert torch.allclose(up[0, 0], grad_cam(digits_cnn, x[i:i + 1], i, "module:conv2"), atol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        bas_terms(cam, inside[:, :2])
    with pytest.raises(ValueError, match="threshold"):
        BASConfig(threshold=1.5)
    with pytest.raises(ValueError, match="rows"):
        train_bas_generator(digits_cnn, x, torch.tensor([0]), BASConfig(steps=1))
    with pytest.raises(KeyError):
        train_bas_generator(digits_cnn, x, torch.tensor([0, 1, 2]), BASConfig(site="module:conv9", steps=1))
