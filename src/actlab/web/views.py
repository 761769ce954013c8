"""The read-only pages that are not about one SAE: the model overview (sites, stats report sections and figures) and
a patching sweep as a heat map grid. Each returns a JSON-ready dict."""
from __future__ import annotations

import math
from typing import Any

from actlab.web.features import _r
from actlab.web.registry import Entry, Registry
from actlab.web.shared import SharedModel


def _figures(e: Entry) -> list[dict[str, str]]:
    out = []
    for f in sorted(e.folder.glob("*.png")):
        if f.is_file() and not f.is_symlink():
            rel = f.name
            base = "" if e.rel == "." else e.rel + "/"
            out.append({"name": f.stem, "url": f"/api/file/{e.root}/{base}{rel}"})
    return out


def stats_section(e: Entry) -> dict[str, Any]:
    """Per-layer numbers of a stats report (``actlab stats``): top |h| and median |h| per layer, massive activations
    per sequence, recurring massive channels, MLP active fraction, and the report's PNG figures."""
    cfg = e.config
    m = cfg.get("massive") or {}
    layers = [{"site": s, "top1_max": _r(L.get("top1_max", 0)), "top1_median": _r(L.get("top1_median", 0)),
               "median_abs": _r(L.get("median_abs", 0)), "massive_per_seq": _r(L.get("massive_per_seq", 0)),
               "recurring_channels": L.get("recurring_channels", [])}
              for s, L in zip(m.get("sites", []), m.get("layers", []))]
    sp = cfg.get("sparsity") or {}
    return {"id": e.id, "path": e.rel, "model": (cfg.get("meta") or {}).get("model"),
            "n_tokens": (cfg.get("meta") or {}).get("n_tokens"), "notes": (cfg.get("meta") or {}).get("notes", []),
            "rule": m.get("rule"), "first_layer": m.get("first_layer"),
            "recurring_channels": m.get("recurring_channels", []), "layers": layers,
            "active_frac_mean": sp.get("active_frac_mean"), "figures": _figures(e)}


def model_overview(registry: Registry, shared: SharedModel, load: bool = True) -> dict[str, Any]:
    """The model (sites, layers, widths: loads it on first call when ``load``) and every served stats report."""
    out: dict[str, Any] = {"model": shared.name, "loaded": shared.loaded, "sites": [], "n_layers": None,
                           "d_model": None, "family": None,
                           "stats": [stats_section(e) for e in registry.of_kind("stats.report")]}
    if shared.available and load:
        m = shared.get()
        out.update(loaded=True, sites=m.sites, n_layers=m.n_layers, d_model=m.d_model, family=m.family,
                   causal_lm=m.is_causal_lm, context_length=m.context_length)
    return out


def patch_view(e: Entry) -> dict[str, Any]:
    """A patch result as a grid: rows = its first dim (sites / layers), columns = the other dims flattened (position,
    or position/head), with raw and normalised values (None when clean == corrupt)."""
    from actlab.patch import PatchResult

    r = PatchResult.load(e.folder)
    v = r.values.detach().float()
    rows = r.labels[r.dims[0]]
    cols = [""]
    for d in r.dims[1:]:
        cols = [f"{a}/{b}" if a else str(b) for a in cols for b in r.labels[d]]
    grid = v.reshape(len(rows), -1)
    try:
        norm = r.normalized.detach().float().reshape(len(rows), -1)
        normalized = [[_r(x, 4) for x in row] for row in norm.tolist()]
    except ValueError:
        normalized = None
    finite = [x for x in grid.flatten().tolist() if math.isfinite(x)]
    return {"id": e.id, "path": e.rel, "dims": list(r.dims), "rows": rows, "cols": cols, "row_dim": r.dims[0],
            "col_dim": "/".join(r.dims[1:]), "values": [[_r(x, 5) for x in row] for row in grid.tolist()],
            "normalized": normalized, "clean": _r(r.clean), "corrupt": _r(r.corrupt), "metric": r.metric,
            "method": r.method, "direction": r.direction, "min": _r(min(finite)) if finite else 0,
            "max": _r(max(finite)) if finite else 0}
