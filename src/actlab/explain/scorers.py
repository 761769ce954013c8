"""Scorers of explanations (spec §2): detection, fuzzing and embedding, on a ``Scorer`` base with a typed result.

Detection and fuzzing take a *judge* ``(explanation, example_text) -> bool | float`` (True / a probability that the
latent is active, or that the highlighting is correct): an LLM judge comes later, a stub judge tests the harness.
One example per judge call (no leakage between examples; recorded in ``settings``). Balanced accuracy, precision,
recall, F1, AUROC (when the judge returns probabilities) and accuracy per activation quantile are reported; each
judged example is kept in ``records`` for audit.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from actlab.explain.examples import Example
from actlab.explain.metrics import auroc, balanced_accuracy, precision_recall_f1

Judge = Callable[[str, str], "bool | float"]
Embedder = Callable[[list[str]], torch.Tensor]
FUZZ_FRACTION = 0.3
QUERY_PREFIX = "Retrieve sentences that could be related to the explanation. Explanation: "


@dataclass
class ScoreResult:
    """One scorer's verdict on one explanation of one latent."""

    scorer: str
    latent: int
    explanation: str
    n_activating: int
    n_non_activating: int
    balanced_accuracy: float | None
    """(TPR + TNR) / 2; None for scorers that only rank (embedding)."""
    precision: float | None
    recall: float | None
    f1: float | None
    auroc: float | None
    """None when the scorer gives no probabilities."""
    per_quantile: dict[str, float]
    """Accuracy per activation quantile of the activating examples ("q0" lowest) and on "non_activating"."""
    settings: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    """Per example: kind, quantile, the text shown, label, prediction / score."""
    value: float | None = None
    """The headline number: balanced accuracy (detection, fuzzing), AUROC (embedding, surprisal), mean delta
    surprisal in nats (intervention). Filled from the first two when not given."""

    def __post_init__(self) -> None:
        if self.value is None:
            self.value = self.balanced_accuracy if self.balanced_accuracy is not None else self.auroc


def _per_quantile(records: list[dict]) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for r in records:
        key = f"q{r['quantile']}" if r["label_active"] else "non_activating"
        groups.setdefault(key, []).append(r["pred"] == r["label"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


class Scorer:
    """Base: ``score(explanation, activating, non_activating, tokenizer) -> ScoreResult``."""

    name = "scorer"

    def score(self, explanation: str, activating: Sequence[Example], non_activating: Sequence[Example],
              tokenizer) -> ScoreResult:
        raise NotImplementedError

    def _classify(self, explanation: str, items: list[tuple[Example, str, bool]], judge: Judge,
                  settings: dict) -> ScoreResult:
        """Judge each (example, text shown, label) and summarise."""
        records = []
        for ex, text, label in items:
            out = judge(explanation, text)
            prob = float(out)
            records.append({"kind": ex.kind, "quantile": ex.quantile, "start": ex.start, "text": text,
                            "label": bool(label), "label_active": ex.kind == "activating", "prob": prob,
                            "pred": prob >= 0.5})
        labels = [r["label"] for r in records]
        preds = [r["pred"] for r in records]
        p, r, f1 = precision_recall_f1(labels, preds)
        probs = [r["prob"] for r in records]
        graded = any(x not in (0.0, 1.0) for x in probs)
        n_act = sum(r["label_active"] for r in records)
        latent = items[0][0].latent if items else -1
        return ScoreResult(self.name, latent, explanation, n_act, len(records) - n_act,
                           balanced_accuracy(labels, preds), p, r, f1, auroc(labels, probs) if graded else None,
                           _per_quantile(records), {"examples_per_prompt": 1, **settings}, records)


class DetectionScorer(Scorer):
    """The judge sees the explanation and one example without highlighting: is the latent active in it?"""

    name = "detection"

    def __init__(self, judge: Judge):
        self.judge = judge

    def score(self, explanation, activating, non_activating, tokenizer) -> ScoreResult:
        items = [(x, x.text(tokenizer), True) for x in activating]
        items += [(x, x.text(tokenizer), False) for x in non_activating]
        return self._classify(explanation, items, self.judge, {})


def fuzz_marks(ex: Example, fraction: float = FUZZ_FRACTION) -> list[bool]:
    """Tokens highlighted in a correct fuzzing example: activation > 0 and >= ``fraction`` x the example max."""
    m = ex.max_act
    return [a > 0 and a >= fraction * m for a in ex.acts]


def random_marks(n_tokens: int, n: int, rng: random.Random) -> list[bool]:
    """``n`` (at most ``n_tokens``) distinct random tokens highlighted."""
    on = set(rng.sample(range(n_tokens), min(n, n_tokens)))
    return [i in on for i in range(n_tokens)]


class FuzzingScorer(Scorer):
    """The judge sees the explanation and one example with highlighted tokens: is the highlighting correct?
    Correct: activating examples marked by :func:`fuzz_marks`. Incorrect: non-activating examples with
    ``n_incorrect = ceil(mean marked tokens per activating example)`` random tokens marked."""

    name = "fuzzing"

    def __init__(self, judge: Judge, fraction: float = FUZZ_FRACTION, seed: int = 0):
        self.judge, self.fraction, self.seed = judge, fraction, seed

    def n_incorrect(self, activating: Sequence[Example]) -> int:
        counts = [sum(fuzz_marks(x, self.fraction)) for x in activating]
        return max(1, math.ceil(sum(counts) / len(counts))) if counts else 1

    def score(self, explanation, activating, non_activating, tokenizer) -> ScoreResult:
        rng = random.Random(self.seed)
        k = self.n_incorrect(activating)
        items = [(x, x.text(tokenizer, fuzz_marks(x, self.fraction)), True) for x in activating]
        items += [(x, x.text(tokenizer, random_marks(len(x.tokens), k, rng)), False) for x in non_activating]
        return self._classify(explanation, items, self.judge, {"fraction": self.fraction, "n_incorrect": k})


class EmbeddingScorer(Scorer):
    """AUROC of the cosine between the explanation (as a retrieval query) and each example (as a document)."""

    name = "embedding"

    def __init__(self, embed: Embedder, query_prefix: str = QUERY_PREFIX):
        self.embed, self.query_prefix = embed, query_prefix

    def score(self, explanation, activating, non_activating, tokenizer) -> ScoreResult:
        exs = list(activating) + list(non_activating)
        texts = [x.text(tokenizer) for x in exs]
        e = self.embed([self.query_prefix + explanation] + texts).float()
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sims = (e[1:] @ e[0]).tolist()
        labels = [x.kind == "activating" for x in exs]
        records = [{"kind": x.kind, "quantile": x.quantile, "start": x.start, "text": t, "label": y,
                    "similarity": s} for x, t, y, s in zip(exs, texts, labels, sims)]
        latent = exs[0].latent if exs else -1
        return ScoreResult(self.name, latent, explanation, len(activating), len(non_activating), None, None, None,
                           None, auroc(labels, sims), {}, {"query_prefix": self.query_prefix}, records)


def minilm_embedder(model=None, batch_size: int = 32) -> Embedder:
    """Sentence embeddings from the bundled all-MiniLM-L6-v2 (``actlab.load_model("minilm-l6")``): mean of the
    last layer's token states over the attention mask, as sentence-transformers computes it."""
    if model is None:
        from actlab import load_model
        model = load_model("minilm-l6")
    site = f"blocks.{model.adapter.n_layers - 1}.resid_post"

    @torch.no_grad()
    def embed(texts: list[str]) -> torch.Tensor:
        outs = []
        for i in range(0, len(texts), batch_size):
            enc = model.tokenize(texts[i:i + batch_size], max_length=256)
            h = model.record(enc, [site])[site].float()
            m = enc["attention_mask"].to(h.device).float()[..., None]
            outs.append(((h * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu())
        return torch.cat(outs)
    return embed
