"""Library entry points behind ``actlab explain run|score``: build the explainer (bundled model or endpoint) and the
scorers named on the command line, run the pipeline over a cache, write the artifacts."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actlab.explain.cache import LatentCache
from actlab.explain.endpoint import EndpointConfig
from actlab.explain.examples import ExampleConfig
from actlab.explain.explainers import BUNDLED, EndpointExplainer, Explainer, ModelExplainer
from actlab.explain.pipeline import (
    SCORERS,
    SelectConfig,
    explain_latents,
    load_explanations,
    save_explanations,
    save_scores,
    score_explanations,
    select_latents,
    summary,
)
from actlab.explain.prompts import PromptConfig

log = logging.getLogger(__name__)
PROMPTS = ["The weather today is", "My favourite thing to do is", "In the city centre there",
           "She opened the letter and", "The main idea of the book is", "Yesterday I went to"]


@dataclass
class ExplainerConfig:
    """The LLM that explains (and, for scoring, judges)."""

    explainer: str = "bundled"
    """bundled (an actlab model in-process via its chat template) | endpoint (OpenAI-compatible server)."""
    explainer_model: str = BUNDLED
    """Model of the bundled explainer (a bundled name or HF folder with a chat template)."""
    max_tokens: int = 64
    """Tokens the explainer may write."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy, reproducible)."""

    def __post_init__(self) -> None:
        if self.explainer not in ("bundled", "endpoint"):
            raise ValueError(f"explainer must be bundled or endpoint; got {self.explainer!r}")


@dataclass
class ScoreConfig:
    """Which scorers run, and their models."""

    scorers: str = "detection,fuzzing"
    """Comma list of detection, fuzzing, embedding, surprisal, intervention."""
    embedding_model: str = "minilm-l6"
    """Embedding model of the embedding scorer."""
    surprisal_model: str = ""
    """Base LM of the surprisal / intervention scorers (default: the model the cache was made from)."""
    intervention_mode: str = "add"
    """add (the unit decoder direction x value at every position) | clamp (the latent set to value)."""
    intervention_value: float = 10.0
    """Steering strength of the intervention scorer."""
    intervention_tokens: int = 24
    """Tokens generated per prompt by the intervention scorer."""

    def names(self) -> list[str]:
        names = [s.strip() for s in self.scorers.split(",") if s.strip()]
        bad = [s for s in names if s not in SCORERS]
        if bad or not names:
            raise ValueError(f"unknown scorer(s) {bad}; choose from {', '.join(SCORERS)}")
        return names


def make_explainer(cfg: ExplainerConfig, endpoint: EndpointConfig | None = None, model=None) -> Explainer:
    """The explainer the config names (``model``: an already loaded model for the bundled explainer)."""
    if cfg.explainer == "endpoint":
        return EndpointExplainer(endpoint or EndpointConfig(), cfg.max_tokens, cfg.temperature)
    if model is None:
        from actlab import load_model
        model = load_model(cfg.explainer_model)
    return ModelExplainer(model, cfg.max_tokens, cfg.temperature)


def run_explain(cache_dir: str, out: str, select: SelectConfig, example_cfg: ExampleConfig,
                prompt_cfg: PromptConfig, explainer: Explainer, tokenizer, decoder=None,
                latents: list[int] | None = None) -> list:
    """Explain the selected latents of a cache and write an ``explain.explanations`` folder."""
    cache = LatentCache(cache_dir)
    chosen = select_latents(cache, select, latents)
    if not chosen:
        raise ValueError(f"no latent of {cache_dir} fires on >= {select.min_examples} tokens; lower --min-examples")
    exps = explain_latents(cache, chosen, explainer, tokenizer, example_cfg, prompt_cfg, decoder,
                           1 if latents else select.min_examples)
    save_explanations(out, exps, {"cache": str(Path(cache_dir).resolve()), "explainer": explainer.name,
                                  "examples": asdict(example_cfg), "prompt": asdict(prompt_cfg),
                                  "select": asdict(select), "latents": chosen})
    return exps


def make_scorers(cfg: ScoreConfig, judge: Explainer | None, cache: LatentCache, tokenizer_model=None,
                 dictionary=None) -> dict[str, Any]:
    """Scorers by name: detection / fuzzing judged by ``judge``; embedding (MiniLM); surprisal and intervention on
    ``tokenizer_model`` (the base LM); intervention steers ``dictionary``'s latents at its site."""
    from actlab.explain.intervention import InterventionScorer, latent_intervention, steered_generators
    from actlab.explain.scorers import DetectionScorer, EmbeddingScorer, FuzzingScorer, minilm_embedder
    from actlab.explain.surprisal import SurprisalScorer, model_logprob

    out: dict[str, Any] = {}
    for name in cfg.names():
        if name in ("detection", "fuzzing"):
            if judge is None:
                raise ValueError(f"the {name} scorer needs a judge LLM (--explainer bundled or endpoint)")
            out[name] = (DetectionScorer if name == "detection" else FuzzingScorer)(judge.judge(name))
        elif name == "embedding":
            from actlab import load_model
            out[name] = EmbeddingScorer(minilm_embedder(load_model(cfg.embedding_model)))
        elif tokenizer_model is None:
            raise ValueError(f"the {name} scorer needs a base LM: give --surprisal-model (or a cache that names "
                             f"its model)")
        elif name == "surprisal":
            out[name] = SurprisalScorer(model_logprob(tokenizer_model))
        else:
            if dictionary is None:
                raise ValueError("the intervention scorer needs the cache's dictionary (a cache of an SAE)")
            m, lp = tokenizer_model, model_logprob(tokenizer_model)

            def factory(j, m=m, lp=lp):
                iv = latent_intervention(dictionary, j, cfg.intervention_mode, cfg.intervention_value)
                plain, steered = steered_generators(m, dictionary.cfg.site, iv, cfg.intervention_tokens)
                return InterventionScorer(plain, steered, lp, PROMPTS, latent=j,
                                          settings={"mode": cfg.intervention_mode, "value": cfg.intervention_value})
            out[name] = factory
    return out


def run_score(explanations_dir: str, out: str, cfg: ScoreConfig, judge: Explainer | None, tokenizer,
              base_model=None, dictionary=None, decoder=None) -> list:
    """Score an ``explain.explanations`` folder and write an ``explain.scores`` folder."""
    conf, exps = load_explanations(explanations_dir)
    cache = LatentCache(conf["cache"])
    example_cfg = ExampleConfig(**conf["examples"])
    scorers = make_scorers(cfg, judge, cache, base_model, dictionary)
    results = score_explanations(cache, exps, scorers, tokenizer, example_cfg, decoder)
    save_scores(out, results, {"explanations": str(Path(explanations_dir).resolve()), "cache": conf["cache"],
                               "judge": judge.name if judge is not None else None, "score": asdict(cfg),
                               "examples_per_prompt": 1, "summary": summary(results)})
    return results
