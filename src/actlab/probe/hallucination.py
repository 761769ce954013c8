"""Per-token hallucination detector (TruthPrInt, arXiv 2503.10602; probes.md §4): hidden states of labelled tokens
(object words marked truthful 0 / hallucinated 1 by character span), one probe per layer, the layer chosen by AUROC
on validation rows, the test AUROC with a bootstrap interval, and the truthful direction
``d_l = mean(h | truthful) - mean(h | hallucinated)``. Only labelled tokens are used (never every token)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.probe.linear import LinearProbe, fit_probe
from actlab.probe.metrics import Interval, auroc, bootstrap_auroc, check_labels

if TYPE_CHECKING:
    from actlab.models import Model

#: a labelled token span in a text: (char start, char end, label) with label 1 = hallucinated, 0 = truthful
Span = tuple[int, int, int]


def span_positions(model: Model, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                   which: str = "last") -> list[list[int]]:
    """Real-token index (0 = first token, BOS included) of each span's ``which`` ('first' or 'last') token."""
    if which not in ("first", "last"):
        raise ValueError(f"which={which!r}; use 'first' or 'last'")
    if len(spans) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
    out = []
    for i, (text, sp) in enumerate(zip(texts, spans)):
        offs = model.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        row = []
        for a, b, lab in sp:
            if not 0 <= a < b <= len(text) or lab not in (0, 1):
                raise ValueError(f"text {i}: span ({a}, {b}, {lab}) must satisfy 0 <= start < end <= {len(text)} "
                                 f"and label 0/1")
            idx = [j for j, (s, e) in enumerate(offs) if s < b and e > a and e > s]
            if not idx:
                raise ValueError(f"text {i}: no token covers characters {a}:{b} ({text[a:b]!r})")
            row.append(idx[0] if which == "first" else idx[-1])
        out.append(row)
    return out


def token_states(model: Model, texts: Sequence[str], spans: Sequence[Sequence[Span]], sites: str | Sequence[str], *,
                 which: str = "last", batch_size: int = 16) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``({site: [n, d]}, labels [n], text index [n])`` for every labelled span (row order: texts, then spans)."""
    sites = model.check_sites([sites] if isinstance(sites, str) else list(sites))
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to collect token states from")
    pos = span_positions(model, texts, spans, which)
    out: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        enc = model.tokenize(chunk)
        am = enc["attention_mask"].bool()
        real = am.long().cumsum(1) - 1
        acts = model.record(enc, sites=sites, dtype=torch.float32)
        for r, p in enumerate(pos[i:i + batch_size]):
            if p and max(p) >= int(am[r].sum()):
                raise ValueError(f"text {i + r}: span token {max(p)} beyond its {int(am[r].sum())} tokens")
            cols = [int((real[r] == j).logical_and(am[r]).nonzero()[0]) for j in p]
            for s in sites:
                out[s].append(acts[s][r, cols].cpu())
    labels = torch.tensor([lab for sp in spans for _, _, lab in sp])
    rows = torch.tensor([i for i, sp in enumerate(spans) for _ in sp])
    return {s: torch.cat(v) for s, v in out.items()}, labels, rows


def truthful_direction(x: torch.Tensor, y: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """``mean(x | truthful) - mean(x | hallucinated)`` (labels 1 = hallucinated)."""
    yy = torch.as_tensor(check_labels(y, "hallucination labels"))
    if len(yy) != len(x):
        raise ValueError(f"{len(x)} rows but {len(yy)} labels")
    return (x[yy == 0].float().mean(0) - x[yy == 1].float().mean(0))


@dataclass
class LayerScan:
    """Per-site validation AUROC of one probe per site, the chosen site, its probe and the test AUROC."""

    val_auroc: dict[str, float]
    best_site: str
    probe: LinearProbe
    test_auroc: Interval | None = None
    controls: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"val_auroc": self.val_auroc, "best_site": self.best_site,
                "test_auroc": self.test_auroc.to_json() if self.test_auroc else None, "controls": self.controls}


def scan_layers(train: dict[str, torch.Tensor], y_train: torch.Tensor, val: dict[str, torch.Tensor],
                y_val: torch.Tensor, *, test: dict[str, torch.Tensor] | None = None, y_test: torch.Tensor | None = None,
                method: str = "logistic", n_boot: int = 1000, seed: int = 0, **fit_kw: Any) -> LayerScan:
    """One ``method`` probe per site on ``train`` (score > 0 = hallucinated), pick the site with the best ``val``
    AUROC (ties: the earlier site), report ``test`` AUROC with a bootstrap interval and two controls at that site: the
    shuffled-label probe's test AUROC and the first site's test AUROC (an early-layer probe)."""
    if set(train) != set(val) or (test is not None and set(test) != set(train)):
        raise ValueError(f"train/val/test must cover the same sites; got {sorted(train)}, {sorted(val)}"
                         f"{', ' + str(sorted(test)) if test is not None else ''}")
    probes = {s: fit_probe(train[s], y_train, method, site=s, position="token", **fit_kw) for s in train}
    val_auc = {s: auroc(p.score(val[s]), y_val) for s, p in probes.items()}
    best = max(val_auc, key=lambda s: (val_auc[s], -list(train).index(s)))
    res = LayerScan(val_auc, best, probes[best])
    if test is not None:
        if y_test is None:
            raise ValueError("test activations given without y_test")
        res.test_auroc = bootstrap_auroc(probes[best].score(test[best]), y_test, n_boot=n_boot, seed=seed)
        g = torch.Generator().manual_seed(seed)
        ys = torch.as_tensor(y_train)[torch.randperm(len(y_train), generator=g)]
        shuf = fit_probe(train[best], ys, method, **fit_kw)
        first = next(iter(train))
        res.controls = {"shuffled_labels_test_auroc": auroc(shuf.score(test[best]), y_test),
                        "first_site": first, "first_site_test_auroc": auroc(probes[first].score(test[first]), y_test)}
    return res
