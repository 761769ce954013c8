"""Activations for probes: one ``[n, d]`` row per text at a site, at the last real token, the mean over real tokens,
or the last token of the instruction inside a chat template (``t_inst``, Latent Guard's position)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model

POSITIONS = ("last", "mean", "t_inst")


def probe_acts(model: Model, texts: Sequence[str], sites: str | Sequence[str], *, position: str = "last",
               chat: bool = False, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """``{site: [n, d] float32}``: ``position`` is 'last' (last real token), 'mean' (mean over real tokens) or
    't_inst' (last instruction token of the chat-templated prompt; implies ``chat``)."""
    if position not in POSITIONS:
        raise ValueError(f"position={position!r}; use one of {', '.join(POSITIONS)}")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to collect activations from")
    sites = model.check_sites([sites] if isinstance(sites, str) else list(sites))
    out: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        if position == "t_inst":
            from actlab.steer import instruction_positions

            t_inst, _ = instruction_positions(model, chunk)
            enc = model.tokenize(chunk, chat=True)
            am = enc["attention_mask"].bool()
            real = am.long().cumsum(1) - 1
            mask = am & (real == torch.as_tensor(t_inst, device=am.device)[:, None])
            acts = model.record(enc, sites=sites, dtype=torch.float32)
            for s in sites:
                out[s].append(acts[s][mask].cpu())
            continue
        enc = model.tokenize(chunk, chat=chat)
        if position == "last":
            acts = model.record(enc, sites=sites, positions="last", dtype=torch.float32)
            for s in sites:
                out[s].append(acts[s].cpu())
        else:
            acts = model.record(enc, sites=sites, dtype=torch.float32)
            am = enc["attention_mask"].float()[..., None]
            for s in sites:
                out[s].append(((acts[s] * am).sum(1) / am.sum(1)).cpu())
    return {s: torch.cat(v) for s, v in out.items()}
