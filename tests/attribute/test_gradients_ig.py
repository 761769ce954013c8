"""Integrated gradients (completeness within the reported delta), gradient x input, saliency, SmoothGrad."""
import math

import pytest
import torch

import actlab
from actlab.attribute import (class_target, contrastive_target, gradient_attribution, integrated_gradients,
                              logit_target, quadrature)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_ig_completeness_within_reported_delta(tiny, name):
    m = tiny(name)
    x, y = m.tokenizer("x")["input_ids"][-1], m.tokenizer("y")["input_ids"][-1]
    target = contrastive_target(x, y)
    a = integrated_gradients(m, "the cat sat on", target, baseline="eos", steps=32)
    # f(x), f(baseline) computed independently: the plain forward, and the forward with every token but the first
    # (kept: keep_first) = <eos>
    with torch.no_grad():
        fx = float(target(m("the cat sat on")))
        ids = m.tokenize("the cat sat on")["input_ids"]
        ids_b = torch.full_like(ids, m.tokenizer.eos_token_id)
        ids_b[:, 0] = ids[:, 0]
        fb = float(target(m(ids_b)))
    assert a.f_x == pytest.approx(fx, abs=1e-5) and a.f_baseline == pytest.approx(fb, abs=1e-5)
    assert float(a.attr.sum()) - (fx - fb) == pytest.approx(a.delta, abs=1e-6)  # the reported delta is the error
    assert abs(a.delta) < 0.01 * abs(fx - fb) + 1e-5  # and it is small (the adaptive rule's tolerance: 1%)
    assert a.meta["converged"] and a.meta["local_error"] >= abs(a.delta) - 1e-6  # the error bound it stopped on
    assert float(a.attr[0].abs().max()) == 0  # the first token is part of the baseline (keep_first)
    g = integrated_gradients(m, "the cat sat on", target, baseline="eos", steps=32, rule="gausslegendre")
    assert abs(g.delta) < 1e-3 * abs(fx - fb) + 1e-5  # smooth tiny model: 32 Gauss-Legendre nodes are ~exact
    assert a.scores.shape == (len(ids[0]),) and a.tokens[1] == "t"
    # a coarse right-Riemann sum converges towards the same attributions as steps grow
    d16 = integrated_gradients(m, "the cat sat on", target, baseline="eos", steps=8, rule="riemann_right").delta
    d64 = integrated_gradients(m, "the cat sat on", target, baseline="eos", steps=64, rule="riemann_right").delta
    assert abs(d64) < abs(d16)


def test_ig_partial_positions_and_zero_baseline_warning(tiny, caplog):
    m = tiny("tiny-llama")
    t = logit_target(m.tokenizer("x")["input_ids"][-1])
    a = integrated_gradients(m, "the cat sat on", t, baseline="eos", steps=16, positions=[5])
    assert a.attr[[0, 1, 2, 3, 4, 6]].abs().max() == 0 and a.attr[5].abs().max() > 0
    assert abs(a.delta) < 0.01 * abs(a.f_x - a.f_baseline) + 1e-5
    with caplog.at_level("WARNING"):
        z = integrated_gradients(m, "the cat sat on", t, baseline="zero", steps=8, rule="trapezoid", keep_first=False)
    assert abs(z.delta) > 1 and "singular for RMSNorm" in caplog.text  # the reported delta exposes the bad baseline


class Planted(torch.nn.Module):
    """Float 'embeddings' [b, P, 4] -> score; token feature 0 pushes up ('A'), feature 1 pushes down ('B')."""

    def forward(self, e):
        s = torch.tanh(e[..., 0]).sum(-1) * 2 - torch.sigmoid(3 * e[..., 1]).sum(-1) + 0.1 * e[..., 2].sum(-1)
        return s[:, None]


def test_ig_ranks_planted_tokens():
    m = actlab.wrap(Planted())
    e = torch.zeros(1, 6, 4)
    e[0, :, 2] = torch.tensor([0.3, -0.2, 0.5, 0.1, 0.0, 0.4])
    e[0, 2, 0] = 1.5  # token A at position 2
    e[0, 4, 1] = 2.0  # token B at position 4
    a = integrated_gradients(m, e, class_target(0), baseline="zero", steps=32, rule="gausslegendre")
    scores = a.attr.sum(-1)
    assert scores.argmax().item() == 2 and scores.argmin().item() == 4
    assert abs(a.delta) < 1e-4
    g = gradient_attribution(m, e, class_target(0), method="grad_x_input")
    gs = g.attr.sum(-1)
    assert gs.argmax().item() == 2
    # B saturates its sigmoid: gradient x input misses it, integrated gradients does not (the reason IG exists)
    assert abs(gs[4].item()) < 0.1 * abs(scores[4].item())


def test_gradient_methods_on_a_linear_model_and_images():
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    m = actlab.wrap(lin)
    x = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    w = lin[1].weight[1].detach().view(3, 2, 2)
    gx = gradient_attribution(m, x, class_target(1), method="grad_x_input")
    torch.testing.assert_close(gx.attr, w * x[0])  # exact contributions of a linear model
    assert gx.scores.shape == (2, 2)  # per pixel (summed over channels)
    sal = gradient_attribution(m, x, class_target(1), method="saliency")
    torch.testing.assert_close(sal.attr, w.abs())
    sg = gradient_attribution(m, x, class_target(1), method="smoothgrad", n_samples=8, noise=0.5)
    torch.testing.assert_close(sg.attr, w * x[0], atol=1e-6, rtol=1e-5)  # linear: noise does not change the gradient
    ig = integrated_gradients(m, x, class_target(1), baseline="zero", steps=4)
    torch.testing.assert_close(ig.attr, w * x[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown method"):
        gradient_attribution(m, x, class_target(1), method="lrp")
    with pytest.raises(ValueError, match="one example at a time"):
        gradient_attribution(m, torch.randn(2, 3, 2, 2), class_target(1))


def test_smoothgrad_text_and_rendering(tiny, tmp_path):
    m = tiny("tiny-gpt2")
    t = logit_target(m.tokenizer("x")["input_ids"][-1])
    a = gradient_attribution(m, "a <b> c", t, method="smoothgrad", n_samples=4, noise=0.05)
    term = a.to_terminal()
    assert "\x1b[48;5;" in term and "c" in term
    html = a.to_html()
    assert "&lt;" in html and "<b>" in html  # tokens escaped, title bold
    out = a.save(tmp_path / "attr")
    assert (out / "tokens.html").exists() and (out / "attribution.safetensors").exists()
    w, n = quadrature(5)
    assert float(n.sum()) == pytest.approx(1.0) and float(w.min()) > 0 and float(w.max()) < 1
    with pytest.raises(ValueError, match="unknown text baseline"):
        integrated_gradients(m, "abc", t, baseline="grey")


class Step(torch.nn.Module):
    """A smooth step along the path (slope 40 at 0.6): coarse fixed grids miss it, the adaptive rule must refine."""

    def forward(self, e):
        return (torch.tanh(40 * (e[..., 0] - 0.6)).sum(-1) + 0.3 * e[..., 1].sum(-1))[:, None]


def test_adaptive_rule_refines_where_the_path_is_sharp():
    m = actlab.wrap(Step())
    e = torch.zeros(1, 3, 2)
    e[0, :, 0] = torch.tensor([1.0, 0.8, 0.2])
    e[0, :, 1] = 1.0
    fixed = integrated_gradients(m, e, class_target(0), baseline="zero", steps=16, rule="trapezoid")
    a = integrated_gradients(m, e, class_target(0), baseline="zero", steps=16, tol=1e-3)
    assert fixed.completeness["relative_error"] > 0.01  # 16 fixed intervals miss the step
    assert a.meta["converged"] and a.meta["evaluations"] > 17  # refined beyond the starting grid
    assert a.completeness["relative_error"] < 1e-3 and abs(a.delta) <= a.meta["local_error"] + 1e-9
    # the exact answer per token (tanh part: f(x) - f(0) of each token; the linear part: 0.3 each)
    exact = torch.tanh(40 * (e[0, :, 0] - 0.6)) - torch.tanh(torch.tensor(-24.0))
    torch.testing.assert_close(a.attr[:, 0], exact, atol=5e-3, rtol=0)
    torch.testing.assert_close(a.attr[:, 1], torch.full((3,), 0.3), atol=1e-5, rtol=0)


def test_contrastive_and_logit_targets_match_their_formulas():
    out = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    lp = torch.log_softmax(out[:, -1], -1)
    torch.testing.assert_close(contrastive_target(4, 1)(out), lp[:, 4] - lp[:, 1])
    torch.testing.assert_close(logit_target(2, position=0)(out), out[:, 0, 2])
    torch.testing.assert_close(logit_target(2, log_prob=True)(out), lp[:, 2])


class TwoSteps(torch.nn.Module):
    """Token 0 steps up at 0.3 of the path, token 1 steps down at 0.7 (mirror images): a coarse trapezoid's errors on
    the two cancel, so a rule that stopped on the completeness error alone would keep wrong per-token values."""

    def forward(self, e):
        return (torch.tanh(40 * (e[:, 0, 0] - 0.3)) - torch.tanh(40 * (e[:, 1, 0] - 0.7)))[:, None]


def test_adaptive_rule_does_not_stop_on_cancelling_errors():
    m = actlab.wrap(TwoSteps())
    e = torch.ones(1, 2, 1)
    coarse = integrated_gradients(m, e, class_target(0), baseline="zero", steps=16, rule="trapezoid")
    exact = torch.tensor([math.tanh(28.0) - math.tanh(-12.0), -(math.tanh(12.0) - math.tanh(-28.0))])
    assert coarse.completeness["relative_error"] < 1e-3  # the errors cancel...
    assert (coarse.attr[:, 0] - exact).abs().max() > 0.01  # ...while each token is off
    a = integrated_gradients(m, e, class_target(0), baseline="zero", steps=16)
    torch.testing.assert_close(a.attr[:, 0], exact.float(), atol=5e-3, rtol=0)
