"""The explorer's JSON equals the artifacts and the library: SAE overview vs the cache, feature data vs the cache's
entries and examples, live prompt features vs ``sae.encode`` of a recording, attention vs the recorded pattern,
steering vs ``generate`` under ``intervene``, patch grid vs the saved PatchResult; the model loads lazily, once."""
from __future__ import annotations

import httpx
import pytest
import torch

from actlab import Add
from actlab.explain import ExampleConfig, activating_windows

from .conftest import EXPLAINED, SITE

SID = "art-cache"


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_index_lists_every_artifact(api):
    kinds = {a["id"]: a["kind"] for a in api.get("/api/index").json()["artifacts"]}
    assert kinds == {"art-cache": "explain.latent_cache", "art-sae": "dictionary", "art-stats": "stats.report",
                     "art-patch": "patch.result", "art-direction": "steer.direction",
                     "art-explanations": "explain.explanations", "art-scores": "explain.scores"}


def test_sae_overview_equals_cache(api, artifacts):
    c, sae = artifacts["cache"], artifacts["sae"]
    o = api.get(f"/api/sae/{SID}").json()
    assert o["n_features"] == 128 and o["n_tokens"] == c.n_rows
    assert o["dead"] == int((c.count == 0).sum()) and o["dense"] == int((c.density > 0.1).sum())
    assert o["l0"] == pytest.approx(float(c.count.sum()) / c.n_rows, rel=1e-4)
    assert o["fvu"] == pytest.approx(sae.cfg.train["final"]["fvu"], rel=1e-4)
    alive = c.density[c.count > 0].log10()
    assert sum(o["density_hist"]["counts"]) == alive.numel()
    assert o["n_explained"] == len(EXPLAINED)


def test_feature_list_search(api, artifacts, model):
    c = artifacts["cache"]
    rows = api.get(f"/api/sae/{SID}/features", params={"limit": 1000}).json()["features"]
    assert [r["id"] for r in rows] == list(range(128))
    j = int(c.count.argmax())
    row, val = c.latent(j)
    top_tok = int(c.row_table("tokens")[row[val.argmax()]])
    assert rows[j]["max"] == pytest.approx(float(c.max[j]), rel=1e-3)
    assert rows[j]["top_token"] == model.tokenizer.decode([top_tok])
    hit = api.get(f"/api/sae/{SID}/features", params={"q": "FRUIT"}).json()
    assert [r["id"] for r in hit["features"]] == [3] and hit["total"] == 1
    assert api.get(f"/api/sae/{SID}/features", params={"q": "12"}).json()["features"][0]["id"] == 12


def test_feature_page_data_equals_cache(api, artifacts, model):
    c, sae = artifacts["cache"], artifacts["sae"]
    j = int(c.count.argmax())
    f = api.get(f"/api/sae/{SID}/feature/{j}").json()
    assert f["count"] == int(c.count[j]) and f["hist"]["counts"] == c.hist[j].tolist()
    assert f["max"] == pytest.approx(float(c.max[j]), rel=1e-4)
    assert f["density"] == pytest.approx(float(c.density[j]), rel=1e-4)
    wins = activating_windows(c, j, ExampleConfig(ctx_len=24, after=6, n_quantiles=5), limit=8)
    assert len(f["top"]) == len(wins) == 8
    for got, x in zip(f["top"], wins):
        assert got["acts"] == pytest.approx(x.acts, rel=1e-3, abs=1e-6) and got["peak"] == x.peak
        assert "".join(got["tokens"]) == model.tokenizer.decode(x.tokens)
        assert got["acts"].index(max(got["acts"])) == got["peak"]
    assert [q["quantile"] for q in f["quantiles"]] == sorted({q["quantile"] for q in f["quantiles"]})
    W = sae.W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True)
    cos = W @ W[j]
    cos[j] = -2
    assert [n["id"] for n in f["nearest"]] == cos.topk(8).indices.tolist()
    assert [n["cos"] for n in f["nearest"]] == pytest.approx(cos.topk(8).values.tolist(), abs=1e-4)
    logits = (sae.W_dec[j].detach() * model.adapter.final_norm.weight.detach()) @ model.adapter.W_U.detach()
    assert f["promoted"]["top"][0][1] == pytest.approx(float(logits.max()), rel=1e-3)
    assert f["steerable"] is True
    for k in (3, 7):     # a tolerant explanations file; the explain family's explanations + scores artifacts
        e = api.get(f"/api/sae/{SID}/feature/{k}").json()
        assert e["explanation"] == EXPLAINED[k][0] and e["scores"] == EXPLAINED[k][1]


def test_dead_feature_and_range(api, artifacts):
    c = artifacts["cache"]
    dead = (c.count == 0).nonzero()
    if dead.numel():
        f = api.get(f"/api/sae/{SID}/feature/{int(dead[0])}").json()
        assert f["top"] == [] and f["count"] == 0
    assert api.get(f"/api/sae/{SID}/feature/128").status_code == 404
    assert api.get(f"/api/sae/{SID}/feature/-1").status_code == 404
    assert api.get("/api/sae/nope/feature/1").status_code == 404


def test_prompt_view_equals_encode(api, artifacts, model):
    text = "the apple and the pear"
    r = api.post("/api/prompt", json={"text": text, "sae": SID, "k": 3}).json()
    ids = model.tokenize(text)["input_ids"]
    assert r["ids"] == ids[0].tolist() and len(r["tokens"]) == ids.shape[1]
    rec = model.record(ids, [SITE, "blocks.0.resid_post"])
    z = artifacts["sae"].encode(rec[SITE][0])
    v, i = z.topk(3, dim=-1)
    for t in range(ids.shape[1]):
        assert [f[0] for f in r["features"][t]] == [a for a, b in zip(i[t].tolist(), v[t].tolist()) if b > 0]
    assert r["norms"]["blocks.0.resid_post"] == pytest.approx(rec["blocks.0.resid_post"][0].norm(dim=-1).tolist(),
                                                              rel=1e-3)
    n = api.post("/api/prompt", json={"text": text, "site": "blocks.0.mlp_act", "k": 2}).json()
    mlp = model.record(ids, ["blocks.0.mlp_act"])["blocks.0.mlp_act"][0]
    assert [x[0][0] for x in n["neurons"] if x] == [int(mlp[t].argmax()) for t in range(ids.shape[1])
                                                     if float(mlp[t].max()) > 0]


def test_attention_equals_recording(api, model):
    text = "Mary gave John"
    r = api.post("/api/attention", json={"text": text, "layer": 1}).json()
    p = model.record(model.tokenize(text)["input_ids"], ["blocks.1.attn.pattern"])["blocks.1.attn.pattern"][0]
    assert r["n_heads"] == p.shape[1]
    got = torch.tensor(r["pattern"])           # [head, query, key]
    assert torch.allclose(got, p.permute(1, 0, 2), atol=1e-4)
    assert api.post("/api/attention", json={"text": text, "layer": 2}).status_code == 404


def test_steer_equals_generate_under_intervene(api, artifacts, model):
    sae = artifacts["sae"]
    r = api.post("/api/steer", json={"prompt": "the apple", "sae": SID, "feature": 5, "strength": 3.0,
                                     "max_new_tokens": 6}).json()
    v = sae.W_dec[5].detach().float()
    assert r["plain"] == model.generate("the apple", max_new_tokens=6)
    with model.intervene({SITE: Add(v / v.norm(), alpha=3.0)}):
        assert r["steered"] == model.generate("the apple", max_new_tokens=6)
    assert r["plain"] != r["steered"]
    d = artifacts["direction"]
    r = api.post("/api/steer", json={"prompt": "the apple", "kind": "direction", "direction": "art-direction",
                                     "strength": 2.0, "unit": False, "max_new_tokens": 4}).json()
    with model.intervene({d.site: Add(d.vector, alpha=2.0)}):
        assert r["steered"] == model.generate("the apple", max_new_tokens=4)
    r = api.post("/api/steer", json={"prompt": "x", "kind": "contrast", "positive": ["good"], "negative": ["bad"],
                                     "site": "blocks.0.resid_post", "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["site"] == "blocks.0.resid_post"


def test_patch_grid_equals_result(api, artifacts):
    res = artifacts["patch"]
    p = api.get("/api/patch/art-patch").json()
    assert p["rows"] == res.labels["site"] and len(p["cols"]) == len(res.labels["position"])
    assert torch.allclose(torch.tensor(p["values"]), res.values.float(), rtol=1e-3, atol=1e-5)
    assert torch.allclose(torch.tensor(p["normalized"]), res.normalized.float(), rtol=1e-3, atol=1e-3)


def test_model_overview_and_stats(api, artifacts, model):
    m = api.get("/api/model").json()
    assert m["sites"] == model.sites and m["n_layers"] == 2
    (s,) = m["stats"]
    import json

    raw = json.loads((artifacts["root"] / "stats" / "stats.json").read_text())["massive"]
    assert [L["site"] for L in s["layers"]] == raw["sites"]
    assert [L["top1_max"] for L in s["layers"]] == pytest.approx([L["top1_max"] for L in raw["layers"]], rel=1e-4)
    assert {f["name"] for f in s["figures"]} >= {"massive_per_layer"}
    assert api.get(s["figures"][0]["url"]).status_code == 200


def test_model_is_loaded_lazily_once(artifacts):
    from fastapi.testclient import TestClient

    from actlab.web import create_app

    app = create_app([artifacts["root"]], model_name="tiny-llama")
    shared = app.state.actlab.shared
    c = TestClient(app)
    assert c.get(f"/api/sae/{SID}/features").status_code == 200 and shared.loads in (0, 1)
    assert c.get("/api/model?load=false").json()["sites"] == [] or shared.loads == 1
    for _ in range(2):
        assert c.post("/api/prompt", json={"text": "ab"}).status_code == 200
    assert shared.loads == 1


def test_token_pieces_keep_split_characters(server, model):
    """A character split over byte tokens is decoded as one piece (actlab.explain.token_pieces), not as U+FFFD."""
    from actlab.explain import token_pieces

    view = server.app.state.actlab.sae(SID)
    ids = model.tokenizer("café ☕ apple").input_ids
    assert view.pieces(ids) == token_pieces(model.tokenizer, ids)[0]
    assert "\ufffd" not in "".join(view.pieces(ids)) and "".join(view.pieces(ids)).endswith("café ☕ apple")
    assert view.pieces(ids[-5:]) == token_pieces(model.tokenizer, ids[-5:])[0]
