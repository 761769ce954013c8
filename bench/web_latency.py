"""Explorer latency (issue 16 performance): feature page data of a 16k-feature SAE served server side (p50/p95 over
distinct, uncached features; target p95 < 50 ms), first load of a feature page in headless Chromium (target < 1 s),
prompt view latency vs one forward of the same prompt measured in the same rounds (target: forward + < 20 ms), and
the static export's size (and its first page load from file://).

The SAE is a TopK dictionary (16,384 latents, k = 32, random weights: the numbers are about serving, not about the
features) over 32,768 random rows of width 64 (tiny-llama's), cached with ``actlab.explain.build_cache`` (1M entries).
Usage: python bench/web_latency.py [--rows 32768] [--features 200] [--export 16384] [--only prompt]. Prints one line
per figure."""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(folder: Path, rows: int, n: int = 16384, k: int = 32) -> None:
    import torch

    from actlab import load_model
    from actlab.data import load_texts
    from actlab.dictionary import DictConfig, build
    from actlab.explain import CacheConfig, DictionaryLatents, TensorRows, build_cache

    torch.manual_seed(0)
    sae = build(DictConfig(arch="topk", d_in=64, d_sae=n, k=k, site="blocks.1.resid_post", model="tiny-llama"), seed=0)
    sae.save(folder / "sae")
    acts = torch.randn(rows, 64)
    tok = load_model("tiny-llama").tokenizer       # real text tokens (the demo corpus), so decoding is realistic
    ids = [t for doc in load_texts("demo") for t in tok(doc).input_ids]
    tokens = torch.tensor((ids * (rows // max(len(ids), 1) + 1))[:rows])
    doc = torch.arange(rows) // 64
    pos = torch.arange(rows) % 64
    build_cache(TensorRows(acts, tokens, doc, pos), DictionaryLatents(sae, str(folder / "sae")), folder / "cache",
                CacheConfig(progress=False))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--features", type=int, default=200, help="distinct features timed")
    ap.add_argument("--export", type=int, default=1000, help="feature pages in the export size sample (16384: all)")
    ap.add_argument("--rounds", type=int, default=30, help="paired rounds of the prompt view timing")
    ap.add_argument("--only", choices=["all", "prompt"], default="all", help="prompt: only the prompt view timing")
    a = ap.parse_args()
    import random

    from fastapi.testclient import TestClient

    from actlab import load_model
    from actlab.web import create_app, export_html

    tmp = Path(tempfile.mkdtemp(prefix="web_bench_"))
    try:
        t0 = time.perf_counter()
        build(tmp / "art", a.rows)
        print(f"built 16,384-latent cache over {a.rows} rows in {time.perf_counter() - t0:.1f} s")
        model = load_model("tiny-llama")
        app = create_app([tmp / "art"], model=model)
        c = TestClient(app)
        if a.only == "prompt":
            prompt_latency(app, c, model, a.rounds)
            return
        t0 = time.perf_counter()
        assert c.get("/api/sae/art-cache/features", params={"limit": 20000}).status_code == 200
        print(f"feature list (16,384 rows, index built on first call): {1000 * (time.perf_counter() - t0):.0f} ms")
        t0 = time.perf_counter()
        c.get("/api/sae/art-cache/features", params={"limit": 20000})
        print(f"feature list again (index cached): {1000 * (time.perf_counter() - t0):.0f} ms")
        c.get("/api/sae/art-cache/feature/0")            # loads the entries once
        feats = random.Random(0).sample(range(1, 16384), a.features)
        ms, srv = [], []
        for j in feats:
            t0 = time.perf_counter()
            r = c.get(f"/api/sae/art-cache/feature/{j}")
            ms.append(1000 * (time.perf_counter() - t0))
            srv.append(float(r.headers["server-timing"].split("dur=")[1]))
            assert r.status_code == 200
        print(f"feature page data, {a.features} distinct uncached features, server side (Server-Timing): p50 "
              f"{statistics.median(srv):.1f} ms, p95 {pct(srv, 0.95):.1f} ms, max {max(srv):.1f} ms (target p95 < 50 ms);"
              f" client round trip p95 {pct(ms, 0.95):.1f} ms")
        prompt_latency(app, c, model, a.rounds)
        browser_load(tmp / "art", model)
        t0 = time.perf_counter()
        out = export_html([tmp / "art"], tmp / "site", model=model, features=list(range(a.export)))
        secs = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        fs = sum(p.stat().st_size for p in out.glob("data/sae/*/fs/*.js"))
        print(f"static export of {a.export} feature pages: {size / 1e6:.2f} MB in {secs:.1f} s, feature shards "
              f"{fs / a.export:.0f} B per feature" + ("" if a.export >= 16384 else
                                                      f" (~{(size - fs + fs * 16384 / a.export) / 1e6:.1f} MB for all 16,384)"))
        export_load(out, min(a.export, 16384))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prompt_latency(app, c, model, rounds: int) -> None:
    """Prompt view vs one plain forward of the same prompt, paired round by round. Wall times (the server's
    Server-Timing and in-process calls) and CPU times of this process (``time.process_time``; one thread): on a
    machine shared with other jobs the wall times stretch with the load, the CPU times are the work done."""
    import torch

    from actlab.web.live import Limits, prompt_view, top_latents

    text = "The quick brown fox jumps over the lazy dog. " * 3
    ids = model.tokenize(text)["input_ids"]
    sites = [s for s in model.sites if s.endswith("resid_post")]
    view = app.state.actlab.sae("art-cache")
    sae = view.dictionary
    h = model.record(ids, [sae.cfg.site])[sae.cfg.site][0]
    w: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def timed(name, fn):
        t0, p0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = fn()
        w.setdefault(name, []).append(1000 * (time.perf_counter() - t0))
        cpu.setdefault(name, []).append(1000 * (time.process_time() - p0))
        return out

    for _ in range(rounds):
        timed("forward", lambda: model.record(ids, sites))
        timed("view", lambda: prompt_view(model, text, Limits(), view))
        timed("bare", lambda: prompt_view(model, text, Limits()))
        timed("encode", lambda: sae.encode(h))
        timed("top5", lambda: top_latents(sae, h, 5))
        timed("topk5", lambda: sae.pre_acts(h).topk(5, dim=-1))   # baseline: the same pre-activations, torch.topk
        r = timed("http", lambda: c.post("/api/prompt", json={"text": text, "sae": "art-cache"}))
        w.setdefault("server", []).append(float(r.headers["server-timing"].split("dur=")[1]))
    med = statistics.median
    f, fc = med(w["forward"]), med(cpu["forward"])
    pair = {k: med([x - y for x, y in zip(w[k], w["forward"])]) for k in ("view", "bare", "server")}
    pairc = {k: med([x - y for x, y in zip(cpu[k], cpu["forward"])]) for k in ("view", "bare", "http")}
    print(f"prompt view, {ids.shape[1]} tokens, 16,384-latent TopK SAE, medians of {rounds} paired rounds "
          f"(target: forward + < 20 ms):")
    print(f"  wall: forward {f:.1f} ms; view {med(w['view']):.1f} ms = forward +{pair['view']:.1f} ms "
          f"(ratio {med(w['view']) / f:.2f}); norms only +{pair['bare']:.1f} ms; served (Server-Timing) "
          f"{med(w['server']):.1f} ms = forward +{pair['server']:.1f} ms")
    print(f"  cpu:  forward {fc:.1f} ms; view {med(cpu['view']):.1f} ms = forward +{pairc['view']:.1f} ms "
          f"(ratio {med(cpu['view']) / fc:.2f}); norms only +{pairc['bare']:.1f} ms; HTTP round trip in-process "
          f"(client + server) {med(cpu['http']):.1f} ms = forward +{pairc['http']:.1f} ms")
    print(f"  its top-5 per token: {med(w['top5']):.1f} ms wall / {med(cpu['top5']):.1f} ms cpu (the dictionary's "
          f"dense encode alone: {med(w['encode']):.1f} / {med(cpu['encode']):.1f} ms; pre-activations + torch.topk: "
          f"{med(w['topk5']):.1f} / {med(cpu['topk5']):.1f} ms)")


def export_load(site: Path, n: int) -> None:
    """First load of an exported feature page from file:// in headless Chromium (unpacking in the page)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return
    if not Path("/usr/bin/chromium").exists():
        return
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        times = []
        for j in (n // 3, n // 2, n - 1):
            pg = b.new_page()
            t0 = time.perf_counter()
            pg.goto(site.joinpath("index.html").as_uri() + f"#/feature/art-cache/{j}")
            pg.wait_for_selector("[data-testid='top-example']", timeout=30_000)
            times.append(1000 * (time.perf_counter() - t0))
            pg.close()
        b.close()
    print(f"exported feature page from file:// in Chromium (fresh page each): {', '.join(f'{t:.0f}' for t in times)} ms")


def browser_load(folder: Path, model) -> None:
    """First load of a feature page in headless Chromium: navigation start to the examples drawn."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("browser: Playwright not installed, skipped")
        return
    if not Path("/usr/bin/chromium").exists():
        print("browser: /usr/bin/chromium absent, skipped")
        return
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from web.conftest import Server

    from actlab.web import create_app

    s = Server(create_app([folder], model=model))
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            times = []
            for j in (11, 12, 13):
                pg = b.new_page()
                t0 = time.perf_counter()
                pg.goto(f"{s.url}/#/feature/art-cache/{j}")
                pg.wait_for_selector("[data-testid='top-example']", timeout=30_000)
                times.append(1000 * (time.perf_counter() - t0))
                pg.close()
            b.close()
        print(f"first feature page load in Chromium (fresh page each, uncached feature): "
              f"{', '.join(f'{t:.0f}' for t in times)} ms (target < 1000 ms)")
    finally:
        s.stop()


if __name__ == "__main__":
    main()
