"""Codebook features (Tamkin et al., "Codebook Features"): snap an activation to the combination of its top-k codes
from a learned codebook (similarity = inner product / code norm), straight-through gradient to the input, an
autoencoding loss for the codes, and replacement of dead codes from recent inputs. Usable as a model edit
(``model.intervene({site: layer.intervention()})``) including forcing a code at chosen positions (steering)."""
from __future__ import annotations

import torch
from torch import nn


class CodebookLayer(nn.Module):
    """``out = mean of the k selected codes`` (value), ``d out / d x = I`` (straight-through)."""

    def __init__(self, d: int, n_codes: int, k: int = 1, similarity: str = "inner_norm", layernorm: bool = False,
                 dead_after: int = 200, rho: float = 0.01, seed: int = 0):
        super().__init__()
        if similarity not in ("inner_norm", "cosine", "euclidean"):
            raise ValueError(f"similarity must be inner_norm, cosine or euclidean; got {similarity!r}")
        if not 0 < k <= n_codes:
            raise ValueError(f"k={k} must be in 1..n_codes={n_codes}")
        g = torch.Generator().manual_seed(seed)
        self.codes = nn.Parameter(torch.randn(n_codes, d, generator=g) / d ** 0.5)
        self.k, self.similarity, self.dead_after, self.rho = k, similarity, dead_after, rho
        self.ln = nn.LayerNorm(d, elementwise_affine=False) if layernorm else None
        self.register_buffer("since_used", torch.zeros(n_codes, dtype=torch.long))
        self.register_buffer("usage", torch.zeros(n_codes, dtype=torch.long))
        self.forced: int | None = None
        self.last_idx: torch.Tensor | None = None

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        c = self.codes
        if self.similarity == "inner_norm":
            return x @ c.t() / c.norm(dim=1).clamp_min(1e-12)
        if self.similarity == "cosine":
            return torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(c, dim=1).t()
        return -torch.cdist(x.reshape(-1, x.shape[-1]), c).reshape(*x.shape[:-1], -1)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``[..., k]`` of the selected codes (a forced code replaces the lowest-ranked one)."""
        with torch.no_grad():
            idx = self.scores(x).topk(self.k, dim=-1).indices
            if self.forced is not None:
                has = (idx == self.forced).any(-1, keepdim=True)
                idx = torch.where(has, idx, torch.cat([idx[..., :-1], torch.full_like(idx[..., -1:], self.forced)],
                                                      -1))
        return idx

    def snap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(combination of selected codes [..., d] with gradient to the codes, indices [..., k])."""
        h = self.ln(x) if self.ln is not None else x
        idx = self.select(h.detach())
        return self.codes[idx].mean(-2), idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        snapped, idx = self.snap(x)
        self.last_idx = idx
        with torch.no_grad():
            used = torch.zeros_like(self.since_used, dtype=torch.bool)
            used[idx.reshape(-1)] = True
            self.since_used += 1
            self.since_used[used] = 0
            self.usage += torch.bincount(idx.reshape(-1), minlength=self.usage.numel())
        return snapped + (x - x.detach())          # value: codes; gradient to x: identity (straight-through)

    def aeloss(self, x: torch.Tensor) -> torch.Tensor:
        """Autoencoding loss that trains the codes: mean ||snap(x) - x||^2."""
        snapped, _ = self.snap(x)
        target = self.ln(x) if self.ln is not None else x
        return (snapped - target.detach()).pow(2).sum(-1).mean()

    @torch.no_grad()
    def replace_dead(self, recent: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-initialise codes unused for ``dead_after`` calls from random recent inputs (+ rho noise)."""
        dead = (self.since_used >= self.dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        rows = recent.reshape(-1, recent.shape[-1]).to(self.codes.dtype)
        if self.ln is not None:  # codes live where they are compared: after the LayerNorm
            rows = self.ln(rows)
        pick = torch.randint(0, rows.shape[0], (dead.numel(),), generator=generator)
        new = rows[pick]
        self.codes[dead] = new + self.rho * new.norm(dim=1, keepdim=True) * torch.randn(new.shape, generator=generator) \
            / new.shape[1] ** 0.5
        self.since_used[dead] = 0
        return int(dead.numel())

    @torch.no_grad()
    def init_codes(self, acts: torch.Tensor, method: str = "kmeans", iters: int = 10,
                   generator: torch.Generator | None = None) -> CodebookLayer:
        """Set the codes from activations ``[..., d]`` of the site (after the LayerNorm when there is one), so the
        first forward already snaps each input close to itself: ``"sample"`` = distinct random rows, ``"kmeans"`` =
        Lloyd's k-means started from those rows (empty clusters keep their row). Returns self."""
        rows = acts.reshape(-1, acts.shape[-1]).to(self.codes.dtype)
        if rows.shape[-1] != self.codes.shape[1]:
            raise ValueError(f"activations have width {rows.shape[-1]}; the codebook's codes have {self.codes.shape[1]}")
        if self.ln is not None:
            rows = self.ln(rows)
        n_codes = self.codes.shape[0]
        if rows.shape[0] < n_codes:
            raise ValueError(f"{rows.shape[0]} activation rows cannot initialise {n_codes} codes: give at least as "
                             f"many rows as codes")
        if method not in ("kmeans", "sample"):
            raise ValueError(f"init method must be 'kmeans' or 'sample'; got {method!r}")
        cent = rows[torch.randperm(rows.shape[0], generator=generator)[:n_codes]].clone()
        if method == "kmeans":
            for _ in range(iters):
                lab = torch.cdist(rows, cent).argmin(1)
                cnt = torch.bincount(lab, minlength=n_codes)
                tot = torch.zeros_like(cent).index_add_(0, lab, rows)
                full = cnt > 0
                cent[full] = tot[full] / cnt[full, None]
        self.codes.copy_(cent)
        self.since_used.zero_()
        return self

    def reset_usage(self) -> None:
        self.usage.zero_()

    def intervention(self):
        """A callable edit ``(act, ctx) -> snapped act`` for ``model.intervene``."""
        def edit(act, ctx):
            return self(act.to(self.codes.dtype)).to(act.dtype)
        return edit
