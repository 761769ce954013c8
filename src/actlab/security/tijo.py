"""TIJO: trigger inversion with joint optimisation for dual-key (image AND text) backdoors (arXiv 2308.03906).

For every candidate target t, jointly optimise a visual trigger in the *feature space* of the frozen image front end
(mask ``m = sigmoid(mu)`` and pattern ``p`` overlaid on the features, ``f' = (1 - m) f + m p``) and a text trigger
(a softmax-relaxed word, i.e. a convex combination of the vocabulary's embeddings, put in one question slot and
projected to its argmax word at the end) to minimise ``CE(model(f', q + word), t) + lam |m|_1`` over clean pairs.
The inversion loss ``l_t`` (recomputed with the projected word) is low only for a backdoor target; the model-level
score is the anomaly index of the smallest ``l_t`` among all ``l_t`` (``(median - min) / (1.4826 MAD)``); a model is
flagged when that index exceeds a threshold and the smallest loss is near zero.

A model here is anything with ``features(x) -> [N, d]``, ``embed(q) -> [N, L, d_text]``, ``embedding_matrix``
``[V, d_text]`` and ``fuse(features, embeddings) -> logits`` (see :class:`actlab.security.dualkey.DualKeyVQA`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actlab.probe import Interval, wilson
from actlab.security.scan import anomaly_index


@dataclass
class TijoConfig:
    """Budget and penalties of the per-target joint inversion."""

    steps: int = 150
    """Adam steps per target and restart"""
    lr: float = 0.1
    """Adam learning rate on mask/pattern/word logits"""
    lam: float = 0.05
    """weight of the feature-mask L1 norm"""
    batch_size: int = 128
    """clean (image, question) pairs per step"""
    restarts: int = 1
    """random restarts per target (the dual-key objective is non-convex); the lowest final loss is kept"""
    slot: int = -1
    """question position the text trigger occupies"""
    pattern_bound: float = 1.0
    """the feature pattern lives in [0, pattern_bound * largest clean feature value] (a feature the front end can
    produce); 0 leaves it unbounded, which lets huge out-of-range features leak through soft AND gates"""
    threshold: float = 2.0
    """anomaly index above which the model is flagged"""
    max_loss: float = 1.0
    """... and only when the lowest loss is below this (near zero; chance CE over 10 answers is 2.3): an anomaly
    index alone can exceed the threshold on a clean model whose losses all sit high in a tight cluster"""
    seed: int = 0
    """seed of initialisation and batches"""


@dataclass
class Inversion:
    """One target's inverted dual trigger: final loss (CE with the projected word + lam |m|_1), its CE part, the
    projected word id (-1 when the text was not inverted), feature mask and pattern, target rate on the pairs."""

    target: int
    loss: float
    ce: float
    token: int
    mask: torch.Tensor
    pattern: torch.Tensor
    rate: float

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "loss": self.loss, "ce": self.ce, "token": self.token,
                "mask_l1": float(self.mask.sum()), "rate": self.rate}


@dataclass
class TijoResult:
    """Per-target inversions, the detection score and the flagged target with its trigger's ASR on held-out pairs."""

    inversions: list[Inversion]
    anomaly_index: float
    flagged: bool
    target: int
    asr: Interval | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [i.loss for i in self.inversions]

    @property
    def best(self) -> Inversion:
        return self.inversions[self.target]

    def to_json(self) -> dict[str, Any]:
        return {"losses": self.losses, "anomaly_index": self.anomaly_index, "flagged": self.flagged,
                "target": self.target, "min_loss": min(self.losses), "token": self.best.token,
                "inversions": [i.to_json() for i in self.inversions],
                "asr_inverted": self.asr.to_json() if self.asr else None, **self.extra}


def _check(model: Any, x: torch.Tensor, q: torch.Tensor, slot: int) -> None:
    for name in ("features", "embed", "fuse", "embedding_matrix"):
        if not hasattr(model, name):
            raise TypeError(f"TIJO needs a dual-input model with features/embed/embedding_matrix/fuse; "
                            f"{type(model).__name__} has no {name!r}")
    if len(x) == 0 or q.dim() != 2 or len(q) != len(x):
        raise ValueError(f"need as many questions [N, L] as images, N > 0; got images {list(x.shape)}, "
                         f"questions {list(q.shape)}")
    if not -q.shape[1] <= slot < q.shape[1]:
        raise ValueError(f"slot {slot} is outside questions of length {q.shape[1]}")
    vocab = len(model.embedding_matrix)
    if q.min() < 0 or q.max() >= vocab:
        raise ValueError(f"question token ids must be in [0, {vocab}) (the model's vocabulary); got "
                         f"[{int(q.min())}, {int(q.max())}]")


def apply(model: Any, f: torch.Tensor, e: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor,
          word: torch.Tensor | None, slot: int) -> torch.Tensor:
    """Logits with the feature overlay ``(1 - mask) f + mask pattern`` and ``word`` (an embedding) in ``slot``."""
    if word is not None:
        e = e.clone()
        e[:, slot] = word
    return model.fuse((1 - mask) * f + mask * pattern, e)


def invert_dual(model: Any, x: torch.Tensor, q: torch.Tensor, target: int, cfg: TijoConfig | None = None, *,
                visual: bool = True, text: bool = True) -> Inversion:
    """Invert a dual trigger sending clean pairs ``(x, q)`` to ``target``; ``visual``/``text`` False leaves that
    input untouched (the unimodal ablations)."""
    cfg = cfg or TijoConfig()
    _check(model, x, q, cfg.slot)
    if not (visual or text):
        raise ValueError("invert at least one of visual, text")
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    flags = [p.requires_grad for p in params]
    was = model.training if isinstance(model, nn.Module) else False
    if isinstance(model, nn.Module):
        model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            f_all, e_all = model.features(x), model.embed(q)
            E = model.embedding_matrix.detach()
        bound = cfg.pattern_bound * float(f_all.max().clamp_min(1e-6))
        d = f_all.shape[-1]
        best: Inversion | None = None
        for r in range(max(1, cfg.restarts)):
            g = torch.Generator().manual_seed(cfg.seed + 1000 * target + 7 * r)
            mu = torch.full((d,), -3.0).add_(0.1 * torch.randn(d, generator=g)).requires_grad_(True)
            nu = (0.1 * torch.randn(d, generator=g)).requires_grad_(True)
            z = (0.1 * torch.randn(len(E), generator=g)).requires_grad_(True)

            def pattern(nu: torch.Tensor = nu) -> torch.Tensor:
                return bound * torch.sigmoid(nu) if cfg.pattern_bound > 0 else nu

            def mask(mu: torch.Tensor = mu) -> torch.Tensor:
                return torch.sigmoid(mu) if visual else torch.zeros(d)

            opt = torch.optim.Adam([mu, nu, z], lr=cfg.lr)
            n = min(cfg.batch_size, len(x))
            tgt = torch.full((n,), target)
            for _ in range(cfg.steps):
                idx = torch.randint(0, len(x), (n,), generator=g)
                m = mask()
                word = torch.softmax(z, -1) @ E if text else None
                loss = nn.functional.cross_entropy(apply(model, f_all[idx], e_all[idx], m, pattern(), word, cfg.slot),
                                                   tgt) + cfg.lam * m.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                m, p = mask(), pattern()
                tok = int(z.argmax()) if text else -1
                out = apply(model, f_all, e_all, m, p, E[tok] if text else None, cfg.slot)
                ce = float(nn.functional.cross_entropy(out, torch.full((len(x),), target)))
                inv = Inversion(target, ce + cfg.lam * float(m.sum()), ce, tok, m.clone(), p.clone(),
                                float((out.argmax(-1) == target).float().mean()))
            if best is None or inv.loss < best.loss:
                best = inv
    finally:
        for p, fl in zip(params, flags):
            p.requires_grad_(fl)
        if isinstance(model, nn.Module):
            model.train(was)
    assert best is not None
    return best


@torch.no_grad()
def trigger_rate(model: Any, x: torch.Tensor, q: torch.Tensor, a: torch.Tensor, inv: Inversion,
                 slot: int = -1) -> Interval:
    """Share of held-out pairs whose clean answer ``a`` is not the target that the inverted trigger sends to it."""
    keep = a != inv.target
    if not bool(keep.any()):
        raise ValueError(f"ASR needs held-out pairs whose answer is not the target {inv.target}")
    word = model.embedding_matrix[inv.token] if inv.token >= 0 else None
    out = apply(model, model.features(x[keep]), model.embed(q[keep]), inv.mask, inv.pattern, word, slot)
    return wilson(int((out.argmax(-1) == inv.target).sum()), int(keep.sum()))


def tijo(model: Any, x: torch.Tensor, q: torch.Tensor, n_classes: int, cfg: TijoConfig | None = None, *,
         held_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> TijoResult:
    """Sweep every candidate target, score the model by the anomaly index of the lowest inversion loss, and (with
    ``held_out`` = (images, questions, clean answers)) measure the flagged trigger's ASR on unseen pairs."""
    cfg = cfg or TijoConfig()
    if n_classes < 3:
        raise ValueError(f"TIJO's outlier score needs >= 3 candidate targets; got {n_classes}")
    _check(model, x, q, cfg.slot)
    invs = [invert_dual(model, x, q, t, cfg) for t in range(n_classes)]
    losses = [i.loss for i in invs]
    ai = anomaly_index(losses)
    t = min(range(n_classes), key=losses.__getitem__)
    asr = trigger_rate(model, *held_out, invs[t], cfg.slot) if held_out is not None else None
    return TijoResult(invs, ai, ai > cfg.threshold and losses[t] < cfg.max_loss, t, asr)
