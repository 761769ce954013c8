"""Classification metrics of scorers: balanced accuracy, precision/recall/F1 and AUROC (ties counted half)."""
from __future__ import annotations

from collections.abc import Sequence


def confusion(labels: Sequence[bool], preds: Sequence[bool]) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)``."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    tp = sum(1 for y, p in zip(labels, preds) if y and p)
    fp = sum(1 for y, p in zip(labels, preds) if not y and p)
    tn = sum(1 for y, p in zip(labels, preds) if not y and not p)
    return tp, fp, tn, len(labels) - tp - fp - tn


def balanced_accuracy(labels: Sequence[bool], preds: Sequence[bool]) -> float:
    """``(TPR + TNR) / 2`` (a class with no examples counts as its rate being undefined: the other rate alone)."""
    tp, fp, tn, fn = confusion(labels, preds)
    rates = [tp / (tp + fn)] if tp + fn else []
    rates += [tn / (tn + fp)] if tn + fp else []
    if not rates:
        raise ValueError("balanced accuracy of zero examples")
    return sum(rates) / len(rates)


def precision_recall_f1(labels: Sequence[bool], preds: Sequence[bool]) -> tuple[float, float, float]:
    tp, fp, _, fn = confusion(labels, preds)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties 1/2); None without both classes."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    if not pos or not neg:
        return None
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))
