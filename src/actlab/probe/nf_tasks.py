"""Neurofeedback tasks on a model (probes.md §3): a seeded train/held-out split of labelled sentences, target axes
fitted on the train split (the logistic-regression axis of the dataset label, principal components), labels from
each sentence's own projection binarised at the train split's median, then reporting (label-token log-probabilities
of held-out sentences after N in-context examples: AUROC and accuracy with intervals), explicit control (the model
writes a sentence for label 0 or 1; projection of its own states on what it wrote) and implicit control (the model
reads a given sentence as its answer to "write a sentence with label t"; projection of its states on it), scored by
Cohen's d between targets with a bootstrap interval."""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actlab.probe.acts import probe_acts
from actlab.probe.metrics import Interval, bootstrap_auroc, wilson
from actlab.probe.neurofeedback import effect_size, lr_axis, median_labels, pca_axes, project
from actlab.probe.nf_prompts import control_prompts, report_prompts, sample_context
from actlab.probe.nf_score import label_logprobs, sample_with_states, span_states

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class NFSetup:
    """Sentences, their pooled states at ``site``, the split, and per axis name: the unit axis, every sentence's
    projection, its label (train: exactly balanced at the train median; held out: projection > that median) and the
    threshold; ``explained``: the variance ratio of each PC axis on the train split."""

    texts: list[str]
    y_data: torch.Tensor
    states: torch.Tensor
    train: list[int]
    test: list[int]
    site: str
    pooling: str
    axes: dict[str, torch.Tensor] = field(default_factory=dict)
    proj: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    threshold: dict[str, float] = field(default_factory=dict)
    explained: dict[str, float] = field(default_factory=dict)


def split_indices(y: Sequence[int] | torch.Tensor, n_test: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) indices, the held-out set stratified by the dataset label (n_test // 2 per class)."""
    y = [int(v) for v in y]
    rng = random.Random(seed)
    test: list[int] = []
    for c in (0, 1):
        idx = [i for i, v in enumerate(y) if v == c]
        k = n_test // 2 + (c == 1) * (n_test % 2)
        if k >= len(idx):
            raise ValueError(f"n_test={n_test} leaves no train sentence of dataset label {c} ({len(idx)} in all)")
        test += rng.sample(idx, k)
    test.sort()
    held = set(test)
    return [i for i in range(len(y)) if i not in held], test


def nf_labels(proj: torch.Tensor, train: Sequence[int]) -> tuple[torch.Tensor, float]:
    """(labels of every row, threshold): the train rows binarised at their own median (exactly balanced), every
    other row by ``proj > threshold`` with the threshold midway between the train halves."""
    tr = proj[list(train)]
    y_tr = median_labels(tr)
    thr = float((tr[y_tr == 0].max() + tr[y_tr == 1].min()) / 2)
    y = (proj > thr).long()
    y[list(train)] = y_tr
    return y, thr


def nf_setup(model: Model, texts: Sequence[str], y_data: Sequence[int], site: str, *, pooling: str = "mean",
             n_test: int = 32, pcs: Sequence[int] = (1, 2, 32), seed: int = 0, C: float = 1.0,
             states: torch.Tensor | None = None) -> NFSetup:
    """Split, sentence states (``states`` if given, else ``probe_acts`` with ``pooling``), the 'lr' axis and
    'pc<k>' axes fitted on the train split only, projections and labels."""
    texts = list(texts)
    if len(texts) != len(y_data):
        raise ValueError(f"{len(texts)} sentences but {len(y_data)} dataset labels")
    train, test = split_indices(y_data, n_test, seed)
    h = states if states is not None else probe_acts(model, texts, site, position=pooling)[site]
    y = torch.as_tensor(list(y_data)).long()
    s = NFSetup(texts, y, h.float(), train, test, site, pooling)
    s.axes["lr"] = lr_axis(h[train], y[train], C=C)
    if pcs:
        if max(pcs) > min(len(train) - 1, h.shape[1]):
            raise ValueError(f"pc{max(pcs)} needs more train sentences than {len(train)} (or a wider site)")
        ax, var = pca_axes(h[train], max(pcs))
        for k in pcs:
            s.axes[f"pc{k}"], s.explained[f"pc{k}"] = ax[k - 1], float(var[k - 1])
    for name, a in s.axes.items():
        s.proj[name] = project(h, a)
        s.labels[name], s.threshold[name] = nf_labels(s.proj[name], train)
    return s


def _ctx(setup: NFSetup, axis: str, n: int, seed: int, shuffled: bool) -> list[tuple[str, int]]:
    rng = random.Random(seed * 100_003 + n)
    idx = sample_context(setup.train, setup.labels[axis], n, rng)
    lab = [int(setup.labels[axis][i]) for i in idx]
    if shuffled:
        rng.shuffle(lab)
    return [(setup.texts[i], y) for i, y in zip(idx, lab)]


@dataclass
class ReportPoint:
    """Reporting after ``n_shots`` examples (context seed ``seed``): AUROC of ``score = logp(1) - logp(0)`` against
    the held-out labels, accuracy of ``score > 0``, and the rate of answering 1."""

    n_shots: int
    seed: int
    auroc: Interval
    accuracy: Interval
    rate_1: float
    scores: list[float]


def nf_reporting(model: Model, setup: NFSetup, axis: str, n_shots: Sequence[int] = (0, 4, 16, 64),
                 seeds: Sequence[int] = (0, 1, 2), *, fmt: str = "chat", shuffled: bool = False, n_boot: int = 1000,
                 batch_size: int = 8) -> list[ReportPoint]:
    """Reporting on the held-out sentences; ``shuffled`` permutes the context labels (a control at chance)."""
    y = setup.labels[axis][setup.test]
    queries = [setup.texts[i] for i in setup.test]
    out = []
    for n in n_shots:
        for seed in seeds:
            p = report_prompts(model.tokenizer, _ctx(setup, axis, n, seed, shuffled), queries, fmt)
            lp = label_logprobs(model, p.prefix, p.suffixes, p.label_ids, batch_size)
            sc = lp[:, 1] - lp[:, 0]
            pred = (sc > 0).long()
            out.append(ReportPoint(n, seed, bootstrap_auroc(sc, y, n_boot=n_boot, seed=seed),
                                   wilson(int((pred == y).sum()), len(y)), float(pred.float().mean()), sc.tolist()))
    return out


def bootstrap_effect(p1: torch.Tensor, p0: torch.Tensor, *, paired: bool = False, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> Interval:
    """Cohen's d of ``p1`` vs ``p0`` with a percentile bootstrap interval (pairs resampled together if ``paired``)."""
    d = effect_size(p1, p0)
    rng = np.random.default_rng(seed)
    a, b = p1.double(), p0.double()
    vals = []
    for _ in range(n_boot):
        i = torch.from_numpy(rng.integers(0, len(a), len(a)))
        j = i if paired else torch.from_numpy(rng.integers(0, len(b), len(b)))
        v = effect_size(a[i], b[j])
        if np.isfinite(v):   # a resample of identical values has no spread
            vals.append(v)
    q = (1 - level) / 2
    return Interval(d, float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q)), "bootstrap")


def permutation_p(p1: torch.Tensor, p0: torch.Tensor, *, paired: bool = False, n_perm: int = 2000,
                  seed: int = 0) -> float:
    """Two-sided permutation p-value of a target effect: target labels permuted (``paired``: the sign of each pair's
    difference flipped), statistic |mean difference|; robust where a bootstrap of a few samples is not."""
    rng = np.random.default_rng(seed)
    a, b = p1.double().numpy(), p0.double().numpy()
    if paired:
        diff = a - b
        obs = abs(diff.mean())
        null = np.abs((diff[None] * rng.choice([-1.0, 1.0], (n_perm, len(diff)))).mean(1))
    else:
        both, k = np.concatenate([a, b]), len(a)
        obs = abs(a.mean() - b.mean())
        perm = np.argsort(rng.random((n_perm, len(both))), axis=1)
        x = both[perm]
        null = np.abs(x[:, :k].mean(1) - x[:, k:].mean(1))
    return float((1 + (null >= obs - 1e-12).sum()) / (n_perm + 1))


@dataclass
class ControlPoint:
    """Control after ``n_shots`` examples: Cohen's d of the projections under target 1 vs target 0 (interval),
    the two means, the rows per target, the permutation p-value, and (explicit) the texts written and the fraction of
    them whose standalone label equals the target."""

    n_shots: int
    seed: int
    d: Interval
    mean_1: float
    mean_0: float
    n: tuple[int, int]
    p: float = 1.0
    label_match: float | None = None
    texts: dict[str, list[str]] | None = None


def _stop_ids(tok: Any) -> list[int]:
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    end = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else None
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    return ids + ([end] if end is not None else []) + (nl if len(nl) == 1 else [])


def nf_implicit(model: Model, setup: NFSetup, axis: str, n_shots: Sequence[int] = (0, 16, 64),
                seeds: Sequence[int] = (0,), *, n_given: int = 16, n_boot: int = 1000,
                batch_size: int = 8) -> list[ControlPoint]:
    """Implicit control: the held-out sentences (first ``n_given``) teacher-forced as the answer to "write a sentence
    with label t"; d of the projection of their pooled in-context states, paired by sentence."""
    given = [setup.texts[i] for i in setup.test[:n_given]]
    out = []
    for n in n_shots:
        for seed in seeds:
            ex = _ctx(setup, axis, n, seed, False)
            p0, p1 = (control_prompts(model.tokenizer, ex, t, given) for t in (0, 1))
            st = span_states(model, p0.prefix, p0.suffixes + p1.suffixes, p0.spans + p1.spans, setup.site,
                             setup.pooling, batch_size)
            pr = project(st, setup.axes[axis])
            a, b = pr[len(given):], pr[:len(given)]
            out.append(ControlPoint(n, seed, bootstrap_effect(a, b, paired=True, n_boot=n_boot, seed=seed),
                                    float(a.mean()), float(b.mean()), (len(a), len(b)),
                                    permutation_p(a, b, paired=True, seed=seed)))
    return out


def nf_explicit(model: Model, setup: NFSetup, axis: str, n_shots: Sequence[int] = (0, 16, 64),
                seeds: Sequence[int] = (0,), *, n_samples: int = 8, max_new_tokens: int = 24,
                temperature: float = 0.7, n_boot: int = 1000) -> list[ControlPoint]:
    """Explicit control: ``n_samples`` sentences sampled per target; d of the projection of the states the model had
    while writing them; ``label_match``: the fraction whose standalone projection falls on the target's side."""
    tok = model.tokenizer
    out = []
    for n in n_shots:
        for seed in seeds:
            ex = _ctx(setup, axis, n, seed, False)
            p0, p1 = (control_prompts(tok, ex, t) for t in (0, 1))
            keep, toks, st = sample_with_states(model, p0.prefix, p0.suffixes * n_samples + p1.suffixes * n_samples,
                                                setup.site, max_new_tokens=max_new_tokens, temperature=temperature,
                                                stop_ids=_stop_ids(tok), pooling=setup.pooling, seed=seed)
            tgt = torch.tensor([int(i >= n_samples) for i in keep])
            pr = project(st, setup.axes[axis])
            texts = [tok.decode(t, skip_special_tokens=True).strip() or "." for t in toks]
            alone = project(probe_acts(model, texts, setup.site, position=setup.pooling)[setup.site],
                            setup.axes[axis])
            match = float(((alone > setup.threshold[axis]).long() == tgt).float().mean())
            a, b = pr[tgt == 1], pr[tgt == 0]
            if min(len(a), len(b)) < 2:
                raise ValueError(f"explicit control kept {len(a)} / {len(b)} samples per target; need >= 2")
            out.append(ControlPoint(n, seed, bootstrap_effect(a, b, n_boot=n_boot, seed=seed), float(a.mean()),
                                    float(b.mean()), (len(a), len(b)), permutation_p(a, b, seed=seed), match,
                                    {"1": [t for t, g in zip(texts, tgt) if g == 1],
                                     "0": [t for t, g in zip(texts, tgt) if g == 0]}))
    return out
