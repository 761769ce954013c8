"""The explorer's attribution-graph view: a real graph from actlab.circuits (tiny GPT-2, random transcoders) served
from a graph folder; the API returns the file's nodes and links exactly (and bounds a large one); the SVG page draws
every node at (position, layer) with links by |weight| and sign, clicking the target logit shows its values; slugs
that are not listed or leave the folder get 4xx."""
from __future__ import annotations

import json

import httpx
import pytest
import torch

from .conftest import Server, shoot
from .test_browser import fmt

GID = "gr-graphs"


def _transcoders(model, d_sae: int = 16):
    from actlab.dictionary import DictConfig, build

    g = torch.Generator().manual_seed(3)
    d = model.adapter.d_model
    out = []
    for i in range(model.adapter.n_layers):
        t = build(DictConfig(arch="relu", d_in=d, d_sae=d_sae, d_out=d, site=f"blocks.{i}.mlp_in",
                             site_out=f"blocks.{i}.mlp_out"), seed=i)
        with torch.no_grad():
            t.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.5)     # some latents fire
        out.append(t)
    return out


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory, tiny):
    """``gr/graphs/`` with two graphs of one prompt (actlab circuits' own writer), plus a folder outside it."""
    from actlab.circuits import GraphConfig, attribute, write_graph_files

    m = tiny("tiny-gpt2")
    base = tmp_path_factory.mktemp("graph")
    root = base / "gr"
    g = attribute(m, _transcoders(m), "The cat sat on the", GraphConfig(max_n_logits=2), dtype=torch.float64)
    write_graph_files(g, "cat", root / "graphs", tokenizer=m.tokenizer, node_threshold=0.8, edge_threshold=0.95)
    write_graph_files(g, "full", root / "graphs", tokenizer=m.tokenizer, node_threshold=0.95, edge_threshold=0.98)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"nodes": [], "links": [], "s": "top secret"}')
    # a graph folder whose index lists a slug that leaves the folder, and one whose file is a symlink out
    evil = root / "evil"
    evil.mkdir()
    (evil / "graph-metadata.json").write_text(json.dumps({"graphs": [{"slug": "../../outside/secret"},
                                                                     {"slug": "leak"}]}))
    (evil / "leak.json").symlink_to(outside / "secret.json")
    bad = root / "bad"                                      # listed graphs that are not graph JSON: 422, not 5xx
    bad.mkdir()
    (bad / "graph-metadata.json").write_text(json.dumps({"graphs": [{"slug": "list"}, {"slug": "junk"}]}))
    (bad / "list.json").write_text("[1, 2]")
    (bad / "junk.json").write_text('{"nodes": [1], "links": []}')
    return root


@pytest.fixture(scope="module")
def gserver(graph_dir):
    from actlab.web import Limits, create_app

    s = Server(create_app([graph_dir], limits=Limits(max_graph_nodes=40, max_graph_links=100)))
    yield s
    s.stop()


def _file(graph_dir, slug):
    return json.loads((graph_dir / "graphs" / f"{slug}.json").read_text())


def test_api_returns_the_file_and_bounds_a_large_one(gserver, graph_dir):
    idx = httpx.get(f"{gserver.url}/api/index").json()
    assert [(f["id"], [x["slug"] for x in f["graphs"]]) for f in idx["graphs"]] == [
        ("gr-bad", ["list", "junk"]), ("gr-evil", ["leak"]), (GID, ["cat", "full"])]
    want = _file(graph_dir, "cat")
    assert len(want["nodes"]) <= 40 and len(want["links"]) <= 100, "the fixture's small graph must fit the limits"
    got = httpx.get(f"{gserver.url}/api/graph/{GID}/cat").json()
    assert got["nodes"] == want["nodes"] and got["links"] == want["links"] and got["metadata"] == want["metadata"]
    assert got["truncated"] is None
    full = _file(graph_dir, "full")
    assert len(full["nodes"]) > 40 and len(full["links"]) > 100
    big = httpx.get(f"{gserver.url}/api/graph/{GID}/full").json()
    assert big["truncated"] == {"nodes": len(full["nodes"]), "links": len(full["links"]), "max_nodes": 40,
                                "max_links": 100}
    kinds = [n["feature_type"] for n in full["nodes"]]
    always = kinds.count("embedding") + kinds.count("logit")
    assert len(big["nodes"]) == max(40, always) and len(big["links"]) == 100
    ids = {n["node_id"] for n in big["nodes"]}
    assert all(n in big["nodes"] for n in full["nodes"] if n["feature_type"] in ("embedding", "logit"))
    assert all(x["source"] in ids and x["target"] in ids for x in big["links"])
    assert all(x in full["links"] for x in big["links"])
    # the kept latents / errors are the most influential ones (smallest cumulative-influence rank)
    rest = sorted((n for n in full["nodes"] if n["feature_type"] not in ("embedding", "logit")),
                  key=lambda n: n["influence"])
    kept_rest = [n for n in big["nodes"] if n["feature_type"] not in ("embedding", "logit")]
    assert sorted(n["influence"] for n in kept_rest) == [n["influence"] for n in rest[:len(kept_rest)]]


@pytest.mark.parametrize("target,codes", [
    (f"/api/graph/{GID}/..%2f..%2foutside%2fsecret", (403, 404)),
    (f"/api/graph/{GID}/%2e%2e%2fcat", (403, 404)),
    (f"/api/graph/{GID}/cat.json", (404,)),
    ("/api/graph/gr-evil/..%2f..%2foutside%2fsecret", (403, 404)),
    ("/api/graph/gr-evil/leak", (403,)),               # listed, but its file is a symlink out of the folder
    ("/api/graph/nope/cat", (404,)),
    ("/api/graph/gr-bad/list", (422,)),
    ("/api/graph/gr-bad/junk", (422,)),
    (f"/api/graph/{GID}/..", (403, 404)),
])
def test_graph_slug_traversal_is_refused(gserver, target, codes):
    from .test_security import raw_get

    status, body = raw_get(gserver, target)
    assert status in codes, (target, status, body)
    assert "top secret" not in body


def test_graph_page_draws_the_json(page, gserver, graph_dir):
    want = _file(graph_dir, "cat")
    page.goto(f"{gserver.url}/#/")
    page.wait_for_selector("[data-testid='graph-link']", timeout=20_000)
    page.click(f"[data-testid='graph-link'][href='#/graph/{GID}/cat']")
    page.wait_for_selector("[data-testid='graph-svg']", timeout=20_000)
    nodes = page.locator("svg.graph circle.node")
    assert nodes.count() == len(want["nodes"])
    assert page.locator("svg.graph line.link").count() == len(want["links"])
    # x follows the context position, y the layer (tokens at the bottom, logits on top)
    xy = {c["id"]: (c["x"], c["y"]) for c in nodes.evaluate_all(
        "cs => cs.map(c => ({id: c.dataset.nodeId, x: +c.getAttribute('cx'), y: +c.getAttribute('cy')}))")}
    row = {n["node_id"]: (-1 if n["layer"] == "E" else int(n["layer"])) for n in want["nodes"]}
    pos = {n["node_id"]: n["ctx_idx"] for n in want["nodes"]}
    for a in xy:
        for b in xy:
            if row[a] < row[b]:
                assert xy[a][1] > xy[b][1], (a, b)
            if pos[a] < pos[b]:
                assert xy[a][0] < xy[b][0], (a, b)
    # links: width grows with |weight|, class by sign
    ls = page.locator("svg.graph line.link").evaluate_all(
        "ls => ls.map(l => [+l.dataset.weight, +l.getAttribute('stroke-width'), l.classList.contains('pos')])")
    assert all(p == (w >= 0) for w, _, p in ls)
    ls.sort(key=lambda t: abs(t[0]))
    widths = [w for _, w, _ in ls]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    colors = {page.locator("svg.graph line.link.pos").first.evaluate("l => getComputedStyle(l).stroke"),
              page.locator("svg.graph line.link.neg").first.evaluate("l => getComputedStyle(l).stroke")}
    assert len(colors) == 2
    # the target logit: highlighted, and clicking it shows its values and its strongest incoming edge
    tgt = next(n for n in want["nodes"] if n["is_target_logit"])
    assert page.locator("[data-testid='target-node']").count() == 1
    assert page.locator("[data-testid='target-node']").get_attribute("data-node-id") == tgt["node_id"]
    page.locator("[data-testid='target-node']").click()
    for key, field in (("id", "node_id"), ("layer", "layer"), ("pos", "ctx_idx"), ("activation", "activation"),
                       ("influence", "influence"), ("prob", "token_prob")):
        shown = json.loads(page.get_attribute(f"[data-testid='info-{key}']", "data-value"))
        assert shown == tgt[field], key
    inc = sorted((x for x in want["links"] if x["target"] == tgt["node_id"]), key=lambda x: -abs(x["weight"]))
    first = page.locator("[data-testid='info-in-table'] tbody tr").first.locator("td").all_inner_texts()
    assert first[0].startswith(inc[0]["source"])
    # a latent: its activation and influence are numbers, shown as the JSON's
    lat = next(n for n in want["nodes"] if n["feature_type"] == "cross layer transcoder")
    page.locator(f"svg.graph circle[data-node-id='{lat['node_id']}']").first.click()
    for key, field in (("id", "node_id"), ("layer", "layer"), ("pos", "ctx_idx"), ("activation", "activation"),
                       ("influence", "influence")):
        assert json.loads(page.get_attribute(f"[data-testid='info-{key}']", "data-value")) == lat[field], key
    assert page.inner_text("[data-testid='info-activation'] .v") == fmt(lat["activation"])
    page.locator("[data-testid='target-node']").click()
    shoot(page, "graph")
    assert page.errors == []
