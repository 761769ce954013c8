"""Soft-prompt (embedding-space) maximisation for text models: optimise ``n_tokens`` input embeddings to drive a unit,
then report the nearest real tokens of each optimised embedding (cosine similarity to the token embedding matrix).

The embeddings enter through the ``embed`` site (``model.intervene``), the unit is read through ``model.recording``
at one position (default the last); each embedding is kept inside the ball of the largest token-embedding norm.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from actlab.core import Fn
from actlab.viz.objectives import OUTPUT, Unit, unit_value

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class SoftPrompt:
    """``embeddings`` [n_tokens, d], ``value`` of the unit at the end, ``nearest`` token strings (k per position),
    ``nearest_ids`` [n_tokens, k], ``similarity`` [n_tokens, k] (cosine), ``trace`` (value per step)."""

    embeddings: torch.Tensor
    value: float
    nearest_ids: torch.Tensor
    similarity: torch.Tensor
    nearest: list[list[str]] = field(default_factory=list)
    trace: list[float] = field(default_factory=list)


def _value(model: Model, emb: torch.Tensor, unit: Unit, position: int) -> torch.Tensor:
    n = emb.shape[1]
    enc = {"input_ids": torch.zeros(1, n, dtype=torch.long, device=emb.device),
           "attention_mask": torch.ones(1, n, dtype=torch.long, device=emb.device)}
    with model.intervene({"embed": Fn(fn=lambda act, ctx: emb)}):
        if unit.site == OUTPUT:
            out = model(enc, use_cache=False)
            act = (out.logits if hasattr(out, "logits") else out)[:, position]
        else:
            with model.recording([unit.site], grad=True) as rec:
                model(enc, use_cache=False)
            act = rec[unit.site][:, position]
    return unit_value(act, unit)


def nearest_tokens(model: Model, emb: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [n, k], cosine similarities [n, k]) of the token embeddings closest to each row of ``emb`` [n, d]."""
    w = model.adapter.W_E.detach().float()
    sim = torch.nn.functional.normalize(emb.float(), dim=-1) @ torch.nn.functional.normalize(w, dim=-1).T
    s, i = sim.topk(min(k, w.shape[0]), dim=-1)
    return i, s


def soft_prompt(model: Model, unit: Unit, *, n_tokens: int = 4, steps: int = 100, lr: float = 0.05,
                init_ids: Sequence[int] | None = None, position: int = -1, k: int = 5, seed: int = 0) -> SoftPrompt:
    """Embeddings ``[n_tokens, d]`` maximising ``unit`` (read at ``position``; site ``"output"``: a logit via
    ``Unit(neuron=token_id)``), started from ``init_ids``' embeddings or random rows of the embedding matrix."""
    if "embed" not in model.sites:
        raise ValueError(f"{model.name} has no 'embed' site: soft prompts need a text model")
    if unit.site != OUTPUT:
        model.check_sites([unit.site])
    w = model.adapter.W_E.detach()
    if init_ids is None:
        init_ids = torch.randint(0, w.shape[0], (n_tokens,), generator=torch.Generator().manual_seed(seed)).tolist()
    ids = torch.as_tensor(list(init_ids), dtype=torch.long)
    if ids.numel() < 1 or int(ids.min()) < 0 or int(ids.max()) >= w.shape[0]:
        raise ValueError(f"init_ids must be 1+ token ids in [0, {w.shape[0]}); got {ids.tolist()}")
    emb = w[ids.to(w.device)].clone()[None].requires_grad_(True)
    radius = float(w.float().norm(dim=-1).max())
    opt = torch.optim.Adam([emb], lr=lr)
    trace = []
    with torch.enable_grad():
        for _ in range(steps):
            v = _value(model, emb, unit, position)
            opt.zero_grad(set_to_none=True)
            (-v.sum()).backward()
            opt.step()
            with torch.no_grad():
                nrm = emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                emb.mul_((radius / nrm).clamp(max=1.0))
            trace.append(float(v.detach()))
    with torch.no_grad():
        value = float(_value(model, emb, unit, position).detach())
    e = emb.detach()[0]
    nid, sim = nearest_tokens(model, e, k)
    tok = model.tokenizer
    words = [[tok.decode([t]) for t in row] for row in nid.tolist()] if tok is not None else []
    return SoftPrompt(e, value, nid, sim, words, trace)
