"""Recipe: virtual adversarial training on attention (Kitada & Iyatomi, training-dynamics.md §5).

The perturbation is added to the attention *scores* (before the softmax) through ``model.intervene`` with gradients
flowing through the edit: a random unit direction ``d``, ``r = xi d``; ``g = grad_r KL(p(y|x,a) || p(y|x,a+r))``
with the clean prediction held constant; ``r_vadv = eps g / ||g||`` (per example); loss ``CE + lam * KL(p(y|x,a) ||
p(y|x,a+r_vadv))``. The toy: embedding + additive attention + linear on random token sequences whose label is set by
one keyword; reported are accuracy, attention on the keyword and attention entropy after plain and VAT training.
"""
from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from actlab.core.interventions import Fn
from actlab.train.configs import VatConfig
from actlab.train.toy import Point

SCORES = "module:scores"


class AttnClassifier(nn.Module):
    """Embedding, additive attention (``v^T tanh(W e_t)``; scores pass through the ``scores`` point), a linear head."""

    def __init__(self, vocab: int, d: int, n_classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.w = nn.Linear(d, d)
        self.v = nn.Linear(d, 1, bias=False)
        self.scores = Point()
        self.out = nn.Linear(d, n_classes)

    def attention(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(ids)
        a = self.scores(self.v(torch.tanh(self.w(e)))[..., 0])  # [b, T]
        return a.softmax(-1), e

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w, e = self.attention(ids)
        return self.out((w[..., None] * e).sum(1))


def keyword_data(n: int, cfg: VatConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids [n, T], labels [n], keyword_position [n])``: random filler tokens (ids >= n_keywords) and one keyword
    (id k < n_keywords, label ``k % n_classes``) at a random position."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(cfg.n_keywords, cfg.vocab, (n, cfg.length), generator=g)
    kw = torch.randint(cfg.n_keywords, (n,), generator=g)
    pos = torch.randint(cfg.length, (n,), generator=g)
    ids[torch.arange(n), pos] = kw
    return ids, kw % cfg.n_classes, pos


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``KL(softmax(p) || softmax(q))``."""
    lp, lq = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1).mean()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def vat_perturbation(model, ids: torch.Tensor, clean_logits: torch.Tensor, eps: float, xi: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``r_vadv [b, T]`` on the attention scores, per example of norm ``eps`` (one power iteration)."""
    ref = clean_logits.detach()
    with torch.enable_grad():
        r = (xi * _unit(torch.randn(ids.shape, generator=generator))).requires_grad_(True)
        with model.intervene({SCORES: Fn(fn=lambda a, c: a + r)}, grad="through"):
            div = kl(ref, model(ids))
        (g,) = torch.autograd.grad(div, r)
    return eps * _unit(g.detach())


def vat_loss(model, ids: torch.Tensor, clean_logits: torch.Tensor, eps: float, xi: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``KL(p(y|x,a) || p(y|x,a+r_vadv))`` with the clean prediction held constant."""
    r = vat_perturbation(model, ids, clean_logits, eps, xi, generator)
    with model.intervene({SCORES: Fn(fn=lambda a, c: a + r)}, grad="through"):
        return kl(clean_logits.detach(), model(ids))


@torch.no_grad()
def attention_report(model, ids, labels, pos) -> dict:
    """Accuracy, mean attention weight on the keyword, mean attention entropy."""
    w, _ = model.module.attention(ids)
    ent = -(w * w.clamp_min(1e-30).log()).sum(-1)
    return {"acc": float((model(ids).argmax(-1) == labels).double().mean()),
            "keyword_attention": float(w[torch.arange(len(ids)), pos].mean()), "entropy": float(ent.mean())}


def train_vat(cfg: VatConfig, lam: float, seed: int) -> dict:
    """One run (``lam = 0``: plain training; else ``cfg.variant``'s term); returns the final attention report on
    held-out data."""
    from actlab import Model
    from actlab.train.ivat import ivat_loss

    adv = ivat_loss if cfg.variant == "ivat" else vat_loss
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        model = Model(AttnClassifier(cfg.vocab, cfg.d, cfg.n_classes).train(), None, name="attn-classifier")
    xtr, ytr, _ = keyword_data(cfg.n_train, cfg, seed + 100)
    xte, yte, pte = keyword_data(cfg.n_test, cfg, seed + 200)
    opt = torch.optim.Adam(model.module.parameters(), lr=cfg.lr)
    gb = torch.Generator().manual_seed(seed + 1)
    gr = torch.Generator().manual_seed(seed + 2)
    xu = keyword_data(cfg.n_unlabelled, cfg, seed + 300)[0] if cfg.n_unlabelled else None   # labels never used
    gu = torch.Generator().manual_seed(seed + 3)
    for _ in range(cfg.steps):
        i = torch.randint(len(xtr), (cfg.batch,), generator=gb)
        logits = model(xtr[i])
        loss = nn.functional.cross_entropy(logits, ytr[i])
        if lam:
            ids, lg = xtr[i], logits
            if xu is not None:                      # the adversarial term needs no labels: add unlabelled data
                u = xu[torch.randint(len(xu), (cfg.batch,), generator=gu)]
                ids, lg = torch.cat([ids, u]), torch.cat([logits, model(u)])
            loss = loss + lam * adv(model, ids, lg, cfg.eps, cfg.xi, gr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return attention_report(model, xte, yte, pte)


def run_vat(cfg: VatConfig) -> dict:
    """Plain vs VAT (or iVAT: ``cfg.variant``) training over ``cfg.seeds`` seeds; means of keyword attention,
    entropy and accuracy (the adversarial runs are reported under ``"vat"`` either way)."""
    runs = {"plain": [train_vat(cfg, 0.0, cfg.seed + s) for s in range(cfg.seeds)],
            "vat": [train_vat(cfg, cfg.lam, cfg.seed + s) for s in range(cfg.seeds)]}
    mean = {k: {m: sum(r[m] for r in rs) / len(rs) for m in rs[0]} for k, rs in runs.items()}
    rep = {"config": asdict(cfg), "runs": runs, "mean": mean,
           "checks": {"keyword_attention_up": mean["vat"]["keyword_attention"] > mean["plain"]["keyword_attention"],
                      "entropy_down": mean["vat"]["entropy"] < mean["plain"]["entropy"]}}
    if cfg.out:
        from actlab.train.report import write_json

        write_json(cfg.out, "vat.json", rep)
    return rep
