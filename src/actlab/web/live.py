"""The live endpoints (the only ones that run the model): per-token features / neurons / site norms of a prompt,
one layer's attention pattern, and plain vs steered generation. Every input is bounded (``Limits``)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from actlab.utils import top_rows
from actlab.web.features import SaeView, _r, rounded

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class Limits:
    """Bounds on what a request may ask for (checked before any work; a request over them gets a 4xx)."""

    max_body_bytes: int = 64 * 1024
    """Largest request body accepted (413 above)."""
    max_text_chars: int = 2000
    """Longest prompt text (422 above)."""
    max_tokens: int = 256
    """Most tokens a live prompt may have after tokenization (422 above)."""
    max_new_tokens: int = 64
    """Most tokens one generation may produce (422 above)."""
    max_prompts: int = 16
    """Most contrast prompts per side for a contrast direction."""
    top_k: int = 10
    """Most features / neurons listed per token."""
    max_graph_nodes: int = 2000
    """Most nodes of an attribution graph sent to the graph view (the most influential kept; tokens, logits always)."""
    max_graph_links: int = 20000
    """Most links of an attribution graph sent to the graph view (the strongest |weight| kept)."""


def _ids(m: Model, text: str, limits: Limits) -> torch.Tensor:
    if not text:
        raise ValueError("the prompt is empty")
    ids = m.tokenize(text)["input_ids"]
    if ids.shape[1] > limits.max_tokens:
        raise ValueError(f"the prompt has {ids.shape[1]} tokens; at most {limits.max_tokens} are allowed")
    return ids


def _pieces(m: Model, ids: torch.Tensor) -> list[str]:
    from actlab.explain import token_pieces

    return token_pieces(m.tokenizer, ids[0].tolist())[0]


def prompt_view(m: Model, text: str, limits: Limits, sae: SaeView | None = None, site: str | None = None,
                k: int = 5) -> dict[str, Any]:
    """Tokens of ``text``; the norm of every ``resid_post`` (and ``site``) activation per token; the top ``k``
    features of ``sae`` per token (or of neurons when ``site`` is an ``mlp_act`` site). One forward pass."""
    k = max(1, min(int(k), limits.top_k))
    ids = _ids(m, text, limits)
    sites = [s for s in m.sites if s.endswith("resid_post")]
    if site:
        sites += [s for s in m.check_sites([site]) if s not in sites]
    if sae is not None and sae.site not in sites:
        sites.append(sae.site)
    t0 = time.perf_counter()
    with torch.no_grad():
        acts = m.record(ids, sites)
    fwd = time.perf_counter() - t0
    norms = {s: rounded(acts[s][0].flatten(1).float().norm(dim=-1).tolist()) for s in sites}
    out: dict[str, Any] = {"tokens": _pieces(m, ids), "ids": ids[0].tolist(), "norms": norms,
                           "layers": [s for s in sites if s.endswith("resid_post")], "features": None,
                           "neurons": None, "forward_ms": _r(fwd * 1000, 4)}
    if sae is not None:
        if sae.dictionary is None:
            raise ValueError(f"{sae.entry.id}: the dictionary is not served, so its features cannot be computed live")
        with torch.no_grad():
            out["features"] = _pairs(*top_latents(sae.dictionary, acts[sae.site][0].float(), k))
        out["sae"] = sae.entry.id
    if site and site.endswith("mlp_act"):
        out["neurons"] = _pairs(*top_rows(acts[site][0].float(), k))
        out["site"] = site
    out["total_ms"] = _r((time.perf_counter() - t0) * 1000, 4)
    return out


def top_latents(d, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest latent activations per row of ``x [T, d_in]`` (values, ids) under dictionary ``d``, equal
    to ``top_rows(d.encode(x), k)``. A TopK SAE whose ``encode`` is the registered one (ReLU of its ``cfg.k``
    largest pre-activations) with ``k <= cfg.k`` takes them from the pre-activations directly, skipping the
    encode's own top-``cfg.k`` and the dense scatter (the bulk of a 16k-latent encode)."""
    from actlab.dictionary import ARCHS

    topk = ARCHS.get("topk")
    if topk is not None and d.cfg.arch == "topk" and type(d).encode is topk.encode and k <= (d.cfg.k or 0):
        v, i = top_rows(d.pre_acts(d.check_input(x)), k)
        return v.relu(), i
    return top_rows(d.encode(x), k)


def _pairs(v: torch.Tensor, i: torch.Tensor) -> list[list[list[float]]]:
    """Per row, the positive values as ``[id, value]`` (4 significant digits, highest first)."""
    vals = [rounded(row) for row in v.tolist()]
    return [[[a, b] for a, b in zip(ii, vv) if b > 0] for ii, vv in zip(i.tolist(), vals)]


def attention_view(m: Model, text: str, layer: int, limits: Limits) -> dict[str, Any]:
    """The attention pattern of every head of ``layer``: ``pattern[head][query][key]``."""
    if not 0 <= layer < m.n_layers:
        raise IndexError(f"layer {layer} out of range: the model has {m.n_layers} layers")
    site = f"blocks.{layer}.attn.pattern"
    m.check_sites([site])
    ids = _ids(m, text, limits)
    with torch.no_grad():
        p = m.record(ids, [site])[site][0].float()      # [query, head, key]
    pat = p.permute(1, 0, 2)
    return {"tokens": _pieces(m, ids), "layer": layer, "n_heads": pat.shape[0], "n_layers": m.n_layers,
            "pattern": [[[round(x, 4) for x in row] for row in head] for head in pat.tolist()]}


def contrast_direction(m: Model, positive: list[str], negative: list[str], site: str, limits: Limits) -> torch.Tensor:
    """Mean difference of the last-token activations of the positive and negative prompts at ``site``
    (``actlab.steer.extract``, method mean_diff)."""
    from actlab.steer import ExtractConfig, extract

    for name, side in (("positive", positive), ("negative", negative)):
        if not side or len(side) > limits.max_prompts:
            raise ValueError(f"give 1 to {limits.max_prompts} {name} prompts; got {len(side)}")
        for t in side:
            _ids(m, t, limits)
    return extract(m, positive, negative, [site], ExtractConfig(method="mean_diff", position="last"))[site].vector


def steer_view(m: Model, prompt: str, vector: torch.Tensor, site: str, strength: float, max_new_tokens: int,
               limits: Limits, unit: bool = True) -> dict[str, Any]:
    """Greedy generation of ``prompt`` without and with ``strength * vector`` (unit-normalised when ``unit``) added
    at ``site`` on every position."""
    from actlab import Add

    if not m.is_causal_lm:
        raise ValueError(f"{m.name} is not a causal LM; the steering playground generates text")
    if not 1 <= max_new_tokens <= limits.max_new_tokens:
        raise ValueError(f"max_new_tokens must be in 1..{limits.max_new_tokens}; got {max_new_tokens}")
    if not math.isfinite(strength):
        raise ValueError(f"strength must be finite; got {strength}")
    m.check_sites([site])
    ids = _ids(m, prompt, limits)
    if vector.dim() != 1 or vector.shape[0] != m.record(ids[:, :1], [site])[site].shape[-1]:
        raise ValueError(f"the direction has shape {list(vector.shape)}; {site} needs one vector of its width")
    v = vector.float()
    if unit:
        v = v / v.norm().clamp_min(1e-12)
    plain = m.generate(prompt, max_new_tokens=max_new_tokens)
    with m.intervene({site: Add(v.to(m.device), alpha=float(strength))}):
        steered = m.generate(prompt, max_new_tokens=max_new_tokens)
    return {"prompt": prompt, "site": site, "strength": strength, "plain": plain, "steered": steered,
            "vector_norm": _r(float(vector.norm()), 4), "unit": unit}
