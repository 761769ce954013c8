"""Semi-NMF features of a model's MLP (arXiv 2506.10920) as units of analysis and control: fit ``A ~ F G^T`` on
``blocks.{l}.mlp_act`` (neurons x tokens), describe a feature by its inputs (contexts with the largest ``G[:, k]``)
and its outputs (vocabulary projection of ``W_out F[:, k]``), and steer with it (add ``alpha F_k / ||F_k||`` to the
MLP activation, or equivalently ``alpha W_out F_k / ||F_k||`` to the MLP output)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actlab.core import Add
from actlab.dictionary.snmf import snmf

if TYPE_CHECKING:
    from actlab.models import Model

KIND = "dictionary.snmf"
CONTEXT = 8  # tokens of left context kept per token for input-centric descriptions


@dataclass
class SNMFFeatures:
    """A fitted factorisation of one layer's MLP activations and the tokens it was fitted on."""

    F: torch.Tensor
    """``[d_mlp, K]`` features in neuron space (sparse columns)."""
    G: torch.Tensor
    """``[n_tokens, K]`` non-negative coefficients."""
    layer: int
    model: str = ""
    loss: float = float("nan")
    contexts: list[str] = field(default_factory=list)
    """Per fitted token: its left context (up to ``CONTEXT`` tokens) ending in the token, decoded."""

    @property
    def site(self) -> str:
        return f"blocks.{self.layer}.mlp_act"

    @property
    def K(self) -> int:
        return int(self.F.shape[1])

    def _k(self, k: int) -> int:
        if not 0 <= int(k) < self.K:
            raise IndexError(f"feature {k} out of range: this factorisation has {self.K} features")
        return int(k)

    def unit(self, k: int) -> torch.Tensor:
        """``F[:, k] / ||F[:, k]||`` (``[d_mlp]``)."""
        f = self.F[:, self._k(k)].float()
        n = f.norm()
        if float(n) == 0:
            raise ValueError(f"feature {k} is all zero (a dead column); pick another")
        return f / n

    def steer(self, k: int, alpha: float, where: str = "mlp_act", model: Model | None = None) -> list:
        """Interventions adding ``alpha`` times feature ``k``'s unit vector: at the MLP activation
        (``where="mlp_act"``), or its image ``alpha W_out F_k / ||F_k||`` at the MLP output (``where="mlp_out"``,
        needs ``model`` for ``W_out``; equal for an MLP whose down projection has no bias)."""
        u = self.unit(k)
        if where == "mlp_act":
            return [(self.site, Add(u, float(alpha)))]
        if where == "mlp_out":
            if model is None:
                raise ValueError("where='mlp_out' needs the model (for W_out)")
            w = model.adapter.W_out(self.layer).detach().float()
            return [(f"blocks.{self.layer}.mlp_out", Add((u.to(w.device) @ w).to(model.dtype), float(alpha)))]
        raise ValueError(f"where={where!r}; use 'mlp_act' or 'mlp_out'")

    def top_contexts(self, k: int, n: int = 10) -> list[tuple[float, str]]:
        """Input-centric description: the ``n`` fitted tokens with the largest ``G[:, k]``, with their contexts."""
        g = self.G[:, self._k(k)]
        idx = torch.argsort(g, descending=True)[:n].tolist()
        return [(float(g[i]), self.contexts[i] if i < len(self.contexts) else f"#{i}") for i in idx]

    def top_tokens(self, model: Model, k: int, n: int = 10, bottom: bool = False) -> list[tuple[str, float]]:
        """Output-centric description: the tokens ``W_out F[:, k]`` promotes most (``bottom``: suppresses most),
        by its direct vocabulary projection ``W_U^T W_out F_k`` (no final norm: a direction, not a state)."""
        ad = model.adapter
        w_out = ad.W_out(self.layer).detach().float()
        out = self.F[:, self._k(k)].float().to(w_out.device) @ w_out
        logits = out @ ad.W_U.detach().float()
        v, i = torch.topk(-logits if bottom else logits, n)
        return [(model.tokenizer.decode([int(t)]), float(x) * (-1 if bottom else 1)) for x, t in zip(v, i)]

    def save(self, folder: str | os.PathLike) -> Path:
        """An ``actlab.artifact`` folder (kind ``dictionary.snmf``): F and G tensors, layer, model, contexts."""
        from actlab.artifact import save_artifact

        return save_artifact(folder, KIND, {"layer": self.layer, "model": self.model, "loss": self.loss,
                                            "K": self.K}, {"F": self.F.float().contiguous(),
                                                           "G": self.G.float().contiguous()},
                             records=[{"context": c} for c in self.contexts])

    @classmethod
    def load(cls, folder: str | os.PathLike) -> SNMFFeatures:
        from actlab.artifact import load_artifact

        art = load_artifact(folder, KIND)
        c = art.config
        return cls(art.tensors["F"], art.tensors["G"], int(c["layer"]), c.get("model", ""), float(c.get("loss", "nan")),
                   [r["context"] for r in art.records])


def mlp_activations(model: Model, texts: Sequence[str], layer: int, max_tokens: int = 4096,
                    batch_size: int = 16) -> tuple[torch.Tensor, list[str]]:
    """(``A [d_mlp, n_tokens]``, per-token contexts) from ``blocks.{layer}.mlp_act`` over the real tokens of
    ``texts`` (at most ``max_tokens``); neurons are rows, as the factorisation requires."""
    site = model.check_sites([f"blocks.{int(layer)}.mlp_act"])[0]
    cols, ctx, n = [], [], 0
    tok = model.tokenizer
    for i in range(0, len(texts), batch_size):
        enc = model.tokenize(list(texts[i:i + batch_size]))
        acts = model.record(enc, sites=[site], dtype=torch.float32)[site]
        am = enc["attention_mask"].bool()
        for r in range(acts.shape[0]):
            ids = enc["input_ids"][r][am[r]].tolist()
            a = acts[r][am[r]]
            for t in range(len(ids)):
                if n >= max_tokens:
                    break
                cols.append(a[t])
                ctx.append(tok.decode(ids[max(0, t - CONTEXT + 1):t + 1]))
                n += 1
    if not cols:
        raise ValueError("no tokens to factorise: texts are empty")
    return torch.stack(cols, 1), ctx


@dataclass
class SNMFConfig:
    """Settings of a semi-NMF fit of one layer's MLP activations."""

    layer: int = 0
    """Block whose ``mlp_act`` (hidden neurons) is factorised."""
    features: int = 50
    """K, the number of features."""
    sparsity: float = 0.01
    """Fraction of neurons kept per feature column (winner-take-all)."""
    iters: int = 500
    """Multiplicative-update iterations per run."""
    patience: int = 1500
    """Stop a run after this many iterations without improvement."""
    init: str = "kmeans"
    """kmeans, svd or random."""
    restarts: int = 3
    """Runs with different seeds; the best by reconstruction loss is kept."""
    max_tokens: int = 4096
    """Tokens (columns of A) taken from the texts."""
    seed: int = 0

    def __post_init__(self):
        if self.features < 1 or self.iters < 1 or self.restarts < 1 or self.max_tokens < 1:
            raise ValueError("features, iters, restarts and max_tokens must be >= 1")
        if not 0 < self.sparsity <= 1:
            raise ValueError(f"sparsity={self.sparsity} must be in (0, 1]")
        if self.init not in ("kmeans", "svd", "random"):
            raise ValueError(f"init={self.init!r}; use kmeans, svd or random")


def fit(model: Model, texts: Sequence[str], layer: int | None = None, K: int | None = None, *,
        cfg: SNMFConfig | None = None, **kw) -> SNMFFeatures:
    """Fit semi-NMF features of ``blocks.{layer}.mlp_act`` on ``texts`` (``cfg`` or its fields as keywords)."""
    if cfg is None:
        if layer is not None:
            kw["layer"] = layer
        if K is not None:
            kw["features"] = K
        cfg = SNMFConfig(**kw)
    A, ctx = mlp_activations(model, texts, cfg.layer, cfg.max_tokens)
    res = snmf(A, cfg.features, restarts=cfg.restarts, seed=cfg.seed, sparsity=cfg.sparsity, iters=cfg.iters,
               patience=cfg.patience, init=cfg.init)
    return SNMFFeatures(res.F.float(), res.G.float(), int(cfg.layer), model.name, res.loss, ctx)
