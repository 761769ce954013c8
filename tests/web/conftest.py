"""Fixtures of the explorer tests: real artifacts made with actlab's own APIs on tiny-llama (a TopK SAE trained a few
steps, its latent cache over texts, an explanations file, a stats report, an activation-patching sweep, a saved
Direction), a uvicorn server on a free port (module scope), and headless Debian Chromium via Playwright."""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SITE = "blocks.1.resid_post"
CHROMIUM = "/usr/bin/chromium"
TEXTS = [f"doc {i}: the apple and the pear, {i * 7} cafe. Mary gave John a drink." for i in range(40)]
# latent 3: a tolerant explanations.jsonl file; latent 7: the explain family's own artifacts (actlab explain run|score)
EXPLAINED = {3: ("fruit words like apple", {"detection": 0.75, "fuzzing": 0.625}),
             7: ("digits in numbers", {"detection": 0.9})}


@pytest.fixture(scope="session")
def model(tiny):
    return tiny("tiny-llama")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, model):
    """``root/`` holding sae/, cache/ (+ explanations.jsonl), stats/, patch/, direction/; returns a dict of paths
    and the in-memory objects the tests compare against."""
    from actlab.dictionary import DictConfig, TrainConfig, tensor_source, train
    from actlab.explain import CacheConfig, DictionaryLatents, TextRows, build_cache
    from actlab.patch import LogitDiff, activation_patch
    from actlab.stats import StatsConfig, run_stats
    from actlab.steer import ExtractConfig, extract

    root = tmp_path_factory.mktemp("web") / "art"
    root.mkdir()
    torch.manual_seed(0)
    acts = model.record(TEXTS[:16], [SITE])[SITE].reshape(-1, 64)
    sae = train(DictConfig(arch="topk", d_in=64, d_sae=128, k=8, site=SITE, model="tiny-llama"),
                TrainConfig(total_tokens=256 * 12, batch_size=256, out=str(root / "sae"), progress=False,
                            checkpoint_minutes=0, warmup_steps=2, log_every=4),
                tensor_source(acts, 256))
    cache = build_cache(TextRows(model, SITE, TEXTS), DictionaryLatents(sae, str(root / "sae")), root / "cache",
                        CacheConfig(progress=False))
    (root / "cache" / "explanations.jsonl").write_text(json.dumps(
        {"latent": 3, "explanation": EXPLAINED[3][0], "scores": EXPLAINED[3][1]}) + "\n")
    from actlab.explain import Explanation, ScoreResult, save_explanations, save_scores

    cache_dir = str((root / "cache").resolve())
    save_explanations(root / "explanations", [Explanation(7, EXPLAINED[7][0], "stub", EXPLAINED[7][0], [])],
                      {"cache": cache_dir, "explainer": "stub"})
    save_scores(root / "scores", [ScoreResult("detection", 7, EXPLAINED[7][0], 4, 4, 0.9, 1.0, 0.8, 0.89, None, {},
                                              value=0.9)], {"cache": cache_dir, "explanations": "x"})
    run_stats(StatsConfig(model="tiny-llama", out=str(root / "stats"), data=None, tokens=128, context_length=32,
                          ablation_tokens=0, sink_contexts=0, eval_tokens=0), model=model, progress=False)
    tok = model.tokenizer
    clean, corrupt = "Mary gave John a", "John gave Mary a"
    res = activation_patch(model, [clean], [corrupt], LogitDiff(tok(" J").input_ids[-1], tok(" M").input_ids[-1]),
                           sites="blocks.*.resid_pre")
    res.save(root / "patch", heatmap=False)
    d = extract(model, ["I love this", "great and good"], ["I hate this", "bad and awful"], [SITE],
                ExtractConfig(method="mean_diff", position="last"))[SITE]
    d.save(root / "direction")
    return {"root": root, "sae": sae, "cache": cache, "patch": res, "direction": d}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving an app in a thread; ``url`` is its base address."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 20:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(artifacts, model):
    from actlab.web import create_app

    s = Server(create_app([artifacts["root"]], model=model))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium (one per module); skipped with the reason when Playwright or Chromium is absent."""
    pw = pytest.importorskip("playwright.sync_api", reason="the Playwright client is not installed (web extra)")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package for the browser tests")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page that collects console errors and page errors into ``page.errors``."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def shoot(page, name: str) -> None:
    """Save a screenshot to docs/img/web_<name>.png when ACTLAB_SCREENSHOTS=1 (the committed doc images)."""
    if os.environ.get("ACTLAB_SCREENSHOTS") == "1":
        out = Path(__file__).resolve().parents[2] / "docs" / "img" / f"web_{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=False)
