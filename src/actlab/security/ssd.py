"""Selective Synaptic Dampening (arXiv 2308.07707): retrain-free unlearning of a forget set D_f.

Diagonal empirical Fisher importances ``I = mean over batches of (d L_batch-mean / d theta)^2`` on the full training
data D and on D_f (same loss reduction and batch size for both, model in eval mode); parameters with
``I_Df > alpha * I_D`` are multiplied by ``beta = min(lambda * I_D / I_Df, 1) ** exponent`` (never grown; beta only
computed on selected entries so a zero I_Df never divides). Buffers (batch-norm statistics) are not touched.

The paper's alpha/lambda are task-specific, so :func:`select_ssd` picks them on held-out retain data under a
clean-accuracy budget (the corrective protocol's developer knows only D_f and clean data; see docs/security.md).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actlab.security.trigger import predict

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def importances(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 64,
                loss: Loss = nn.functional.cross_entropy) -> dict[str, torch.Tensor]:
    """``{parameter name: I}`` with ``I = (1/B) sum_b grad(mean loss of batch b)^2`` over B batches (eval mode)."""
    if len(y) == 0:
        raise ValueError("importances need at least one example; got an empty set")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} targets")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()
    n_batches = 0
    try:
        for i in range(0, len(y), batch_size):
            model.zero_grad(set_to_none=True)
            loss(model(x[i:i + batch_size]), y[i:i + batch_size]).backward()
            for n, p in params.items():
                if p.grad is not None:
                    acc[n] += p.grad.detach() ** 2
            n_batches += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return {n: a / n_batches for n, a in acc.items()}


@dataclass
class DampenStats:
    """How much was dampened: selected share of parameters, and the smallest/mean beta over selected entries."""

    selected: int
    total: int
    min_beta: float
    mean_beta: float

    @property
    def fraction(self) -> float:
        return self.selected / max(1, self.total)

    def to_json(self) -> dict[str, Any]:
        return {"selected": self.selected, "total": self.total, "fraction": self.fraction,
                "min_beta": self.min_beta, "mean_beta": self.mean_beta}


@torch.no_grad()
def dampen(model: nn.Module, imp_full: dict[str, torch.Tensor], imp_forget: dict[str, torch.Tensor], *,
           alpha: float = 10.0, lam: float = 1.0, exponent: float = 1.0) -> DampenStats:
    """Apply SSD in place: select ``I_Df > alpha I_D``; ``theta *= min(lam I_D / I_Df, 1) ** exponent`` there."""
    if alpha <= 0 or lam <= 0:
        raise ValueError(f"alpha and lambda must be > 0; got alpha={alpha}, lambda={lam}")
    sel_total, total, betas_min, beta_sum = 0, 0, 1.0, 0.0
    for n, p in model.named_parameters():
        if n not in imp_full or n not in imp_forget:
            continue
        d, f = imp_full[n], imp_forget[n]
        sel = f > alpha * d if math.isfinite(alpha) else torch.zeros_like(f, dtype=torch.bool)
        total += p.numel()
        k = int(sel.sum())
        if not k:
            continue
        beta = torch.clamp(lam * d[sel] / f[sel], max=1.0) ** exponent
        p[sel] *= beta
        sel_total += k
        betas_min = min(betas_min, float(beta.min()))
        beta_sum += float(beta.sum())
    return DampenStats(sel_total, total, betas_min, beta_sum / sel_total if sel_total else 1.0)


def ssd(model: nn.Module, x_forget: torch.Tensor, y_forget: torch.Tensor, x_full: torch.Tensor,
        y_full: torch.Tensor, *, alpha: float = 10.0, lam: float = 1.0, exponent: float = 1.0, batch_size: int = 64,
        loss: Loss = nn.functional.cross_entropy, inplace: bool = False,
        imp_full: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, DampenStats]:
    """SSD: importances on D (``x_full``, training data incl. D_f) and D_f, then :func:`dampen`; returns
    (the dampened model — a copy unless ``inplace`` — and its stats). ValueError on an empty forget set."""
    if len(y_forget) == 0:
        raise ValueError("the forget set is empty: SSD needs at least one identified sample to forget")
    out = model if inplace else copy.deepcopy(model)
    i_d = imp_full if imp_full is not None else importances(out, x_full, y_full, batch_size=batch_size, loss=loss)
    i_f = importances(out, x_forget, y_forget, batch_size=batch_size, loss=loss)
    return out, dampen(out, i_d, i_f, alpha=alpha, lam=lam, exponent=exponent)


@dataclass
class Selection:
    """The chosen (alpha, lambda) and every candidate tried: held-out retain accuracy and forget-set agreement."""

    alpha: float
    lam: float
    base_retain_acc: float
    rows: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lambda": self.lam, "base_retain_acc": self.base_retain_acc, "rows": self.rows}


ALPHAS = (50.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05)
LAMBDAS = (1.0, 0.5, 0.1, 0.01)


@torch.no_grad()
def label_probability(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean softmax probability the model gives to labels ``y`` (keeps falling after argmax flips, unlike accuracy)."""
    was = model.training
    model.eval()
    try:
        return float(torch.softmax(model(x), -1).gather(1, y[:, None]).mean())
    finally:
        model.train(was)


def select_ssd(model: nn.Module, x_forget: torch.Tensor, y_forget: torch.Tensor, x_full: torch.Tensor,
               y_full: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *, ca_budget: float = 0.02,
               alphas: Sequence[float] = ALPHAS, lambdas: Sequence[float] = LAMBDAS, batch_size: int = 64,
               loss: Loss = nn.functional.cross_entropy) -> tuple[nn.Module, Selection]:
    """Grid over (alpha, lambda): keep settings whose accuracy on held-out retain data (``x_val``, never trained on)
    stays within ``ca_budget`` of the original; among them pick the one giving the forget set's (manipulated) labels
    the lowest mean probability, ties to the mildest (largest alpha, then lambda). Returns (dampened copy, selection).
    """
    if len(y_forget) == 0:
        raise ValueError("the forget set is empty: SSD needs at least one identified sample to forget")
    if len(y_val) == 0:
        raise ValueError("select_ssd needs held-out retain data (x_val, y_val) to check the CA budget")
    base = float((predict(model, x_val) == y_val).float().mean())
    i_d = importances(model, x_full, y_full, batch_size=batch_size, loss=loss)
    i_f = importances(model, x_forget, y_forget, batch_size=batch_size, loss=loss)
    best: tuple[tuple, nn.Module, float, float] | None = None
    rows = []
    for a in alphas:
        for lam in lambdas:
            m = copy.deepcopy(model)
            st = dampen(m, i_d, i_f, alpha=a, lam=lam)
            acc = float((predict(m, x_val) == y_val).float().mean())
            keep = label_probability(m, x_forget, y_forget)
            ok = acc >= base - ca_budget
            rows.append({"alpha": a, "lambda": lam, "retain_acc": acc, "forget_label_prob": keep, "ok": ok,
                         "selected_fraction": st.fraction})
            key = (keep, -a, -lam)
            if ok and (best is None or key < best[0]):
                best = (key, m, a, lam)
    if best is None:   # nothing met the budget: the identity (alpha = inf) always does
        return copy.deepcopy(model), Selection(math.inf, 1.0, base, rows)
    return best[1], Selection(best[2], best[3], base, rows)
