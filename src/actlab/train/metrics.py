"""Per-checkpoint metrics for the tracker: each is a callable ``metric(model) -> float | list | dict`` built from a
fixed probe set, measured with actlab's recordings and the public ``actlab.stats`` tools."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model

Metric = Callable[["Model"], "float | list[float] | dict"]


def _record(model: Model, ids: torch.Tensor, sites: list[str], batch_size: int) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    for i in range(0, len(ids), batch_size):
        rec = model.record(ids[i:i + batch_size], sites)
        for s in sites:
            out[s].append(rec[s])
    return out


def massive_metric(sites: Sequence[str], probe_ids: torch.Tensor, batch_size: int = 8) -> Metric:
    """Per site: median over probe sequences of the top |h| (``top1``) and of top1 / median|h| (``ratio``),
    as ``actlab.stats.LayerMassive`` defines them (statistics.md §1)."""
    from actlab.stats import LayerMassive

    sites = list(sites)

    def metric(model: Model) -> dict:
        recs = _record(model, probe_ids, sites, batch_size)
        top1, ratio = [], []
        for s in sites:
            acc = None
            for i, h in enumerate(recs[s]):
                acc = acc or LayerMassive(h.shape[-1])
                acc.update(h, probe_ids[i * batch_size:(i + 1) * batch_size])
            summ = acc.summary()
            top1.append(summ["top1_median"])
            ratio.append(summ["ratio_median"])
        return {"top1": top1, "ratio": ratio}

    return metric


def sparsity_metric(sites: Sequence[str], probe_ids: torch.Tensor, eps: float | None = None,
                    batch_size: int = 8) -> Metric:
    """Per site: mean over tokens of the fraction of active MLP units (``> 0``, or ``|a| > eps``), statistics.md §2."""
    from actlab.stats import active_fraction

    sites = list(sites)

    def metric(model: Model) -> list[float]:
        recs = _record(model, probe_ids, sites, batch_size)
        return [float(torch.cat([active_fraction(a, eps).flatten() for a in recs[s]]).mean()) for s in sites]

    return metric


def induction_metric(pattern_site: str, probe_aa: torch.Tensor, length: int, layout: str = "bhqk") -> Metric:
    """Per head of ``pattern_site``: mean attention from each token of the second copy of an ``[A A]`` probe to the
    token after its earlier occurrence (``layout`` 'bhqk' for raw patterns, 'bqhk' for canonical pattern sites)."""
    if layout not in ("bhqk", "bqhk"):
        raise ValueError(f"layout must be 'bhqk' or 'bqhk'; got {layout!r}")

    def metric(model: Model) -> list[float]:
        p = model.record(probe_aa, [pattern_site], stop_early=True)[pattern_site]
        if layout == "bqhk":
            p = p.transpose(1, 2)
        q = torch.arange(length, 2 * length)
        return p[:, :, q, q - length + 1].mean((0, 2)).tolist()

    return metric


def probe_metric(site: str, x_train, y_train, x_test, y_test, position: int | None = None) -> Metric:
    """Linear-probe accuracy on held-out data of the activation at ``site`` (``position``: one token of a
    sequence site; None: the activation as is, flattened per example)."""
    from actlab.train.probe import linear_probe_accuracy

    def feats(model: Model, x) -> torch.Tensor:
        a = model.record(x, [site])[site]
        if position is not None:
            a = a[:, position]
        return a.reshape(len(a), -1)

    def metric(model: Model) -> float:
        return linear_probe_accuracy(feats(model, x_train), y_train, feats(model, x_test), y_test)

    return metric


def variance_metric(sites: Sequence[str], inputs, features: dict[str, torch.Tensor],
                    position: int | None = None) -> Metric:
    """Representation biases over training (training-dynamics.md §6): per feature and site, the variance of the
    activation explained by the discrete feature (``actlab.stats.variance_explained``: between-class / total SS).
    ``features``: ``{name: labels [n]}`` for the ``n`` inputs; ``position``: one token of a sequence site (None:
    the activation as is, flattened per example)."""
    from actlab.stats import variance_explained

    sites = list(sites)
    for name, lab in features.items():
        if len(lab) != len(inputs):
            raise ValueError(f"feature {name!r} has {len(lab)} labels for {len(inputs)} inputs")

    def metric(model: Model) -> dict[str, list[float]]:
        rec = model.record(inputs, sites)
        acts = {s: (rec[s][:, position] if position is not None else rec[s]).reshape(len(inputs), -1) for s in sites}
        return {name: [variance_explained(acts[s], lab) for s in sites] for name, lab in features.items()}

    return metric


def loss_metric(loss_fn: Callable[[Model], torch.Tensor]) -> Metric:
    """The value of ``loss_fn(model)`` (evaluated without gradients)."""

    def metric(model: Model) -> float:
        with torch.no_grad():
            return float(loss_fn(model))

    return metric
