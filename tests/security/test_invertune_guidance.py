"""InverTune's activation-guidance term (spec §3 step 2): its math (zero when stamped activations equal the clean ones,
gradient = autograd = finite differences) and its wiring in the trigger inversion (a positive weight makes the
inverted trigger shift the encoder's hidden activations more, a negative one less; on the CLIP toy the guided trigger
spends its norm budget off the planted corner: docs/security.md has the figures over three fixture seeds)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from actlab.security import InverTuneConfig, activation_divergence, invert_trigger


def test_divergence_is_zero_at_equal_activations_and_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    hc = torch.rand(16, 8, generator=g, dtype=torch.float64)
    assert float(activation_divergence(hc, hc)) == 0.0
    assert float(activation_divergence(hc[torch.randperm(16, generator=g)], hc)) < 1e-12   # only the mean counts
    hs = hc + torch.randn(16, 8, generator=g, dtype=torch.float64)
    mc, ms = hc.mean(0), hs.mean(0)
    assert torch.allclose(activation_divergence(hs, hc), (ms - mc).pow(2).sum() / mc.pow(2).sum())
    # conv-shaped activations are flattened per row
    assert torch.allclose(activation_divergence(hs.view(16, 2, 4), hc.view(16, 2, 4)), activation_divergence(hs, hc))


def test_divergence_gradient_matches_autograd_and_finite_differences():
    g = torch.Generator().manual_seed(1)
    hc = torch.rand(6, 5, generator=g, dtype=torch.float64)
    hs = (hc + 0.3 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    d = activation_divergence(hs, hc)
    grad, = torch.autograd.grad(d, hs)
    mc = hc.mean(0)
    analytic = (2 * (hs.detach().mean(0) - mc) / (len(hc) * mc.pow(2).sum())).expand_as(hs)
    assert torch.allclose(grad, analytic)
    assert torch.autograd.gradcheck(lambda h: activation_divergence(h, hc), (hs,))
    # at equal activations the term is flat: no push in any direction
    h0 = hc.clone().requires_grad_(True)
    assert float(torch.autograd.grad(activation_divergence(h0, hc), h0)[0].abs().max()) == 0.0


def test_divergence_bad_input():
    with pytest.raises(ValueError, match="equal-shape"):
        activation_divergence(torch.zeros(4, 3), torch.zeros(4, 2))
    enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))   # no hidden(): the guidance has nothing to read
    text = nn.functional.normalize(torch.randn(10, 16), dim=-1)
    with pytest.raises(ValueError, match="hidden"):
        invert_trigger(enc, text, torch.rand(8, 1, 8, 8), 3, InverTuneConfig(trigger_act=1.0, trigger_steps=2))


def _shift(fx, delta):
    with torch.no_grad():
        return float(activation_divergence(fx.encoder.hidden((fx.x_val + delta).clamp(0, 1)),
                                           fx.encoder.hidden(fx.x_val)))


def test_guidance_weight_moves_the_trigger_along_the_activation_shift(clip_bd):
    fx = clip_bd
    out = {}
    for w in (0.0, 0.1, -0.1):
        delta, rate = invert_trigger(fx.encoder, fx.text, fx.x_val, fx.cfg.target, InverTuneConfig(trigger_act=w))
        out[w] = (_shift(fx, delta), float(delta[0, -2:, -2:].norm() / delta.norm()), rate)
    # measured (fixture seed 0): shift 2.33 / 4.61 / 0.43, corner share 1.00 / 0.47 / 0.99, rate 1.00 / 1.00 / 0.67
    assert out[0.1][0] > 1.5 * out[0.0][0] > 1.5 * 1.5 * out[-0.1][0]
    assert out[0.1][1] < 0.6 < 0.8 < out[0.0][1]      # the guided trigger spends its norm budget off the corner
    assert out[0.1][2] > 0.8 and out[0.0][2] > 0.8


def test_cli_flag_reaches_the_inversion(clip_bd, fixture_cache, tmp_path):
    import json

    from actlab.cli import main

    main(["security", "invert", "--method", "invertune", "--trigger-act", "0.1", "--tune-steps", "1", "--cache",
          str(fixture_cache), "--out", str(tmp_path / "g")])
    rep = json.loads((tmp_path / "g" / "report.json").read_text())
    assert rep["config"]["trigger_act"] == 0.1
    assert rep["trigger_corner_share"] < 0.6   # measured 0.47 (0.997 without the term, as in test_invert_cli)
