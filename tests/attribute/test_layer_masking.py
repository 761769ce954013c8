"""Layer masking on a small CNN: identity with an all-ones mask, invariance to the mask colour, mask propagation."""
import pytest
import torch
import torch.nn.functional as F

import actlab
from actlab.attribute.layer_masking import LayerMaskConfig, fill_mask, layer_masked_forward


def _cnn(seed=0):
    torch.manual_seed(seed)
    layers = []
    for cin, cout, stride in ((3, 8, 1), (8, 8, 2), (8, 16, 1)):
        layers += [torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1), torch.nn.BatchNorm2d(cout),
                   torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5))
    with torch.no_grad():  # non-trivial BN statistics
        for mod in net:
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.5, 0.5)
    return net.eval()


def test_all_ones_mask_is_identity():
    net = _cnn()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer_masked_forward(net, x, torch.ones(16, 16)), net(x), atol=0, rtol=0)


def test_output_invariant_to_mask_colour():
    net = _cnn()
    m = actlab.wrap(net)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(16, 16)
    mask[4:10, 5:11] = 0
    noisy, black = fill_mask(x, mask, "noise"), fill_mask(x, mask, "black")
    with torch.no_grad():
        a, b = layer_masked_forward(m, noisy, mask), layer_masked_forward(m, black, mask)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        layer = (a - b).abs().max().item()
        plain = (net(noisy) - net(black)).abs().max().item()
        removed = (a - net(x)).abs().max().item()
    assert plain > 1e-4 and plain > 100 * layer  # ordinary fill masking depends on the colour
    assert removed > 1e-4  # and the region really is removed


def test_mask_propagation_matches_layer_pooling_and_zeroes_outside():
    net = _cnn()
    x = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(16, 16)
    mask[:6, :7] = 1
    with torch.no_grad():
        _, tr = layer_masked_forward(net, x, mask, trace=True)
    convs = [mod for mod in net if isinstance(mod, torch.nn.Conv2d)]
    prev = mask[None, None]
    for conv, got in zip(convs, tr.masks):
        want = F.max_pool2d(prev, conv.kernel_size, conv.stride, conv.padding)
        torch.testing.assert_close(got, want)
        prev = want
    assert tr.masks[1].shape[-1] == 8 and tr.layers == ["0", "3", "6"]
    # activations are zero outside the propagated mask
    m = actlab.wrap(net)
    with torch.no_grad(), m.recording(["module:5"]) as rec:
        layer_masked_forward(m, x, mask)
    assert rec["module:5"][..., (tr.masks[1][0, 0] == 0)].abs().max() == 0


def test_layer_masking_errors():
    net = _cnn()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="binary"):
        layer_masked_forward(net, x, torch.full((16, 16), 0.5))
    with pytest.raises(ValueError, match="whole image"):
        layer_masked_forward(net, x, torch.zeros(16, 16))
    bad = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Upsample(scale_factor=2))
    with pytest.raises(ValueError, match="does not support Upsample"):
        layer_masked_forward(bad, x, torch.ones(16, 16))
    flat = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(1024, 2))
    with pytest.raises(ValueError, match="before a global average pool"):
        layer_masked_forward(flat, x, torch.ones(16, 16))
    assert LayerMaskConfig().max_fill_iters == 8


def _channel0_gap_net() -> torch.nn.Module:
    """output = mean over pixels of relu(channel 0): a 1x1 conv reading channel 0 only, ReLU, global average pool."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1, bias=False), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1.0
    return net


def test_lime_with_each_masking_finds_the_planted_segment():
    from actlab.attribute.lime import compare_masking, grid_segments, rank_agreement

    # output = mean over kept positions of relu(channel 0): only the bright top-left segment matters
    net = _channel0_gap_net()
    x = torch.full((1, 3, 8, 8), 0.1)
    x[0, 0, :4, :4] = 3.0
    seg = grid_segments(8, 8, 2)
    assert seg[0, 0] == 0 and seg[7, 7] == 3
    w = compare_masking(net, x, seg, lambda o: o[:, 0], n_samples=40, seed=0)
    assert set(w) == {"layer", "grey", "black"}
    for k, v in w.items():
        assert v.argmax().item() == 0, (k, v)
    # the relevant segment carries most of the explanation under every masking; irrelevant ones stay small
    for k, v in w.items():
        assert v[0] > 2 * v[1:].abs().max(), (k, v)
    # rank_agreement is Spearman's rho: scipy's value, 1 for the same order, -1 for the reverse
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(12, generator=g), torch.randn(12, generator=g)
    assert rank_agreement(a, b) == pytest.approx(spearmanr(a, b).correlation, abs=1e-12)
    assert rank_agreement(a, 2 * a + 1) == pytest.approx(1.0) and rank_agreement(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="too few"):
        compare_masking(net, x, seg, lambda o: o[:, 0], n_samples=3)


def test_lime_maskings_agree_on_graded_planted_segments():
    """Three planted segments of decreasing strength (3.0 > 1.0 > 0.5 in channel 0): every masking orders them the
    same way (rank agreement 1 on those segments), whatever it does to the irrelevant ones."""
    from actlab.attribute.lime import compare_masking, grid_segments, rank_agreement

    net = _channel0_gap_net()
    x = torch.full((1, 3, 8, 8), 0.1)
    x[0, 0, :2, :2], x[0, 0, 2:4, 2:4], x[0, 0, 4:6, 4:6] = 3.0, 1.0, 0.5  # segments 0, 5, 10 of a 4x4 grid
    planted = [0, 5, 10]
    w = compare_masking(net, x, grid_segments(8, 8, 4), lambda o: o[:, 0], n_samples=200, seed=0)
    for k, v in w.items():
        assert v[planted].tolist() == sorted(v[planted].tolist(), reverse=True), (k, v)
        assert v.argmax().item() == 0, (k, v)
    for k in ("grey", "black"):
        assert rank_agreement(w["layer"][planted], w[k][planted]) == pytest.approx(1.0)


def test_global_average_pool_averages_kept_positions_only():
    """Spec: global average pooling is sum(x * m) / sum(m). A 1x1 conv + ReLU + GAP: the layer-masked output is the
    mean of relu(channel 0) over the kept pixels (a survivor of the mutation pass dropped the rescaling)."""
    net = _channel0_gap_net()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(8, 8)
    mask[2:6, 1:4] = 0
    with torch.no_grad():
        out = layer_masked_forward(net, x, mask)
    want = x[0, 0][mask.bool()].relu().mean()
    assert out.item() == pytest.approx(want.item(), abs=1e-6)


def test_lime_weights_are_the_kernel_weighted_fit():
    """LIME's weights are the kernel-weighted least-squares fit on the kept-segment indicators (exp(-d^2 / w^2), d the
    cosine distance to the unperturbed image): checked against numpy on an interaction the kernel matters for."""
    import numpy as np

    from actlab.attribute.lime import grid_segments, lime_attribution

    seg = grid_segments(4, 4, 2)
    seen = []

    def predict(x, masks):  # segment 0 and 1 only count together; segment 2 alone
        kept = torch.stack([masks[:, seg == s].float().mean(1) for s in range(4)], 1)
        seen.append(kept)
        return kept[:, 0] * kept[:, 1] * 2.0 + kept[:, 2]

    w = lime_attribution(predict, torch.zeros(1, 3, 4, 4), seg, n_samples=64, kernel_width=0.25, ridge=1e-9, seed=3)
    z = torch.cat(seen).double().numpy()
    y = z[:, 0] * z[:, 1] * 2.0 + z[:, 2]
    d = 1 - z.sum(1) / np.sqrt(z.sum(1) * 4)
    k = np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2))
    a = np.concatenate([z, np.ones((len(z), 1))], 1)
    beta = np.linalg.lstsq(a * k[:, None], y * k, rcond=None)[0]
    np.testing.assert_allclose(w.numpy(), beta[:4], atol=1e-4)
    unweighted = np.linalg.lstsq(a, y, rcond=None)[0]
    assert np.abs(unweighted[:4] - beta[:4]).max() > 0.05  # the kernel changes the answer here
