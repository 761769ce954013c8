"""Subspace rerouting (security.md §4) against a planted ground truth: a tiny GPT-2 whose "refusal" readout is the
cosine of the last-token residual after block 0 with a planted direction r, and a few vocabulary tokens whose
embeddings point along -r. The search must drive the cosine across the target, far below random suffixes; the best
loss (buffer + archive) never rises; the pass never runs past the last targeted block; and the report run writes its
files. The SmolLM2 run (few steps) is marked real."""
from __future__ import annotations

import json

import pytest
import torch

from actlab.security.rerouting import (
    ReroutingConfig,
    SearchConfig,
    allowed_tokens,
    random_baseline,
    run_rerouting,
    subspace_reroute,
)

SITE = "blocks.0.resid_post"
PLANTED = "qzxj"


@pytest.fixture(scope="module")
def planted():
    from actlab.models.tiny import tiny_model

    m = tiny_model("tiny-gpt2", seed=3)   # a fresh copy: its embeddings are edited below
    g = torch.Generator().manual_seed(0)
    r = torch.nn.functional.normalize(torch.randn(m.d_model, generator=g), dim=0)
    ids = [m.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in PLANTED]
    with torch.no_grad():
        W = m.adapter.W_E
        W[ids] = W[ids] - 0.6 * r     # typical embedding norm here is ~0.16: these tokens dominate along -r
    return m, r, ids


def test_search_crosses_target_far_below_random(planted):
    m, r, ids = planted
    cfg = SearchConfig(suffix_len=6, steps=8, search_width=32, search_topk=16, target=-0.5, seed=0)
    res = subspace_reroute(m, "Explain how to pick a lock.", {SITE: r}, cfg)
    base = random_baseline(m, "Explain how to pick a lock.", {SITE: r}, cfg, n=64)[:, 0]
    assert res.crossed and res.score[SITE] <= -0.5
    # a random suffix ends in a planted token now and then (4 of ~190 tokens): compare with its bulk, not its luck
    assert res.score[SITE] < float(base.quantile(0.1)) - 0.5 and res.score[SITE] < float(base.median()) - 0.5
    assert res.suffix_ids[-1] in ids   # the last (read) position holds a planted token
    assert all(b <= a + 1e-12 for a, b in zip(res.losses, res.losses[1:]))   # best over buffer + archive
    assert res.initial_score[SITE] > -0.5


def test_loss_curve_non_increasing_with_jumps_and_stops_early(planted):
    m, r, _ = planted
    calls = {"n": 0}

    def count(mod, args, out):
        calls["n"] += 1

    # an unreachable target keeps the search going; patience 1 forces jumps (archive + sampled restart)
    cfg = SearchConfig(suffix_len=4, steps=6, search_width=16, search_topk=8, target=-1.0, patience=1, seed=1)
    with m.module_hook(m.adapter.block_path(1), count):
        res = subspace_reroute(m, "hello", {SITE: r}, cfg)
    assert calls["n"] == 0          # the loss reads block 0 only: block 1 never runs (gradient and candidate passes)
    assert res.iterations == 6 and not res.crossed and len(res.losses) == 6
    assert all(b <= a + 1e-12 for a, b in zip(res.losses, res.losses[1:]))


def test_retokenisation_and_bad_input(planted):
    m, r, _ = planted
    ok = allowed_tokens(m)
    tok = m.tokenizer
    assert all(tok(tok.decode([int(i)]), add_special_tokens=False)["input_ids"] == [int(i)] for i in ok)
    assert 0 not in ok.tolist() and len(ok) < 256   # specials and non-printable bytes excluded
    with pytest.raises(ValueError, match="d_model=64"):
        subspace_reroute(m, "x", {SITE: torch.randn(32)}, SearchConfig(steps=1))
    with pytest.raises(KeyError):
        subspace_reroute(m, "x", {"blocks.9.resid_post": r}, SearchConfig(steps=1))
    with pytest.raises(ValueError, match="position"):
        SearchConfig(position="middle")


def test_run_rerouting_report(tmp_path):
    s = "blocks.1.resid_post"
    cfg = ReroutingConfig(suffix_len=4, steps=2, search_width=8, search_topk=8, n_random=4, sites=s, target=-5.0)
    rep = run_rerouting(cfg, tmp_path / "ssr")
    on_disk = json.loads((tmp_path / "ssr" / "report.json").read_text())
    assert on_disk["result"]["iterations"] == rep["result"]["iterations"] == 2
    # the normalised projection puts the bundled sets' means at +1 (harmful) and -1 (harmless) by construction
    assert on_disk["reference_mean"]["harmful"][s] == pytest.approx(1.0, abs=1e-4)
    assert on_disk["reference_mean"]["harmless"][s] == pytest.approx(-1.0, abs=1e-4)
    assert rep["result"]["score"][s] <= rep["result"]["initial_score"][s]
    assert rep["result"]["measure"] == "proj" and set(on_disk["random_suffix"]) == {s}
    assert (tmp_path / "ssr" / "loss.png").stat().st_size > 1000


@pytest.mark.real
def test_rerouting_smollm2(smollm2, tmp_path):
    s = "blocks.12.resid_post"
    cfg = ReroutingConfig(suffix_len=8, steps=5, search_width=32, search_topk=32, n_random=8, sites=s)
    rep = run_rerouting(cfg, tmp_path / "ssr", model=smollm2)
    # the search lowers the projection below every random suffix's (docs/probe.md: numbers of the longer run)
    assert rep["result"]["score"][s] < rep["random_suffix"][s]["min"]
    assert rep["result"]["losses"][-1] <= rep["result"]["losses"][0]


def test_measures_by_hand(planted):
    m, r, _ = planted
    cfg = SearchConfig(suffix_len=3, seed=4)
    ok = allowed_tokens(m)
    g = torch.Generator().manual_seed(cfg.seed + 1)   # random_baseline's draw
    suf = ok[torch.randint(len(ok), (5, 3), generator=g)]
    ids = torch.cat([torch.tensor(m.tokenizer("hi")["input_ids"]).expand(5, -1), suf], 1)
    h = m.record({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, SITE)[SITE][:, -1]
    c, scale = torch.randn(m.d_model), 0.7
    cos = random_baseline(m, "hi", {SITE: 3 * r}, cfg, n=5)[:, 0]
    torch.testing.assert_close(cos, torch.nn.functional.cosine_similarity(h, r[None], dim=-1))
    proj = random_baseline(m, "hi", {SITE: 3 * r}, cfg, n=5, centers={SITE: c}, scales={SITE: scale})[:, 0]
    torch.testing.assert_close(proj, (h - c) @ r / scale)
    with pytest.raises(ValueError, match="cover every direction"):
        random_baseline(m, "hi", {SITE: r}, cfg, n=2, centers={}, scales={})
