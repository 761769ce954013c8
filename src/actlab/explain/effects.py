"""Output-side effects of a latent: the tokens its decoder direction promotes and suppresses (through the final
norm's scale and the unembedding, as a logit lens of the direction), its nearest latents by decoder cosine, and
the latents that fire on the same tokens (co-occurrence counts from the cache)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from actlab.models import Unsupported

if TYPE_CHECKING:
    from actlab.explain.cache import LatentCache
    from actlab.models import Model

Tensor = torch.Tensor


@dataclass
class Promoted:
    """Top / bottom tokens of a direction's logit effect: ids, logit values and decoded strings."""

    top_ids: list[int]
    top_values: list[float]
    top_tokens: list[str]
    bottom_ids: list[int]
    bottom_values: list[float]
    bottom_tokens: list[str]


@torch.no_grad()
def logit_effect(model: Model, direction: Tensor) -> Tensor:
    """``(direction * final_norm.weight) @ W_U`` ``[vocab]`` (or ``[k, vocab]`` for ``[k, d]``): the logits a
    unit write along the direction adds, with the final norm's gain applied and its per-token scale left out."""
    ad = model.adapter
    W_U = ad.W_U.detach().float()
    d = direction.detach().float().to(W_U.device)
    if d.shape[-1] != W_U.shape[0]:
        raise ValueError(f"direction has width {d.shape[-1]}; the unembedding reads d_model={W_U.shape[0]} (a "
                         f"residual-stream direction is needed: an SAE on a resid/attn_out/mlp_out site)")
    norm = ad.final_norm
    if norm is None:
        raise Unsupported(ad.name, "no final norm known: the promoted tokens need one")
    w = getattr(norm, "weight", None)
    if w is not None:
        d = d * w.detach().float().to(d.device)
    return d @ W_U


def promoted_tokens(model: Model, direction: Tensor, k: int = 10) -> Promoted:
    """The ``k`` tokens a direction ``[d_model]`` promotes most and the ``k`` it suppresses most."""
    logits = logit_effect(model, direction).cpu()
    top, bot = logits.topk(k), (-logits).topk(k)
    dec = model.tokenizer.decode
    return Promoted(top.indices.tolist(), top.values.tolist(), [dec([i]) for i in top.indices.tolist()],
                    bot.indices.tolist(), (-bot.values).tolist(), [dec([i]) for i in bot.indices.tolist()])


def nearest_features(decoder: Tensor, j: int, k: int = 10) -> list[tuple[int, float]]:
    """The ``k`` latents whose decoder rows ``[n, d]`` have the highest cosine with row ``j`` (itself excluded)."""
    if not 0 <= j < decoder.shape[0]:
        raise IndexError(f"latent {j} out of range: the decoder has {decoder.shape[0]} rows")
    W = decoder.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = W @ W[j]
    cos[j] = -float("inf")
    v, i = cos.topk(min(k, W.shape[0] - 1))
    return list(zip(i.tolist(), v.tolist()))


def cooccurrence(cache: LatentCache, latents: list[int] | None = None) -> Tensor:
    """``[len(latents), n_latents]`` counts of rows where latent ``latents[a]`` and latent ``b`` are both active
    (the diagonal entry of a latent with itself is its count). Default: every latent (``[n, n]``)."""
    latents = list(range(cache.n_latents)) if latents is None else list(latents)
    row, lat, _ = cache.entries()
    out = torch.zeros(len(latents), cache.n_latents, dtype=torch.long)
    active = torch.zeros(cache.n_rows, dtype=torch.bool)
    for a, j in enumerate(latents):
        r, _ = cache.latent(j)
        active.zero_()
        active[r] = True
        out[a] = torch.bincount(lat[active[row]], minlength=cache.n_latents)
    return out


def attn_layer(site: str) -> int | None:
    """The layer of a ``blocks.{i}.attn.z`` site, else None (not an attention-output SAE)."""
    parts = site.split(".")
    if len(parts) == 4 and parts[0] == "blocks" and parts[2:] == ["attn", "z"] and parts[1].isdigit():
        return int(parts[1])
    return None


def head_shares(dictionary, n_heads: int, j: int, k: int = 3) -> list[tuple[int, float]]:
    """The ``k`` heads with the largest share of latent ``j``'s decoder norm (``actlab.lens.head_attribution``)."""
    from actlab.lens import head_attribution

    share = head_attribution(dictionary, n_heads)[j]
    v, i = share.topk(min(k, n_heads))
    return list(zip(i.tolist(), v.tolist()))


@torch.no_grad()
def dfa_sources(model: Model, dictionary, j: int, tokens: list[int], position: int,
                k: int = 5) -> list[tuple[int, float]]:
    """Direct feature attribution of latent ``j`` at ``position`` of a token window to its source positions
    (summed over heads; ``actlab.lens.direct_feature_attribution``): the ``k`` largest ``(source index, value)``.
    The window is run on its own, so the attention sees only the window's tokens."""
    from actlab.lens import direct_feature_attribution

    ids = torch.tensor([list(tokens)], dtype=torch.long)
    res = direct_feature_attribution(model, dictionary, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                     features=[j], position=position)
    per_src = res.by_source()[0, 0, : position % ids.shape[1] + 1].cpu()
    v, i = per_src.topk(min(k, per_src.numel()))
    return list(zip(i.tolist(), v.tolist()))
