"""Outlier finder, fake quantization, SmoothQuant invariance, calibration scales, quantized model context."""
import pytest
import torch

from actlab.stats.calibration import calibrate, linear_layers, perplexity, quantized
from actlab.stats.quant import ChannelStats, fake_quant, find_outliers, smooth, smoothquant_scales


def _x(seed=0, n=1024, d=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[:, 5] *= 100
    return x


def test_outlier_channel_and_quant_error():
    x = _x()
    st = ChannelStats(64)
    st.update(x[:500])
    st.update(x[500:])
    assert find_outliers([st]) == [5]
    assert st.kurtosis()[0] == pytest.approx(3.0, abs=0.5)
    other = [c for c in range(64) if c != 5]
    err_t = (fake_quant(x, 8, "tensor") - x)[:, other].abs().mean()
    err_c = (fake_quant(x, 8, "channel") - x)[:, other].abs().mean()
    assert err_t > 10 * err_c
    # INT4 is coarser than INT8; percentile clipping clips the outlier channel
    assert (fake_quant(x, 4, "token") - x).abs().mean() > (fake_quant(x, 8, "token") - x).abs().mean()
    assert fake_quant(x, 8, "tensor", clip="percentile", percentile=99.0).abs().max() < x.abs().max()
    with pytest.raises(ValueError, match="granularity"):
        fake_quant(x, 8, "row")
    with pytest.raises(ValueError, match="last dim"):
        st.update(torch.zeros(3, 8))


def test_smoothquant_leaves_xw_unchanged():
    x = _x(1).double()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(2)).double()
    s = smoothquant_scales(x.abs().amax(0), w, alpha=0.5).double()
    xs, ws = smooth(x, w, s)
    ref = x @ w.T
    assert torch.allclose(xs @ ws.T, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    ratio = lambda t: float(t.abs().max() / t.abs().median())  # noqa: E731
    assert ratio(xs) < ratio(x) / 5
    with pytest.raises(ValueError, match="input features"):
        smoothquant_scales(torch.ones(10), w)


def test_calibration_scales_depend_on_distribution(tiny, one_thread):
    m = tiny("tiny-llama")
    g = torch.Generator().manual_seed(0)
    letters = torch.arange(ord("a"), ord("z") + 1) + 3       # byte tokens of lower-case letters
    punct = torch.tensor([ord(c) + 3 for c in "!?.,;:-()[]{}#$%&*"])
    a1 = letters[torch.randint(26, (8, 64), generator=g)]
    a2 = letters[torch.randint(26, (8, 64), generator=g)]
    b = punct[torch.randint(len(punct), (8, 64), generator=g)]
    c1, c2, c3 = calibrate(m, a1), calibrate(m, a2), calibrate(m, b)
    p = linear_layers(m)[0]
    d_same = float((c1.absmax[p] - c2.absmax[p]).abs().mean() / c1.absmax[p].mean())
    d_shift = float((c1.absmax[p] - c3.absmax[p]).abs().mean() / c1.absmax[p].mean())
    assert d_shift > 3 * d_same


def test_quantized_model_restores_weights(tiny, one_thread):
    m = tiny("tiny-llama")
    ids = torch.randint(3, 200, (4, 32), generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in m.module.state_dict().items()}
    base = perplexity(m, ids)
    cal = calibrate(m, ids)
    with quantized(m, cal, w_bits=8, a_bits=8):
        q8 = perplexity(m, ids)
    with quantized(m, cal, w_bits=4, a_bits=4, smoothquant_alpha=0.5):
        q4 = perplexity(m, ids)
    after = m.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert q8 != base and abs(q8 - base) < abs(q4 - base)
    with pytest.raises(ValueError, match="need a Calibration"):
        with quantized(m, None):
            pass


def test_fake_quant_grid_and_smoothquant_formula():
    """Exact values: symmetric INT8 per tensor maps +-max|x| to +-127 steps of max|x|/127 and every output onto that
    grid (a static scale clamps at -128 and +127); SmoothQuant scales follow s_j = max|X_j|^a / max|W_j|^(1-a)."""
    x = torch.tensor([[-2.0, 2.0, 0.3, -0.71]])
    q = fake_quant(x, 8, "tensor")
    s = 2.0 / 127
    assert q[0, :2].tolist() == pytest.approx([-2.0, 2.0])
    assert torch.allclose(q / s, (q / s).round(), atol=1e-4)
    assert (q / s).round().tolist()[0] == [-127, 127, round(0.3 / s), round(-0.71 / s)]
    clamped = fake_quant(torch.tensor([-10.0, 10.0]), 8, scale=torch.tensor(s))
    assert (clamped / s).round().tolist() == [-128, 127]
    g = torch.Generator().manual_seed(0)
    am, w = torch.rand(6, generator=g) * 10 + 0.1, torch.randn(4, 6, generator=g)
    for alpha in (0.2, 0.8):
        expect = am ** alpha / w.abs().amax(0) ** (1 - alpha)
        assert torch.allclose(smoothquant_scales(am, w, alpha), expect, rtol=1e-5)
