"""Static export: the explorer's read-only pages (home, model overview, SAE overview with search, every feature page,
patching views) as plain files that open from ``file://`` with no server. The page code is the served app's own;
each API answer is written as ``data/<api path>.js`` calling ``ACTLAB_DATA(path, value)`` (a script tag, since
browsers refuse ``fetch`` of local files). Feature pages are written compactly (``compact.py``: 256 features per
file, examples as rows of one shared token table, packed into integer columns, gzipped, 15 bits per UTF-16
character) and expanded in the browser by ``static/export.js``."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def _write(out: Path, key: str, value: Any) -> int:
    """Write ``data/<key>.js``; returns its size in bytes. A packed value (``compact.packed``) is written as UTF-16
    with a byte-order mark (its text is 15 bits per character), anything else as UTF-8."""
    path = out / "data" / f"{key}.js"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"ACTLAB_DATA({json.dumps(key)},{json.dumps(value, separators=(',', ':'), ensure_ascii=False)});\n"
    raw = ("\ufeff" + text).encode("utf-16-le") if isinstance(value, dict) and "$pack" in value else text.encode()
    path.write_bytes(raw)
    return len(raw)


def export_html(dirs: list[str | Path] | str | Path, out: str | Path, *, model: Model | None = None,
                model_name: str | None = None, features: list[int] | None = None, progress: bool = False) -> Path:
    """Write the static site for the artifacts in ``dirs`` into ``out`` (``out/index.html`` is the entry).

    ``features``: export only these feature pages (default: every feature of every served cache). A model (given,
    or named by ``model_name`` / the artifacts) decodes tokens and gives promoted tokens; without one, token ids
    are shown. Returns ``out``.
    """
    from actlab.web.features import folder_model, sae_views
    from actlab.web.registry import Registry
    from actlab.web.shared import SharedModel
    from actlab.web.views import model_overview, patch_view

    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    reg = Registry(dirs)
    out = Path(out)
    if out.resolve() in {r for r in reg.roots} or any(r in out.resolve().parents for r in reg.roots):
        raise ValueError(f"export folder {out} is inside a served folder; choose a folder outside {dirs}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
    (out / "static" / "mode.js").write_text("window.ACTLAB_STATIC = true;   // written by actlab's static export\n")
    shutil.copy(STATIC / "index.html", out / "index.html")
    shared = SharedModel(model_name or folder_model(reg), model)
    index = {**reg.summary(), "model": shared.name, "static": True, "limits": {}}
    index["artifacts"] = [a for a in index["artifacts"] if a["kind"] in ("explain.latent_cache", "patch.result",
                                                                          "stats.report", "dictionary")]
    total = _write(out, "index", index)
    ov = model_overview(reg, shared, load=False)
    for s in ov["stats"]:
        for f in s["figures"]:
            root, rel = f["url"].removeprefix("/api/file/").split("/", 1)
            dst = out / "files" / s["id"] / Path(rel).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(reg.roots[int(root)] / rel, dst)
            f["url"] = f"files/{s['id']}/{dst.name}"
    total += _write(out, "model", ov)
    for e in reg.of_kind("patch.result"):
        total += _write(out, f"patch/{e.id}", patch_view(e))
    for sid, v in sae_views(reg, shared).items():
        total += _sae(out, sid, v, features, progress)
    log.info("static export: %.1f MB in %s", total / 1e6, out)
    return out


def _sae(out: Path, sid: str, v, features: list[int] | None, progress: bool) -> int:
    """One SAE's files: overview (+ export settings), feature list, packed feature shards, rows, vocab."""
    import numpy as np

    from actlab.web.compact import (
        ROWS_CHUNK,
        SHARD,
        compact_feature,
        pack_ints,
        pack_shard,
        packed,
        packed_json,
        rows_chunks,
        used_rows,
        vocab,
    )

    n = v.cache.n_latents
    ov = {**v.overview(), "export": {"shard": SHARD, "rows_chunk": ROWS_CHUNK,
                                     "hist_edges": [float(f"{e:.4g}") for e in v.cache.hist_edges.tolist()]}}
    total = _write(out, f"sae/{sid}", ov)
    total += _write(out, f"sae/{sid}/features",
                    packed_json({"columnar": True, **{k: x for k, x in v.index().items() if k != "id"}}))
    todo = range(n) if features is None else sorted({j for j in features if 0 <= j < n})
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=f"feature pages of {sid}")
    ids: set[int] = set()
    shards: dict[int, dict[int, dict]] = {}
    for j in todo:
        shards.setdefault(j // SHARD, {})[j] = compact_feature(v, j, ids)
    for s, feats in shards.items():
        data, spec, extra = pack_shard(feats)
        total += _write(out, f"sae/{sid}/fs/{s}", packed(data, "bin", spec=spec, x=extra))
    used = used_rows(v.cache.n_rows, shards)
    for k, chunk in enumerate(rows_chunks(v, used)):
        data, spec = pack_ints("t", chunk.tolist())
        total += _write(out, f"sae/{sid}/rows/{k}", packed(data, "bin", spec=spec))
        ids.update(np.unique(chunk[used[k * ROWS_CHUNK: k * ROWS_CHUNK + len(chunk)]]).tolist())
    return total + _write(out, f"sae/{sid}/vocab", packed_json(vocab(v, ids)))
