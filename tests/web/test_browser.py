"""End to end in headless Chromium: every page renders on the tiny model + tiny SAE with no console error; search ->
feature -> steer by clicks; the numbers shown equal the artifact's; the static export opens from file://.
Screenshots go to docs/img/web_*.png when ACTLAB_SCREENSHOTS=1."""
from __future__ import annotations

import json

import pytest

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect

from .conftest import EXPLAINED, shoot

SID = "art-cache"


def fmt(x: float) -> str:
    """The page's number format (4 significant digits, trailing zeros dropped; JS parseFloat(toPrecision(4)))."""
    s = f"{float(f'{x:.4g}'):.10f}".rstrip("0").rstrip(".")
    return s


def _open(page, server, route: str, ready: str):
    page.goto(f"{server.url}/#{route}")
    page.wait_for_selector(ready, timeout=20_000)


def test_home_and_model_pages(page, server, artifacts):
    _open(page, server, "/", "[data-testid='list-explain.latent_cache']")
    assert page.inner_text("[data-testid='list-patch.result']").startswith("art-patch")
    shoot(page, "home")
    page.click("text=model")
    page.wait_for_selector("[data-testid='norm-table']", timeout=20_000)
    assert page.inner_text("[data-testid='n-layers'] .v") == "2"
    raw = json.loads((artifacts["root"] / "stats" / "stats.json").read_text())["massive"]["layers"]
    cells = page.locator("[data-testid='stats-table'] tbody tr").first.locator("td").all_inner_texts()
    assert cells[1] == fmt(raw[0]["top1_max"])
    assert page.locator("figure img").first.evaluate("i => i.complete && i.naturalWidth > 0")
    shoot(page, "model")
    assert page.errors == []


def test_search_feature_steer(page, server, artifacts, model):
    c = artifacts["cache"]
    _open(page, server, f"/sae/{SID}", "[data-testid='feature-row']")
    assert page.inner_text("[data-testid='dead'] .v") == str(int((c.count == 0).sum()))
    assert page.inner_text("[data-testid='l0'] .v") == fmt(float(c.count.sum()) / c.n_rows)
    shoot(page, "sae")
    page.fill("[data-testid='search']", "fruit")
    expect(page.locator("[data-testid='feature-row']")).to_have_count(1)
    assert page.inner_text("[data-testid='match-count']") == "1 of 128 features"
    page.click("[data-testid='feature-link']")
    page.wait_for_selector("[data-testid='top-example']", timeout=20_000)
    j = 3
    assert page.inner_text("[data-testid='feature-title']") == f"feature {j} of {SID}"
    assert page.inner_text("[data-testid='max'] .v") == fmt(float(c.max[j]))
    assert page.inner_text("[data-testid='density'] .v") == fmt(float(c.density[j]))
    assert page.inner_text("[data-testid='count'] .v") == f"{int(c.count[j])} / {c.n_rows}"
    assert EXPLAINED[j][0] in page.inner_text("[data-testid='explanation']")
    bars = page.locator("[data-testid='act-hist'] .bar").evaluate_all("b => b.map(x => +x.dataset.count)")
    assert bars == c.hist[j].tolist()
    # the heat map: the outlined token is the window's highest activation, and its text is that token
    ex = page.locator("[data-testid='top-example']").first
    acts = ex.locator(".tok").evaluate_all("t => t.map(x => +x.dataset.act)")
    peak = ex.locator(".tok.peak").get_attribute("data-i")
    assert int(peak) == acts.index(max(acts))
    assert ex.locator(".mx").inner_text() == fmt(float(c.max[j]))
    assert page.locator("[data-testid='nearest'] a").count() == 8
    shoot(page, "feature")
    page.click("[data-testid='steer-button']")
    page.wait_for_selector("[data-testid='steer-run']")
    assert page.input_value("[data-testid='feature']") == str(j)
    page.fill("[data-testid='max-new-tokens']", "5")
    page.click("[data-testid='steer-run']")
    expect(page.locator("[data-testid='steer-note']")).to_contain_text("added at", timeout=20_000)
    assert page.locator("[data-testid='plain']").text_content() == model.generate("I think that", max_new_tokens=5)
    shoot(page, "steer")
    assert page.errors == []


def test_prompt_attention_patch(page, server, artifacts, model):
    _open(page, server, f"/prompt?sae={SID}", "[data-testid='token-table']")
    n = model.tokenize("The apple and the pear are fruit.")["input_ids"].shape[1]
    assert page.locator("[data-testid='prompt-heat'] .tok").count() == n
    page.fill("[data-testid='prompt-text']", "pear")
    expect(page.locator("[data-testid='prompt-heat'] .tok")).to_have_count(model.tokenize("pear")["input_ids"].shape[1])
    assert page.locator("[data-testid='token-feature']").count() > 0
    shoot(page, "prompt")
    _open(page, server, "/attention", "[data-testid='attn'] td")
    page.select_option("[data-testid='layer']", "1")
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='attn'] td")
    text = "When Mary and John went to the store, John gave a drink to"
    p = model.record(model.tokenize(text)["input_ids"], ["blocks.1.attn.pattern"])["blocks.1.attn.pattern"][0]
    cell = page.locator("[data-testid='attn'] td[data-row='5'][data-col='2']")
    assert float(cell.get_attribute("data-value")) == pytest.approx(float(p[5, 0, 2]), abs=1e-4)
    shoot(page, "attention")
    res = artifacts["patch"]
    _open(page, server, "/patch/art-patch", "[data-testid='patch'] td")
    cell = page.locator("[data-testid='patch'] td[data-row='1'][data-col='2']")
    cell.hover()
    hover = page.inner_text("[data-testid='patch-hover']")
    assert hover.startswith(f"{res.labels['site'][1]}, {res.labels['position'][2]}: ")
    assert f"(raw {fmt(float(res.values[1, 2]))})" in hover
    shoot(page, "patch")
    assert page.errors == []


def test_static_export_opens_from_file(page, artifacts, tmp_path, model):
    from actlab.explain import ExampleConfig, activating_windows
    from actlab.web import export_html

    out = export_html([artifacts["root"]], tmp_path / "site", model=model, features=[3, 5])
    c = artifacts["cache"]
    page.goto((out / "index.html").as_uri() + f"#/sae/{SID}")
    page.wait_for_selector("[data-testid='feature-row']", timeout=20_000)
    assert page.locator("nav a").count() == 0      # no live pages in a static site
    assert page.inner_text("[data-testid='dead'] .v") == str(int((c.count == 0).sum()))
    page.fill("[data-testid='search']", "fruit")
    page.click("[data-testid='feature-link']")
    page.wait_for_selector("[data-testid='top-example']", timeout=20_000)
    j = 3
    assert page.inner_text("[data-testid='max'] .v") == fmt(float(c.max[j]))
    assert page.inner_text("[data-testid='density'] .v") == fmt(float(c.density[j]))
    assert page.inner_text("[data-testid='count'] .v") == f"{int(c.count[j])} / {c.n_rows}"
    assert EXPLAINED[j][0] in page.inner_text("[data-testid='explanation']")
    bars = page.locator("[data-testid='act-hist'] .bar").evaluate_all("b => b.map(x => +x.dataset.count)")
    assert bars == c.hist[j].tolist()
    wins = activating_windows(c, j, ExampleConfig(ctx_len=24, after=6, n_quantiles=5), limit=8)
    shown = page.locator("[data-testid='top-example']")
    assert shown.count() == len(wins)
    for k in (0, len(wins) - 1):
        ex = shown.nth(k)
        acts = ex.locator(".tok").evaluate_all("t => t.map(x => +x.dataset.act)")
        assert acts == pytest.approx(wins[k].acts, rel=1e-3, abs=1e-6)
        assert int(ex.locator(".tok.peak").get_attribute("data-i")) == wins[k].peak
        assert "".join(ex.locator(".tok").all_text_contents()) == model.tokenizer.decode(wins[k].tokens)
    assert page.locator("[data-testid='nearest'] a").count() == 8
    assert page.locator("[data-testid='promoted'] .pill").count() == 20
    assert page.locator("[data-testid='steer-button']").count() == 0
    shoot(page, "export")
    assert page.errors == []
    page.goto((out / "index.html").as_uri() + f"#/feature/{SID}/9")   # not exported: a clear message
    page.wait_for_selector("[data-testid='error']")
    assert "not in this export" in page.inner_text("[data-testid='error']")
