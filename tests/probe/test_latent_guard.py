"""Latent Guard: the spec's synthetic check (jailbreak shift along w leaves the harm cosine intact while a
refusal-like direction is fooled), rescaling invariance, artifact round trip, and the real run on SmolLM2."""
from __future__ import annotations

import pytest
import torch

from actlab.probe import auroc
from actlab.probe.latent_guard import LatentGuard, evaluate_guard, rewrite

D = 64


def states(n, harm, jb, g, u, w, b, noise=0.25):
    return b + 3 * harm * u + 3 * jb * w + noise * torch.randn(n, D, generator=g)


def synthetic(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, 3, generator=g))
    u, w = q[:, 0], q[:, 1]
    b = 5 * q[:, 2]
    return g, u, w, b


def test_spec_sanity_check():
    g, u, w, b = synthetic()
    guard = LatentGuard.from_acts({"s": states(400, 1, 0, g, u, w, b)}, {"s": states(400, 0, 0, g, u, w, b)})
    rate = lambda h: float((guard.score({"s": h}) >= 0).float().mean())
    harm_jb = states(400, 1, 1, g, u, w, b)
    assert rate(harm_jb) >= 0.99
    assert rate(states(400, 0, 0, g, u, w, b)) <= 0.01 and rate(states(400, 0, 1, g, u, w, b)) <= 0.01
    # a refusal-like direction r = u - 2w, thresholded midway between the clean class means, flags none of them
    r = u - 2 * w
    thr = 0.5 * (float((b + 3 * u) @ r) + float(b @ r))
    assert float((harm_jb @ r >= thr).float().mean()) == 0.0
    # invariant to positive rescaling of h
    torch.testing.assert_close(guard.score({"s": 7.5 * harm_jb}), guard.score({"s": harm_jb}))


def test_wrong_sign_and_errors(tmp_path):
    g, u, w, b = synthetic(1)
    h, s = states(50, 1, 0, g, u, w, b), states(50, 0, 0, g, u, w, b)
    guard = LatentGuard.from_acts({"s": h}, {"s": s})
    y = torch.tensor([1] * 50 + [0] * 50)
    assert auroc(guard.score({"s": torch.cat([h, s])}), y) == 1.0
    swapped = LatentGuard.from_acts({"s": s}, {"s": h})   # centroids swapped: the score flips
    assert auroc(swapped.score({"s": torch.cat([h, s])}), y) == 0.0
    g2 = LatentGuard.load(guard.save(tmp_path / "g"))
    torch.testing.assert_close(g2.score({"s": h}), guard.score({"s": h}))
    with pytest.raises(ValueError, match="width 32"):
        guard.score({"s": torch.randn(3, 32)})
    with pytest.raises(KeyError, match="site"):
        guard.score({"t": h})
    with pytest.raises(ValueError, match="both harmful and harmless"):
        LatentGuard.from_acts({"s": h}, {"s": h[:0]})
    with pytest.raises(KeyError, match="unknown jailbreak"):
        rewrite(["x"], ["nope"])


@pytest.mark.real
def test_latent_guard_smollm2_held_out_rewrites(smollm2):
    from actlab.steer import load_instructions

    H, S = load_instructions("harmful"), load_instructions("harmless")
    _, ev = evaluate_guard(smollm2, H, S, ["blocks.15.resid_post"], n_train=16, templates=["override"],
                               n_boot=300)
    # measured: plain held-out 1.0, override 0.97 (docs/probe.md: all templates; layers < 12 sit near chance)
    assert ev.auroc_plain.value >= 0.9
    assert ev.auroc_rewrites.value >= 0.8 and ev.auroc_rewrites.lo > 0.6
    assert ev.n_test == 16
