"""Toy models for the training-dynamics recipes: a 2-layer attention-only transformer with an editable attention
pattern, and the repeated-random-sequence data that makes induction heads form.

Sites (raw module paths, reachable through ``model.intervene`` / ``model.recording``):
``module:blocks.{i}.pattern`` the attention probabilities ``[batch, head, query, key]`` (a clamp there is still
used with the model's own values), ``module:blocks.{i}`` the block's attention output ``[batch, pos, d]`` (what the
block adds to the residual stream).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

PATTERN = "module:blocks.{i}.pattern"
ATTN_OUT = "module:blocks.{i}"


class Point(nn.Module):
    """Identity; a named place in the forward pass where hooks can read or replace an activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Attention(nn.Module):
    """Causal multi-head attention; the probabilities pass through ``pattern`` before they weight the values."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model ({d}) must be divisible by n_heads ({heads})")
        self.heads, self.d_head = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.pattern = Point()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)  # [b, h, t, dh] each
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        probs = self.pattern(scores.masked_fill(~causal, float("-inf")).softmax(-1))
        return self.o((probs @ v).transpose(1, 2).reshape(b, t, d))


class AttnOnly(nn.Module):
    """Token + learned position embeddings, ``n_layers`` attention-only residual blocks, an unembedding."""

    def __init__(self, vocab: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, context: int = 64):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Attention(d_model, n_heads) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise ValueError(f"input of {ids.shape[1]} tokens exceeds the toy model's context of {self.context}")
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for blk in self.blocks:
            x = x + blk(x)
        return self.unembed(x)


class Repeats(NamedTuple):
    """A batch of repeated random sequences: ``ids [b, T]``; ``first``/``second`` ``[b, T]`` mark the positions
    whose *next* token lies inside the first copy / is predictable by copying from the first copy."""

    ids: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor


def repeated_sequences(batch: int, context: int, vocab: int, min_len: int, max_len: int,
                       generator: torch.Generator) -> Repeats:
    """``[noise][A][A][noise]`` per row: ``A`` uniform random tokens of a random length in ``[min_len, max_len]``,
    started at a random offset (so absolute positions cannot solve the task without a previous-token head)."""
    if 2 * max_len > context or min_len < 2 or min_len > max_len:
        raise ValueError(f"need 2 <= min_len <= max_len and 2*max_len <= context; got {min_len}, {max_len}, {context}")
    ids = torch.randint(vocab, (batch, context), generator=generator)
    lens = torch.randint(min_len, max_len + 1, (batch,), generator=generator)
    offs = (torch.rand(batch, generator=generator) * (context - 2 * lens + 1).float()).long()
    pos = torch.arange(context)[None]
    start, mid, end = offs[:, None], (offs + lens)[:, None], (offs + 2 * lens)[:, None]
    src = (pos - lens[:, None]).clamp(min=0)
    ids = torch.where((pos >= mid) & (pos < end), ids.gather(1, src), ids)
    # the target of position p is token p+1
    first = (pos + 1 > start) & (pos + 1 < mid)
    second = (pos + 1 > mid) & (pos + 1 < end)  # the first repeated token is not predictable yet
    return Repeats(ids, first, second)


def repeated_pairs(batch: int, length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """``[A A]`` rows with ``A`` of exactly ``length`` random tokens: the probe set of induction scores."""
    a = torch.randint(vocab, (batch, length), generator=generator)
    return torch.cat([a, a], 1)


@torch.no_grad()
def head_scores(model, ids_aa: torch.Tensor, length: int) -> dict[str, list[list[float]]]:
    """Per layer and head on ``[A A]`` probes: previous-token score (mean attention from t to t-1) and induction
    score (mean attention from t in the second copy to t - length + 1, the token after t's earlier occurrence)."""
    n_layers = len(model.module.blocks)
    sites = [PATTERN.format(i=i) for i in range(n_layers)]
    with model.recording(sites) as rec:
        model(ids_aa)
    prev, ind = [], []
    t = torch.arange(1, ids_aa.shape[1])
    q2 = torch.arange(length, 2 * length)
    for s in sites:
        p = rec[s]  # [b, h, q, k]
        prev.append(p[:, :, t, t - 1].mean((0, 2)).tolist())
        ind.append(p[:, :, q2, q2 - length + 1].mean((0, 2)).tolist())
    return {"prev_token": prev, "induction": ind}
