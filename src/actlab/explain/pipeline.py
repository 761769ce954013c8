"""The explain -> score pipeline over a latent cache, and its two artifacts (docs/explain.md):

- ``explain.explanations``: cfg.json (cache, explainer, example and prompt settings) + records.jsonl, one record per
  latent: explanation, raw answer, prompt, the train examples' start rows.
- ``explain.scores``: cfg.json (explanations folder, scorers and their settings) + records.jsonl, one
  :class:`ScoreResult` per (latent, scorer), per-example records included for audit.

Scoring rebuilds each latent's examples from the cache with the explanation run's :class:`ExampleConfig` (seeded),
so the test examples are the ones held out of the explainer's prompt.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from actlab.artifact import load_artifact, save_artifact
from actlab.explain.cache import LatentCache
from actlab.explain.examples import ExampleConfig, build_examples
from actlab.explain.explainers import Explainer, Explanation
from actlab.explain.prompts import PromptConfig
from actlab.explain.scorers import Scorer, ScoreResult

log = logging.getLogger(__name__)
EXPLANATIONS = "explain.explanations"
SCORES = "explain.scores"
SCORERS = ("detection", "fuzzing", "embedding", "surprisal", "intervention")


@dataclass
class SelectConfig:
    """Which latents to explain (spec §1.2)."""

    min_examples: int = 200
    """Skip latents with fewer activating windows than this (the spec's 200; lower it for small caches)."""
    max_latents: int = 0
    """Explain at most this many latents, most frequent first (0: all that qualify)."""


def select_latents(cache: LatentCache, cfg: SelectConfig, latents: Sequence[int] | None = None) -> list[int]:
    """``latents`` as given (each checked to be in range), else the latents active on at least ``min_examples``
    tokens (a cheap upper bound of their windows; the exact count is checked when explaining), most active first."""
    if latents:
        bad = [j for j in latents if not 0 <= int(j) < cache.n_latents]
        if bad:
            raise IndexError(f"latents {bad} out of range: the cache at {cache.folder} holds {cache.n_latents}")
        return [int(j) for j in latents]
    order = torch.argsort(cache.count, descending=True, stable=True)
    keep = [int(j) for j in order.tolist() if int(cache.count[j]) >= max(1, cfg.min_examples)]
    return keep[: cfg.max_latents] if cfg.max_latents else keep


def explain_latents(cache: LatentCache, latents: Sequence[int], explainer: Explainer, tokenizer,
                    example_cfg: ExampleConfig | None = None, prompt_cfg: PromptConfig | None = None,
                    decoder: torch.Tensor | None = None, min_examples: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> list[Explanation]:
    """An explanation per latent from its training examples (latents with fewer than ``min_examples`` activating
    windows are skipped, logged)."""
    example_cfg, prompt_cfg = example_cfg or ExampleConfig(), prompt_cfg or PromptConfig()
    out = []
    for i, j in enumerate(latents):
        s = build_examples(cache, j, example_cfg, decoder)
        if s.n_candidates < max(1, min_examples) or not s.train:
            log.info("latent %d: %d activating windows (< %d); skipped", j, s.n_candidates, min_examples)
            continue
        neg = contrast_negatives(cache, j, s, example_cfg, prompt_cfg, decoder) if prompt_cfg.contrastive else []
        e = explainer.explain(s.train, tokenizer, prompt_cfg, neg)
        e.settings["train_starts"] = [x.start for x in s.train]
        e.settings["n_windows"] = s.n_candidates
        out.append(e)
        if progress:
            progress(i + 1, len(latents))
    return out


def contrast_negatives(cache: LatentCache, j: int, s, example_cfg: ExampleConfig, prompt_cfg: PromptConfig,
                       decoder: torch.Tensor | None = None) -> list:
    """Non-activating examples for the contrastive prompt, none overlapping the scorers' test negatives (drawn
    with another seed, overlapping windows dropped) - showing the explainer a test example would leak it."""
    alt = replace(example_cfg, seed=example_cfg.seed + 7919,
                  n_non_activating=prompt_cfg.n_contrastive + len(s.non_activating))
    taken = {r for x in s.non_activating for r in range(x.start, x.start + len(x.tokens))}
    out = [x for x in build_examples(cache, j, alt, decoder).non_activating
           if not taken.intersection(range(x.start, x.start + len(x.tokens)))]
    if not out:
        raise ValueError(f"latent {j}: no non-activating examples left for the contrastive prompt after holding out "
                         f"the test ones (a larger cache, or negatives='random')")
    return out[: prompt_cfg.n_contrastive]


def save_explanations(folder: str | Path, explanations: Sequence[Explanation], config: dict) -> Path:
    return save_artifact(folder, EXPLANATIONS, config, records=[asdict(e) for e in explanations])


def load_explanations(folder: str | Path) -> tuple[dict, list[Explanation]]:
    """(config, explanations) of an ``explain.explanations`` folder."""
    a = load_artifact(folder, EXPLANATIONS, tensors_file=None)
    return a.config, [Explanation(**r) for r in a.records]


def score_explanations(cache: LatentCache, explanations: Sequence[Explanation], scorers: dict[str, Scorer | Callable],
                       tokenizer, example_cfg: ExampleConfig | None = None,
                       decoder: torch.Tensor | None = None) -> list[ScoreResult]:
    """Every scorer on every explanation, with the latent's held-out test and non-activating examples.
    ``scorers`` maps a name to a Scorer, or to a factory ``latent -> Scorer`` (per-latent scorers: intervention)."""
    example_cfg = example_cfg or ExampleConfig()
    out = []
    for e in explanations:
        s = build_examples(cache, e.latent, example_cfg, decoder)
        for name, sc in scorers.items():
            scorer = sc if isinstance(sc, Scorer) else sc(e.latent)
            r = scorer.score(e.text, s.test, s.non_activating, tokenizer)
            r.latent = e.latent
            r.settings.setdefault("scorer_name", name)
            out.append(r)
    return out


def save_scores(folder: str | Path, results: Sequence[ScoreResult], config: dict) -> Path:
    return save_artifact(folder, SCORES, config, records=[asdict(r) for r in results])


def load_scores(folder: str | Path) -> tuple[dict, list[ScoreResult]]:
    """(config, results) of an ``explain.scores`` folder."""
    a = load_artifact(folder, SCORES, tensors_file=None)
    return a.config, [ScoreResult(**r) for r in a.records]


def summary(results: Sequence[ScoreResult]) -> dict[str, dict[str, Any]]:
    """Per scorer: number of latents scored and the mean of its headline value."""
    by: dict[str, list[float]] = {}
    for r in results:
        if r.value is not None:
            by.setdefault(r.scorer, []).append(float(r.value))
    return {k: {"n": len(v), "mean": sum(v) / len(v)} for k, v in sorted(by.items())}
