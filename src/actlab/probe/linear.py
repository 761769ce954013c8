"""Linear probes on activations: logistic regression (L2, sklearn's objective), difference of means, LDA.

A probe is ``score(x) = x @ w + b`` (positive = class 1). ``fit_probe`` trains one on ``[n, d]`` activations;
:class:`LinearProbe` carries the site, model and d_model it was trained on, so applying it elsewhere fails loudly,
and saves/loads as an ``actlab.artifact`` folder (kind ``probe``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actlab.artifact import check_finite, load_artifact, save_artifact
from actlab.probe.metrics import check_labels

METHODS = ("logistic", "mean_diff", "lda")
KIND = "probe"


@dataclass
class LinearProbe:
    """``score = x @ w + b``; ``threshold`` turns scores into labels (0 unless calibrated)."""

    w: torch.Tensor
    b: float
    method: str
    site: str = ""
    position: str = "last"
    model: str = ""
    threshold: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return int(self.w.shape[0])

    def check_width(self, x: torch.Tensor, where: str = "") -> None:
        """ValueError when ``x``'s last dimension is not the probe's d_model (probe from another model/site)."""
        if x.shape[-1] != self.d_model:
            at = f" at {where}" if where else ""
            raise ValueError(f"probe trained on {self.model or 'a model'} {self.site or ''} has d_model={self.d_model}, "
                             f"but the activations{at} have width {x.shape[-1]}; apply it to the model and site it "
                             f"was trained on")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``[...]`` for activations ``[..., d_model]`` (float32, on x's device)."""
        self.check_width(x)
        return x.float() @ self.w.to(x.device, torch.float32) + self.b

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) >= self.threshold

    def save(self, folder: str | Path) -> Path:
        cfg = {"method": self.method, "b": float(self.b), "site": self.site, "position": self.position,
               "model": self.model, "threshold": float(self.threshold), "d_model": self.d_model, "meta": self.meta}
        return save_artifact(folder, KIND, cfg, {"w": self.w.detach().float().cpu()})

    @classmethod
    def load(cls, folder: str | Path) -> LinearProbe:
        a = load_artifact(folder, KIND)
        c = a.config
        w = a.tensors["w"]
        if w.dim() != 1 or int(c.get("d_model", w.shape[0])) != w.shape[0]:
            raise ValueError(f"{folder}: probe weight has shape {list(w.shape)}; cfg.json says d_model={c.get('d_model')}")
        return cls(w, float(c["b"]), c["method"], c.get("site", ""), c.get("position", "last"), c.get("model", ""),
                   float(c.get("threshold", 0.0)), c.get("meta", {}))


def _check_xy(x: torch.Tensor, y: torch.Tensor | np.ndarray | list) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"activations must be a non-empty [n, d] tensor; got "
                         f"{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    yy = torch.as_tensor(check_labels(y))
    if len(yy) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} activation rows but {len(yy)} labels")
    check_finite("activations", x)
    return x.double(), yy


def fit_logistic(x: torch.Tensor, y: torch.Tensor, C: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-10) -> tuple[torch.Tensor, float]:
    """L2 logistic regression with an unpenalised intercept: minimise ``0.5 |w|^2 + C * sum log-loss`` (the objective
    of scikit-learn's ``LogisticRegression(C=C)``). Newton's method with backtracking in float64 (the objective is
    strictly convex, so a handful of steps reach machine precision); L-BFGS when d is too wide for a d x d Hessian."""
    if C <= 0:
        raise ValueError(f"C must be > 0 (inverse L2 strength); got {C}")
    xx, yy = _check_xy(x, y)
    n, d = xx.shape
    xb = torch.cat([xx, torch.ones(n, 1, dtype=xx.dtype)], 1)
    t = yy.double()
    reg = torch.ones(d + 1, dtype=xx.dtype)
    reg[-1] = 0.0

    def loss(wb: torch.Tensor) -> torch.Tensor:
        z = xb @ wb
        return C * torch.nn.functional.softplus(z).sum() - C * (t * z).sum() + 0.5 * (reg * wb * wb).sum()

    wb = torch.zeros(d + 1, dtype=xx.dtype)
    if d > NEWTON_MAX_D:
        return _lbfgs(loss, wb, max_iter * 5)
    f = loss(wb)
    for _ in range(max_iter):
        p = torch.sigmoid(xb @ wb)
        g = C * (xb.T @ (p - t)) + reg * wb
        h = C * (xb.T * (p * (1 - p))) @ xb + torch.diag(reg)
        h.diagonal().add_(1e-12)
        step = torch.linalg.solve(h, g)
        dec = float(g @ step)
        if dec / 2 <= tol * max(1.0, abs(float(f))):
            break
        a = 1.0
        while a > 1e-10:   # Armijo backtracking
            cand = wb - a * step
            fc = loss(cand)
            if fc <= f - 1e-4 * a * dec:
                break
            a /= 2
        wb, f = cand, fc
    return wb[:-1].float(), float(wb[-1])


NEWTON_MAX_D = 4096


def _lbfgs(loss, wb: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, float]:
    wb = wb.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([wb], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        out = loss(wb)
        out.backward()
        return out

    opt.step(closure)
    w = wb.detach()
    return w[:-1].float(), float(w[-1])


def fit_mean_diff(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """w = mean(class 1) - mean(class 0); b puts the threshold 0 at the midpoint of the two means."""
    xx, yy = _check_xy(x, y)
    m1, m0 = xx[yy == 1].mean(0), xx[yy == 0].mean(0)
    w = m1 - m0
    return w.float(), float(-(w @ (m1 + m0)) / 2)


def fit_lda(x: torch.Tensor, y: torch.Tensor, shrinkage: float = 1e-3) -> tuple[torch.Tensor, float]:
    """Fisher LDA: w = S^-1 (m1 - m0) with the pooled within-class covariance S shrunk toward its mean variance
    (``(1-s) S + s * tr(S)/d * I``) so it stays invertible when d > n; threshold at the midpoint."""
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1]; got {shrinkage}")
    xx, yy = _check_xy(x, y)
    m1, m0 = xx[yy == 1].mean(0), xx[yy == 0].mean(0)
    c = torch.cat([xx[yy == 1] - m1, xx[yy == 0] - m0])
    s = c.T @ c / max(1, len(c) - 2)
    d = s.shape[0]
    s = (1 - shrinkage) * s + shrinkage * (torch.trace(s) / d + 1e-12) * torch.eye(d, dtype=s.dtype)
    w = torch.linalg.solve(s, m1 - m0)
    return w.float(), float(-(w @ (m1 + m0)) / 2)


def fit_probe(x: torch.Tensor, y: torch.Tensor | np.ndarray | list, method: str = "logistic", *, C: float = 1.0,
              shrinkage: float = 1e-3, **info: Any) -> LinearProbe:
    """Train a :class:`LinearProbe` of ``method`` (logistic, mean_diff, lda) on ``[n, d]`` activations and 0/1
    labels; ``info`` fills site/position/model/meta."""
    if method == "logistic":
        w, b = fit_logistic(x, y, C=C)
    elif method == "mean_diff":
        w, b = fit_mean_diff(x, y)
    elif method == "lda":
        w, b = fit_lda(x, y, shrinkage=shrinkage)
    else:
        raise ValueError(f"unknown probe method {method!r}; use one of {', '.join(METHODS)}")
    return LinearProbe(w, b, method, **info)
