"""Library entry points behind ``actlab explain``: build a cache from paths (store or model + data; a dictionary,
neurons or directions), reopen what a cache was made from (latent source, tokenizer, model), dump examples, and
render a feature card for the terminal."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actlab.explain.cache import CacheConfig, LatentCache, build_cache
from actlab.explain.effects import attn_layer, dfa_sources, head_shares, nearest_features, promoted_tokens
from actlab.explain.examples import ExampleConfig, activating_windows, build_examples
from actlab.explain.sources import DictionaryLatents, DirectionLatents, NeuronLatents, StoreRows, TextRows

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)
SPARK = " ▁▂▃▄▅▆▇█"


def _directions(spec: str) -> torch.Tensor:
    """``FILE`` (its only tensor) or ``FILE:NAME`` of a safetensors file holding ``[k, d]`` or ``[d]``."""
    from actlab.artifact import load_tensors

    path, _, name = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    t = load_tensors(path)
    if name:
        if name not in t:
            raise KeyError(f"{path} holds no tensor {name!r}; it holds {sorted(t)}")
        return t[name]
    if len(t) != 1:
        raise ValueError(f"{path} holds {len(t)} tensors ({sorted(t)}); name one as FILE:NAME")
    return next(iter(t.values()))


def make_latents(*, dictionary: str | None = None, neurons: bool = False, directions: str | None = None,
                 site: str | None = None, width: int | None = None):
    """The latent source named by exactly one of ``dictionary`` (a folder), ``neurons`` or ``directions``."""
    if sum([dictionary is not None, bool(neurons), directions is not None]) != 1:
        raise ValueError("give exactly one latent source: --dictionary FOLDER, --neurons or --directions FILE")
    if dictionary is not None:
        from actlab.dictionary import load

        d = load(dictionary, site=site)
        return DictionaryLatents(d, str(Path(dictionary).resolve()))
    if not site:
        raise ValueError("--site is needed for neurons and directions (e.g. blocks.3.mlp_act)")
    if neurons:
        if not site.endswith("mlp_act"):
            raise ValueError(f"neurons are read at an mlp_act site; got {site!r}")
        if width is None:
            raise ValueError(f"the width of {site} is unknown")
        return NeuronLatents(width, site)
    lat = DirectionLatents(_directions(directions), site)
    lat.path = directions
    return lat


def cache_from_paths(out: str, cfg: CacheConfig, *, store: str | None = None, model: Model | None = None,
                     data: str | None = None, dictionary: str | None = None, neurons: bool = False,
                     directions: str | None = None, site: str | None = None, max_rows: int | None = None,
                     batch_rows: int = 4096, max_texts: int | None = None) -> LatentCache | None:
    """Cache a latent source over a store (``store``) or over a model run on texts (``model`` + ``data``).
    Under torchrun each rank caches its block of chunks and rank 0 merges (the others return None)."""
    from actlab import distributed

    distributed.init_from_env()
    if (store is None) == (model is None):
        raise ValueError("give either a store (--store DIR) or a model and --data, not both")
    if store is not None:
        from actlab.store import ActivationStore

        st = ActivationStore(store)
        if dictionary is not None:
            lat = make_latents(dictionary=dictionary, site=site)
            site = site or lat.site
        else:
            lat = make_latents(neurons=neurons, directions=directions, site=site,
                               width=st.dims.get(site or "", None))
        return build_cache(StoreRows(st, site or lat.site, batch_rows, max_rows), lat, out, cfg)
    from actlab.data import load_texts

    texts = load_texts(data)[:max_texts]
    width = None
    if neurons and site:
        width = model.adapter.d_mlp
    lat = make_latents(dictionary=dictionary, neurons=neurons, directions=directions, site=site, width=width)
    return build_cache(TextRows(model, site or lat.site, texts), lat, out, cfg)


def reopen_latents(cache: LatentCache):
    """The latent source a cache was made from (dictionary / directions), or None (neurons, tensors)."""
    src = cache.source
    if src["type"] == "dictionary" and src.get("path"):
        return make_latents(dictionary=src["path"], site=src.get("site"))
    if src["type"] == "directions" and src.get("path"):
        return make_latents(directions=src["path"], site=src.get("site"))
    return None


def cache_tokenizer(cache: LatentCache, model: Model | None = None):
    """The tokenizer of the cached rows: the model's, else the store's (its manifest), else the model named."""
    if model is not None:
        return model.tokenizer
    rows = cache.rows_source
    if rows["type"] == "store":
        from actlab.dictionary import store_tokenizer
        from actlab.store import ActivationStore

        return store_tokenizer(ActivationStore(rows["path"]))
    from actlab import load_model

    if not rows.get("model"):
        raise ValueError(f"the cache at {cache.folder} names no model or store to take a tokenizer from")
    return load_model(rows["model"]).tokenizer


def examples_report(cache: LatentCache, latents: list[int], cfg: ExampleConfig, tokenizer,
                    decoder: torch.Tensor | None = None) -> dict[str, Any]:
    """Examples of each latent as JSON-ready dicts (text with the activating tokens in << >>)."""
    out: dict[str, Any] = {"config": asdict(cfg), "latents": {}}
    for j in latents:
        s = build_examples(cache, j, cfg, decoder)

        def dump(exs):
            return [{"start": x.start, "doc": x.doc, "kind": x.kind, "quantile": x.quantile, "max_act": x.max_act,
                     "tokens": x.tokens, "acts": x.acts, "text": x.highlighted(tokenizer)} for x in exs]
        out["latents"][str(j)] = {"n_windows": s.n_candidates, "density": float(cache.density[j]),
                                  "train": dump(s.train), "test": dump(s.test),
                                  "non_activating": dump(s.non_activating)}
    return out


def sparkline(counts: torch.Tensor) -> str:
    """Counts as block characters, trimmed to the non-empty range."""
    nz = counts.nonzero()
    if not nz.numel():
        return ""
    c = counts[int(nz[0]): int(nz[-1]) + 1].double()
    top = float(c.max())
    return "".join(SPARK[0 if v == 0 else max(1, round(8 * v / top))] for v in c.tolist())


def _ansi(text: str, color: bool) -> str:
    return text.replace("<<", "\x1b[1;30;43m").replace(">>", "\x1b[0m") if color else text


def feature_card(cache: LatentCache, j: int, tokenizer, *, model: Model | None = None,
                 decoder: torch.Tensor | None = None, n_examples: int = 5, k_tokens: int = 8,
                 color: bool = False, dictionary=None) -> str:
    """A terminal card of latent ``j``: density, max, histogram sparkline, promoted tokens (with a model and a
    residual-width decoder), nearest latents, for an SAE on ``blocks.{i}.attn.z`` (with ``dictionary`` and a model)
    its top heads and the top example's DFA source tokens, and the top examples with the activating tokens
    highlighted."""
    if not 0 <= j < cache.n_latents:
        raise IndexError(f"latent {j} out of range: the cache holds {cache.n_latents} latents")
    e = cache.hist_edges
    h = cache.hist[j]
    lines = [f"latent {j}  ({cache.source['type']} at {cache.source.get('site') or '?'})",
             (f"density  {float(cache.density[j]):.3e}  ({int(cache.count[j])} of {cache.n_rows} tokens)   "
              f"max {float(cache.max[j]):.4g}   mean when active {float(cache.mean_active[j]):.4g}")]
    if int(cache.count[j]):
        nz = h.nonzero()
        lo, hi = float(e[int(nz[0])]), float(e[int(nz[-1]) + 1])
        lines.append(f"values   {lo:.3g} |{sparkline(h)}| {hi:.3g}  (log-spaced bins)")
    if model is not None and decoder is not None and decoder.shape[1] == model.adapter.d_model:
        p = promoted_tokens(model, decoder[j], k_tokens)
        lines.append("promotes " + "  ".join(f"{t!r} {v:+.2f}" for t, v in zip(p.top_tokens, p.top_values)))
        lines.append("suppresses " + "  ".join(f"{t!r} {v:+.2f}" for t, v in zip(p.bottom_tokens,
                                                                                   p.bottom_values)))
    if decoder is not None and decoder.shape[0] > 1:
        lines.append("nearest  " + "  ".join(f"#{i} ({c:.2f})" for i, c in nearest_features(decoder, j, 5)))
    exs = activating_windows(cache, j, ExampleConfig(), limit=n_examples)
    if dictionary is not None and model is not None and attn_layer(dictionary.cfg.site) is not None:
        lines += attention_lines(model, dictionary, j, exs[0] if exs else None, tokenizer)
    lines.append(f"top {len(exs)} examples:")
    for x in exs:
        lines.append(f"  {x.max_act:8.3f}  " + _ansi(x.highlighted(tokenizer).replace("\n", "\\n"), color))
    return "\n".join(lines)


def attention_lines(model: Model, dictionary, j: int, top, tokenizer) -> list[str]:
    """Feature-card lines of an attention-output SAE latent: head shares, DFA sources of the top example."""
    heads = head_shares(dictionary, model.adapter.n_heads, j)
    out = ["heads    " + "  ".join(f"h{h} {v:.2f}" for h, v in heads) + "  (share of decoder norm)"]
    if top is not None:
        src = dfa_sources(model, dictionary, j, top.tokens, top.focus)
        out.append("DFA from " + "  ".join(f"{tokenizer.decode([top.tokens[i]])!r} {v:+.2f}" for i, v in src)
                   + "  (top example, into its peak token)")
    return out


def cache_model(cache: LatentCache) -> Model | None:
    """The model the cached rows came from (by name), or None when the cache names none."""
    name = cache.rows_source.get("model")
    if not name:
        return None
    from actlab import load_model

    return load_model(name)
