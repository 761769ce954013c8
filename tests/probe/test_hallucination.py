"""Per-token hallucination detector and ComnHallu transfer (probes.md §4, steering.md §3): the spec's synthetic checks
(planted truthfulness direction recovered; Procrustes recovers a rotated, row-paired copy), a planted-truth tiny-LM
fixture (a vector added at the hallucinated tokens' residual in two different tiny models: the detector finds exactly
those tokens, and a detector trained on one model transfers to the other through PCA + Procrustes on paired texts),
and the real run on SmolLM2 (continuations that copy vs contradict a passage)."""
from __future__ import annotations

import pytest
import torch

from actlab.probe import auroc, fit_probe
from actlab.probe.hallu_data import contradiction_set
from actlab.probe.hallucination import scan_layers, span_positions, token_states, truthful_direction
from actlab.probe.transfer import fit_subspace_map, pca_basis, procrustes, transfer_probe

D = 64


def gaussian(n, u, g):
    y = torch.randint(0, 2, (n,), generator=g)
    return torch.randn(n, D, generator=g) + 3 * (2 * y[:, None] - 1) * u, y


def test_spec_synthetic_detector_and_direction():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    x, y = gaussian(2000, u, g)
    tr, va, te = slice(0, 1000), slice(1000, 1500), slice(1500, 2000)
    scan = scan_layers({"s": x[tr]}, y[tr], {"s": x[va]}, y[va], test={"s": x[te]}, y_test=y[te], n_boot=200)
    assert scan.test_auroc.value > 0.95 and scan.test_auroc.lo <= scan.test_auroc.value <= scan.test_auroc.hi
    assert 0.3 < scan.controls["shuffled_labels_test_auroc"] < 0.7
    d = truthful_direction(x, y)   # truthful minus hallucinated: points along -u
    assert float(torch.nn.functional.cosine_similarity(d, -u, dim=0)) > 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spec_procrustes_recovers_rotated_copy(seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    x, y = gaussian(2000, u, g)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    xt = x @ q + 0.1 * torch.randn(2000, D, generator=g)   # the "target model": rotated, noisy, rows paired
    smap = fit_subspace_map(x[:1000], xt[:1000], k=16)
    p = transfer_probe(smap, x[:1000], y[:1000])
    assert auroc(p.score(xt[1000:]), y[1000:]) > 0.95
    # the probe folded onto raw target states scores exactly as the source-coordinate probe on mapped states
    src = fit_probe(smap.source(x[:1000]), y[:1000])
    torch.testing.assert_close(p.score(xt[1000:]), src.score(smap.target(xt[1000:])), atol=1e-4, rtol=1e-4)


def test_pca_and_procrustes_by_construction():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(200, 8, generator=g)
    r, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    torch.testing.assert_close(procrustes(a, a @ r), r, atol=1e-5, rtol=0)
    x = torch.randn(5000, 6, generator=g) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1])
    _, p = pca_basis(x, 3)
    torch.testing.assert_close(p, torch.eye(6)[:, :3], atol=0.05, rtol=0)   # variance order, largest entry > 0
    with pytest.raises(ValueError, match="1 <= k"):
        pca_basis(x, 7)
    with pytest.raises(ValueError, match="paired"):
        fit_subspace_map(x, x[:10], k=2)


SCALE = 0.1   # ~ a third of the median residual norm (0.19-0.30) of these tiny models
SITES = ["blocks.0.resid_post", "blocks.1.resid_post"]


def planted_states(model, data, split, u, which="last"):
    """Token states with ``SCALE u`` added at blocks.0.resid_post of exactly the hallucinated (label 1) span tokens."""
    texts, spans = data.take(split)
    enc = model.tokenize(texts)
    am = enc["attention_mask"]
    mask = torch.zeros(am.shape)
    for r, (pos, sp) in enumerate(zip(span_positions(model, texts, spans, "last"), spans)):
        pad = int((am[r] == 0).sum())
        for p, (_, _, lab) in zip(pos, sp):
            mask[r, pad + p] = float(lab)

    def plant(act, ctx):
        assert act.shape[:2] == mask.shape
        return act + SCALE * mask[..., None] * u

    with model.hooks({SITES[0]: plant}):
        return token_states(model, texts, spans, SITES, which=which, batch_size=len(texts))


@pytest.fixture(scope="module")
def planted():
    from actlab import load_model

    data = contradiction_set(8, seed=1)
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in ("tiny-gpt2", "tiny-llama"):
        m = load_model(name)
        u = torch.nn.functional.normalize(torch.randn(m.d_model, generator=g), dim=0)
        out[name] = (m, u, {s: planted_states(m, data, s, u) for s in ("train", "val", "test")})
    return data, out


def test_planted_tokens_found_and_transfer(planted):
    data, models = planted
    m, u, st = models["tiny-gpt2"]
    (xtr, ytr, _), (xva, yva, _), (xte, yte, _) = st["train"], st["val"], st["test"]
    assert ytr.sum() == len(ytr) // 2 and len(yte) == 48
    scan = scan_layers(xtr, ytr, xva, yva, test=xte, y_test=yte, n_boot=200)
    assert scan.test_auroc.value > 0.95 and scan.best_site == SITES[0]   # the plant is cleanest where it is added
    cos = torch.nn.functional.cosine_similarity(truthful_direction(xtr[SITES[0]], ytr), -u, dim=0)
    assert float(cos) > 0.9
    # the first token of a multi-byte object word carries no plant at block 0 (causal): the position matters
    xf, yf, _ = planted_states(m, data, "test", u, which="first")
    assert auroc(xf[SITES[0]] @ u, yf) < 0.7 and auroc(xte[SITES[0]] @ u, yte) > 0.95
    # cross-model: PCA + Procrustes fitted on paired train texts of the two models (labels unused for the map)
    stt = models["tiny-llama"][2]
    site = "blocks.1.resid_post"
    smap = fit_subspace_map(xtr[site], stt["train"][0][site], k=8)
    p = transfer_probe(smap, xtr[site], ytr)
    in_model = scan_layers({site: stt["train"][0][site]}, ytr, {site: stt["val"][0][site]}, yva,
                           test={site: stt["test"][0][site]}, y_test=yte, n_boot=100).test_auroc.value
    transfer = auroc(p.score(stt["test"][0][site]), yte)
    # measured: transfer 0.86, in-model 1.0 (k = 8; the unaligned source probe is not asserted, per the spec)
    assert 0.75 < transfer <= in_model + 1e-9


def test_bad_input(tiny):
    m = tiny("tiny-gpt2")
    with pytest.raises(ValueError, match="no token covers|start < end"):
        span_positions(m, ["abc"], [[(2, 2, 1)]])
    with pytest.raises(ValueError, match="label 0/1"):
        span_positions(m, ["abc"], [[(0, 1, 2)]])
    with pytest.raises(ValueError, match="2 texts but 1"):
        span_positions(m, ["abc", "d"], [[(0, 1, 1)]])
    with pytest.raises(ValueError, match="one class"):
        truthful_direction(torch.randn(4, 3), [1, 1, 1, 1])


@pytest.mark.real
def test_hallucination_detector_smollm2(smollm2):
    # contradicting answers use a value absent from the passage (distractor=False): the detector must flag them at a
    # middle layer, not at the embedding-level block 0 (the object words come from one pool for both labels)
    data = contradiction_set(4, seed=0, distractor=False)
    sites = ["blocks.0.resid_post", "blocks.6.resid_post"]   # the pass stops after block 6
    (xtr, ytr, _), (xva, yva, _), (xte, yte, _) = (token_states(smollm2, *data.take(s), sites)
                                                    for s in ("train", "val", "test"))
    scan = scan_layers(xtr, ytr, xva, yva, test=xte, y_test=yte, n_boot=500, C=0.05)
    # measured with 8 per name and 11 sites (docs/probe.md): 1.0 from block 6 on, block 0 at 0.43
    assert scan.best_site != sites[0] and scan.test_auroc.value > 0.9 and scan.test_auroc.lo > 0.75
    assert scan.controls["first_site_test_auroc"] < 0.75
    assert 0.25 < scan.controls["shuffled_labels_test_auroc"] < 0.75
