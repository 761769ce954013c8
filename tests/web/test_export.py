"""The static export's packed form: the b15 text and the integer columns round-trip, decimals are exact; every
feature page the browser expands from a packed export equals the server's JSON; and a many-feature export stays
within a size budget per feature (fails if the packing regresses, e.g. back to JSON or to base64)."""
from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import torch

from actlab.web.compact import B15_BASE, Packer, b15, decimal, unb15

SID = "art-cache"


@pytest.mark.parametrize("n", [0, 1, 2, 14, 15, 16, 1000])
def test_b15_round_trip(n):
    data = random.Random(n).randbytes(n)
    text = b15(data)
    assert len(text) == -(-8 * n // 15)
    assert all(B15_BASE <= ord(ch) < B15_BASE + 2 ** 15 for ch in text)
    assert unb15(text, n) == data


def test_decimal_is_exact():
    rng = random.Random(0)
    for _ in range(2000):
        x = float(f"{rng.uniform(-1, 1) * 10 ** rng.randint(-12, 12):.4g}")
        m, e = decimal(x, 4)
        assert abs(m) < 10_000 and float(f"{m}e{e}") == x
    assert decimal(0.0, 4) == (0, 0) and decimal(float("nan"), 4) == (0, 0)


def read_columns(raw: bytes, spec: list) -> dict[str, list[int]]:
    """The reader's layout (static/export.js ``columns``): per column, byte planes of its width, low byte first."""
    out, off = {}, 0
    for name, n, w in spec:
        planes = np.frombuffer(raw[off: off + n * w], dtype=np.uint8).reshape(w, n).astype(np.int64)
        out[name] = (planes * (256 ** np.arange(w))[:, None]).sum(0).tolist()
        off += n * w
    assert off == len(raw)
    return out


def test_packer_columns_round_trip():
    p = Packer()
    vals = [0, 1, 255, 256, 70_000, 2 ** 40]
    for v in vals:
        p.u("a", v)
    for v in (-3, 0, 5):
        p.i("b", v)
    p.f("c", -0.0625, 4)
    data, spec = p.pack()
    assert [s[2] for s in spec] == [6, 1, 2, 1]       # -6250 zig-zags to 12,499: two bytes
    cols = read_columns(data, spec)
    assert cols["a"] == vals and cols["b"] == [5, 0, 10]
    m, e = cols["c"][0], cols["c^"][0]
    assert (-(m + 1) // 2, -(e + 1) // 2 if e % 2 else e // 2) == (-6250, -5)
    with pytest.raises(ValueError, match="negative"):
        p.u("a", -1)


def _unpack(path):
    """A packed data file -> its JSON value, with the payload unpacked (bytes for bin, the value for json)."""
    raw = path.read_bytes()
    assert raw[:2] == b"\xff\xfe"                 # UTF-16LE with a byte-order mark
    text = raw.decode("utf-16")
    v = json.loads(text[text.index(",") + 1: text.rindex(")")])
    body = gzip.decompress(unb15(v["$pack"], v["n"]))
    return v, (json.loads(body) if v["fmt"] == "json" else body)


def test_export_equals_server_for_every_feature(page, artifacts, model, tmp_path):
    """Every feature page of a full export, as the browser expands it, equals the server's JSON."""
    from actlab.web import export_html
    from actlab.web.features import SaeView
    from actlab.web.registry import Registry
    from actlab.web.shared import SharedModel

    out = export_html([artifacts["root"]], tmp_path / "site", model=model)
    reg = Registry([artifacts["root"]])
    v = SaeView(reg.get(SID, "explain.latent_cache"), reg, SharedModel(model=model))
    n = v.cache.n_latents
    _, fl = _unpack(out / "data" / "sae" / SID / "features.js")
    assert fl["max"] == v.index()["max"] and fl["top_token"] == v.index()["top_token"]
    page.goto((out / "index.html").as_uri() + f"#/sae/{SID}")
    page.wait_for_selector("[data-testid='feature-row']", timeout=20_000)
    got = page.evaluate("async (n) => { const o = []; for (let j = 0; j < n; j++) "
                        f"o.push(await window.actlab.get('/api/sae/{SID}/feature/' + j)); return o; }}", n)
    assert page.errors == []
    for j in range(n):
        want, g = v.feature(j), got[j]
        for k in ("count", "n_tokens", "max", "mean", "hist", "explanation", "promoted"):
            assert g[k] == want[k], (j, k)
        assert g["scores"] == want["scores"] and g["density"] == pytest.approx(want["density"], rel=1e-4)
        assert [(x["id"], x["cos"], x["top_token"]) for x in g["nearest"]] == \
               [(x["id"], x["cos"], x["top_token"]) for x in want["nearest"]], j
        for part in ("top", "quantiles"):
            assert len(g[part]) == len(want[part]), (j, part)
            for a, b in zip(g[part], want[part]):
                assert (a["acts"], a["peak"], a["start"]) == (b["acts"], b["peak"], b["start"]), (j, part)
                assert part == "top" or a["quantile"] == b["quantile"]   # (a top example's bin is not shown)
                assert "".join(a["tokens"]) == "".join(b["tokens"]), (j, part)
    assert sum(1 for j in range(n) if got[j]["top"]) > n // 2          # most features fire: a real comparison


@pytest.fixture(scope="module")
def wide(tmp_path_factory, model):
    """A 512-latent TopK SAE (random weights) cached over 4,096 rows of random activations with real text tokens."""
    from actlab.dictionary import DictConfig, build
    from actlab.explain import CacheConfig, DictionaryLatents, TensorRows, build_cache

    from .conftest import TEXTS

    root = tmp_path_factory.mktemp("wide") / "art"
    torch.manual_seed(0)
    sae = build(DictConfig(arch="topk", d_in=64, d_sae=512, k=8, site="blocks.1.resid_post", model="tiny-llama"),
                seed=0)
    sae.save(root / "sae")
    rows = 4096
    ids = [t for doc in TEXTS for t in model.tokenizer(doc).input_ids]
    tokens = torch.tensor((ids * (rows // len(ids) + 1))[:rows])
    build_cache(TensorRows(torch.randn(rows, 64), tokens, torch.arange(rows) // 64, torch.arange(rows) % 64),
                DictionaryLatents(sae, str(root / "sae")), root / "cache", CacheConfig(progress=False))
    return root


# Bytes per feature page of the packed shards (fs/*.js) on the ``wide`` fixture: 165 measured (2026-11-30); the
# same pages as JSON shards were 814 and with base64 instead of b15 about 205. The budget leaves 9 %.
FS_BYTES_PER_FEATURE = 180


def test_many_feature_export_size_budget(wide, model, tmp_path, page):
    from actlab.web import export_html

    out = export_html([wide], tmp_path / "site", model=model)
    data = out / "data" / "sae" / SID
    fs = sum(p.stat().st_size for p in (data / "fs").glob("*.js"))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packed shards {fs / 512:.1f} B per feature; whole export {total / 1e3:.1f} kB")
    assert len(list((data / "fs").glob("*.js"))) == 2
    assert fs / 512 <= FS_BYTES_PER_FEATURE, f"{fs / 512:.1f} bytes per feature page, budget {FS_BYTES_PER_FEATURE}"
    assert total <= 512 * FS_BYTES_PER_FEATURE + 90_000     # + page code, feature list, rows, vocab
    v, body = _unpack(data / "fs" / "1.js")
    assert v["fmt"] == "bin" and read_columns(body, v["spec"])["id"] == list(range(256, 512))
    page.goto(out.joinpath("index.html").as_uri() + f"#/feature/{SID}/300")      # the second shard, in Chromium
    page.wait_for_selector("[data-testid='top-example']", timeout=20_000)
    assert page.inner_text("[data-testid='feature-title']") == f"feature 300 of {SID}"
    assert page.errors == []
