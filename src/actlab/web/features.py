"""What the SAE overview and feature pages show, computed from a latent cache (``actlab explain cache``), the
dictionary it came from (when that folder is served too) and any explanation files: JSON-ready dicts, so the server
and the static export give the same numbers."""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import torch

from actlab.web.registry import Entry, Registry
from actlab.web.shared import SharedModel

DENSE = 0.1            # a latent firing on more than this fraction of tokens counts as dense
N_TOP, N_QUANTILES, N_NEAREST, N_TOKENS = 8, 5, 8, 10
MAX_WINDOWS = 2000     # windows considered for quantile examples (highest first)


def rounded(xs: list[float], d: int = 4) -> list[float]:
    """Many floats to ``d`` significant digits (non-finite -> 0), faster than ``_r`` one by one."""
    f = f"%.{d}g"
    return [float(f % x) if math.isfinite(x) else 0.0 for x in xs]


def _r(x: float, d: int = 5) -> float:
    """A float rounded to ``d`` significant digits for JSON (NaN/Inf become 0: JSON has no such numbers)."""
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return 0.0
    return round(x, d - 1 - math.floor(math.log10(abs(x))))


class SaeView:
    """One served latent cache with its optional dictionary, tokenizer and explanations; per-feature results are
    kept in a small LRU so a page reload is served from memory."""

    def __init__(self, entry: Entry, registry: Registry, shared: SharedModel, lru: int = 256):
        from actlab.explain import LatentCache

        self.entry, self.shared = entry, shared
        self.cache = LatentCache(entry.folder)
        self.explanations = registry.explanations_for(entry.folder)
        self.dictionary = None
        self.dictionary_note = ""
        src = self.cache.source
        if src.get("type") == "dictionary" and src.get("path"):
            inside = registry.inside(src["path"])
            if inside is not None and (inside / "cfg.json").is_file():
                from actlab.dictionary import load

                self.dictionary = load(inside, site=src.get("site"))
            else:
                self.dictionary_note = "the dictionary folder is not among the served folders"
        self.site = src.get("site") or ""
        self._lock = threading.Lock()
        self._lru: OrderedDict[int, dict] = OrderedDict()
        self._lru_size = lru
        self._index: dict[str, list] | None = None
        self._runs = None
        self._pieces: dict[int, str] = {}
        self._unit: torch.Tensor | None = None

    # -- helpers ------------------------------------------------------------------------------------------
    @property
    def decoder(self) -> torch.Tensor | None:
        return None if self.dictionary is None else self.dictionary.W_dec.detach().float()

    def unit_decoder(self) -> torch.Tensor:
        """Decoder rows scaled to unit norm (computed once; nearest features are their cosines)."""
        if self._unit is None:
            W = self.decoder
            self._unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self._unit

    def nearest(self, j: int, k: int) -> list[tuple[int, float]]:
        """Same as ``actlab.explain.nearest_features(decoder, j, k)``, with the unit rows computed once."""
        W = self.unit_decoder()
        cos = W @ W[j]
        cos[j] = -float("inf")
        v, i = cos.topk(min(k, W.shape[0] - 1))
        return list(zip(i.tolist(), v.tolist()))

    def tokenizer(self):
        try:
            return self.shared.tokenizer()
        except Exception:   # noqa: BLE001 - no model: token ids are shown instead of text
            return None

    def piece(self, tok, t: int) -> str:
        if t not in self._pieces:
            self._pieces[t] = f"#{t}" if tok is None else tok.decode([t])
        return self._pieces[t]

    def pieces(self, ids: list[int]) -> list[str]:
        """``actlab.explain.token_pieces`` of ``ids`` (its first part), from per-token decodes cached once when no
        token decodes to U+FFFD (then both are the single-token decodes), else computed in full."""
        tok = self.tokenizer()
        if tok is None:
            return [f"#{t}" for t in ids]
        out = [self.piece(tok, t) for t in ids]
        if any("\ufffd" in p for p in out):
            from actlab.explain import token_pieces

            return token_pieces(tok, ids)[0]
        return out

    def check(self, j: int) -> int:
        if not 0 <= j < self.cache.n_latents:
            raise IndexError(f"feature {j} out of range: {self.entry.id} has {self.cache.n_latents} features")
        return j

    # -- overview -----------------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        c = self.cache
        dens = c.density
        alive = dens[dens > 0]
        lo = -8 if not alive.numel() else math.floor(float(alive.log10().min()))
        edges = list(range(lo, 1))
        counts = torch.histc(alive.log10().float(), bins=len(edges) - 1, min=lo, max=0).long().tolist() \
            if len(edges) > 1 and alive.numel() else []
        train = (self.dictionary.cfg.train if self.dictionary is not None else {}) or {}
        final = train.get("final", {}) if isinstance(train, dict) else {}
        return {"id": self.entry.id, "path": self.entry.rel, "site": self.site, "source": c.source.get("type"),
                "arch": c.source.get("arch"), "n_features": c.n_latents, "n_tokens": c.n_rows,
                "dead": int((c.count == 0).sum()), "dense": int((dens > DENSE).sum()), "dense_threshold": DENSE,
                "l0": _r(float(c.count.sum()) / max(c.n_rows, 1)),
                "fvu": _r(final["fvu"]) if isinstance(final.get("fvu"), (int, float)) else None,
                "train_l0": _r(final["l0"]) if isinstance(final.get("l0"), (int, float)) else None,
                "density_hist": {"log10_edges": edges, "counts": counts},
                "has_dictionary": self.dictionary is not None, "note": self.dictionary_note,
                "n_explained": len(self.explanations), "model": self.shared.name}

    def index(self) -> dict[str, list]:
        """Per feature: density, max, top token (the token at its highest activation) and explanation."""
        with self._lock:
            if self._index is None:
                c = self.cache
                row, lat, val = c.entries()
                top_row = torch.full((c.n_latents,), -1, dtype=torch.long)
                if val.numel():
                    order = torch.argsort(val, descending=True, stable=True)
                    order = order[torch.argsort(lat[order], stable=True)]
                    ptr = torch.zeros(c.n_latents + 1, dtype=torch.long)
                    ptr[1:] = torch.bincount(lat, minlength=c.n_latents).cumsum(0)
                    has = c.count > 0
                    top_row[has] = row[order[ptr[:-1][has]]]
                toks = c.row_table("tokens")
                tok = self.tokenizer()
                top_tok = [self.piece(tok, int(toks[r])) if r >= 0 else "" for r in top_row.tolist()]
                self._index = {"id": list(range(c.n_latents)), "density": [_r(x, 4) for x in c.density.tolist()],
                               "max": [_r(x, 4) for x in c.max.tolist()], "top_token": top_tok,
                               "explanation": [self.explanations.get(j, {}).get("explanation", "")
                                               for j in range(c.n_latents)]}
            return self._index

    def search(self, q: str = "", offset: int = 0, limit: int = 100, sort: str = "id") -> dict[str, Any]:
        """Features matching ``q`` (an id, or text in the explanation or top token; case-insensitive)."""
        ix = self.index()
        n = len(ix["id"])
        q = q.strip().lower()
        if not q:
            hits = list(range(n))
        else:
            hits = [j for j in range(n) if q in ix["explanation"][j].lower() or q in ix["top_token"][j].lower()]
            if q.isdigit() and int(q) < n:
                hits = [int(q)] + [j for j in hits if j != int(q)]
        if sort in ("density", "max"):
            hits.sort(key=lambda j: -ix[sort][j])
        rows = [{k: ix[k][j] for k in ix} for j in hits[offset: offset + limit]]
        return {"total": len(hits), "offset": offset, "features": rows}

    # -- one feature --------------------------------------------------------------------------------------
    def feature(self, j: int) -> dict[str, Any]:
        self.check(j)
        with self._lock:
            if j in self._lru:
                self._lru.move_to_end(j)
                return self._lru[j]
        out = self._feature(j)
        with self._lock:
            self._lru[j] = out
            while len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)
        return out

    def examples(self, j: int) -> tuple[list, list]:
        from actlab.explain import ExampleConfig, activating_windows

        c = self.cache
        if not int(c.count[j]):
            return [], []
        cfg = ExampleConfig(ctx_len=24, after=6, n_quantiles=N_QUANTILES)
        if self._runs is None:
            from actlab.explain import Runs

            self._runs = Runs(c)
        wins = activating_windows(c, j, cfg, runs=self._runs, limit=MAX_WINDOWS)
        top = wins[:N_TOP]
        quant = []
        for b in range(N_QUANTILES):
            part = [x for x in wins if x.quantile == b]
            if part:
                quant.append(part[len(part) // 2])       # the median window of each equal-count rank bin
        return top, quant

    def _example(self, x) -> dict[str, Any]:
        return {"tokens": self.pieces(x.tokens), "acts": rounded(x.acts), "max": _r(x.max_act),
                "quantile": x.quantile, "peak": x.peak, "doc": x.doc, "start": x.start}

    def _feature(self, j: int) -> dict[str, Any]:
        c = self.cache
        top, quant = self.examples(j)
        out: dict[str, Any] = {
            "sae": self.entry.id, "id": j, "n_features": c.n_latents, "site": self.site,
            "count": int(c.count[j]), "n_tokens": c.n_rows, "density": _r(float(c.density[j])),
            "max": _r(float(c.max[j])), "mean": _r(float(c.mean_active[j])),
            "hist": {"edges": [_r(e, 4) for e in c.hist_edges.tolist()], "counts": c.hist[j].tolist()},
            "top": [self._example(x) for x in top], "quantiles": [self._example(x) for x in quant],
            "explanation": self.explanations.get(j, {}).get("explanation"),
            "scores": self.explanations.get(j, {}).get("scores", {}),
            "promoted": None, "nearest": [], "steerable": False}
        dec = self.decoder
        if dec is not None and dec.shape[0] > 1:
            ix = self.index()
            out["nearest"] = [{"id": i, "cos": _r(v, 4), "explanation": ix["explanation"][i],
                               "top_token": ix["top_token"][i]} for i, v in self.nearest(j, N_NEAREST)]
        if dec is not None and self.shared.available:
            m = self.shared.get()
            out["steerable"] = dec.shape[1] == m.adapter.d_model and self.dictionary.cfg.d_out is None
            if dec.shape[1] == m.adapter.d_model:
                from actlab.explain import promoted_tokens
                from actlab.models import Unsupported

                try:
                    p = promoted_tokens(m, dec[j], N_TOKENS)
                    out["promoted"] = {"top": [[t, _r(v, 4)] for t, v in zip(p.top_tokens, p.top_values)],
                                       "bottom": [[t, _r(v, 4)] for t, v in zip(p.bottom_tokens, p.bottom_values)]}
                except Unsupported:
                    pass
        return out


def sae_views(registry: Registry, shared: SharedModel) -> dict[str, SaeView]:
    """A view per served latent cache (opened lazily by the app; here all at once for the static export)."""
    return {e.id: SaeView(e, registry, shared) for e in registry.of_kind("explain.latent_cache")}


def folder_model(registry: Registry) -> str | None:
    """The model named by the served artifacts (first cache, then dictionary, then stats report), if any."""
    for e in registry.of_kind("explain.latent_cache"):
        name = (e.config.get("identity", {}).get("rows") or {}).get("model")
        if name:
            return name
    for e in registry.of_kind("dictionary"):
        if e.config.get("model"):
            return e.config["model"]
    for e in registry.of_kind("stats.report"):
        name = (e.config.get("meta") or {}).get("model")
        if isinstance(name, str) and name:
            return name
    return None

