"""Probe metrics: AUROC (Mann-Whitney, ties counted half), bootstrap 95% intervals, balanced accuracy, Wilson
intervals for rates, and stratified k-fold splits. Plain torch/numpy so no family needs scikit-learn at run time."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


def _np(x: torch.Tensor | np.ndarray | list) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def check_labels(y: torch.Tensor | np.ndarray | list, what: str = "labels") -> np.ndarray:
    """0/1 labels as an int array; ValueError when a value is not 0/1 or only one class is present."""
    y = _np(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array of 0/1; got shape {list(y.shape)}")
    bad = set(np.unique(y).tolist()) - {0.0, 1.0}
    if bad:
        raise ValueError(f"{what} must be 0/1; got values {sorted(bad)[:5]}")
    n1 = int(y.sum())
    if n1 == 0 or n1 == len(y):
        raise ValueError(f"{what} hold one class only ({len(y)} x {int(y[0])}); a probe needs both 0 and 1")
    return y.astype(np.int64)


def auroc(scores: torch.Tensor | np.ndarray | list, y: torch.Tensor | np.ndarray | list) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted 1/2."""
    s, y = _np(scores), check_labels(y)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores for {len(y)} labels")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ss = s[order]
    i = 0
    while i < len(ss):   # average ranks over ties
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n1, n0 = int(y.sum()), int((1 - y).sum())
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


@dataclass
class Interval:
    """A point estimate with a 95% interval (``lo``, ``hi``) and how it was obtained."""

    value: float
    lo: float
    hi: float
    method: str = "bootstrap"

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def to_json(self) -> dict:
        return asdict(self)


def bootstrap_auroc(scores: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> Interval:
    """AUROC with a percentile bootstrap interval, resampling within each class (keeps both classes present)."""
    s, y = _np(scores), check_labels(y)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    s1, s0 = s[pos], s[neg]
    vals = np.empty(n_boot)
    for b in range(n_boot):
        a = s1[rng.integers(0, len(s1), len(s1))]
        c = s0[rng.integers(0, len(s0), len(s0))]
        c.sort()
        lt, le = np.searchsorted(c, a, "left"), np.searchsorted(c, a, "right")
        vals[b] = (lt + 0.5 * (le - lt)).sum() / (len(a) * len(c))
    q = (1 - level) / 2
    return Interval(auroc(s, y), float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q)), "bootstrap")


def wilson(k: int, n: int, level: float = 0.95) -> Interval:
    """A rate k/n with its Wilson score interval (well-behaved at 0 and 1, unlike the normal approximation)."""
    if n <= 0:
        raise ValueError(f"a rate needs n > 0 trials; got n={n}")
    z = {0.95: 1.959963984540054, 0.99: 2.5758293035489}.get(level) or float(
        torch.distributions.Normal(0, 1).icdf(torch.tensor(0.5 + level / 2)))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return Interval(p, max(0.0, c - h), min(1.0, c + h), "wilson")


def balanced_accuracy(pred: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (robust to class imbalance)."""
    p, y = _np(pred).astype(bool), check_labels(y).astype(bool)
    return float(0.5 * (p[y].mean() + (~p[~y]).mean()))


def stratified_folds(y: torch.Tensor | np.ndarray, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint test-index arrays covering every row, each class spread evenly (shuffled by ``seed``)."""
    y = check_labels(y)
    counts = np.bincount(y, minlength=2)
    if k < 2 or counts.min() < k:
        raise ValueError(f"{k}-fold cross-validation needs k >= 2 and at least k examples per class; "
                         f"got {counts[0]} negatives and {counts[1]} positives")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        for i, j in enumerate(idx):
            folds[i % k].append(int(j))
    return [np.sort(np.array(f)) for f in folds]
