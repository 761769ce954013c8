"""Explain features: a sparse latent cache over a store or texts, activating / non-activating examples, logit
effects, LLM explainers (bundled SmolLM2 in-process, or any OpenAI-compatible endpoint), scorers of explanations
(detection, fuzzing, embedding, surprisal, intervention), the explain -> score pipeline and a Neuronpedia export.
Everything docs/explain.md uses is here."""
from actlab.explain.cache import CacheConfig, LatentCache, build_cache
from actlab.explain.effects import Promoted, cooccurrence, logit_effect, nearest_features, promoted_tokens
from actlab.explain.endpoint import EndpointClient, EndpointConfig, EndpointError, ResponseCache, read_audit
from actlab.explain.examples import (
                                     Example,
                                     ExampleConfig,
                                     ExampleSet,
                                     Runs,
                                     activating_windows,
                                     build_examples,
                                     neighbour_negatives,
                                     random_negatives,
                                     sample,
)
from actlab.explain.explainers import EndpointExplainer, Explainer, Explanation, ModelExplainer
from actlab.explain.intervention import InterventionScorer, latent_intervention, steered_generators
from actlab.explain.jobs import ExplainerConfig, ScoreConfig, make_explainer
from actlab.explain.metrics import auroc, balanced_accuracy, precision_recall_f1
from actlab.explain.neuronpedia import export_neuronpedia, read_batch
from actlab.explain.pipeline import (
                                     SelectConfig,
                                     explain_latents,
                                     load_explanations,
                                     load_scores,
                                     save_explanations,
                                     save_scores,
                                     score_explanations,
                                     select_latents,
                                     summary,
)
from actlab.explain.prompts import PromptConfig, explainer_messages, judge_messages, parse_explanation
from actlab.explain.scorers import (
                                     DetectionScorer,
                                     EmbeddingScorer,
                                     FuzzingScorer,
                                     Scorer,
                                     ScoreResult,
                                     fuzz_marks,
                                     minilm_embedder,
                                     random_marks,
)
from actlab.explain.serve import ChatServer
from actlab.explain.sources import (
                                     Chunk,
                                     DictionaryLatents,
                                     DirectionLatents,
                                     NeuronLatents,
                                     StoreRows,
                                     TensorRows,
                                     TextRows,
)
from actlab.explain.surprisal import SurprisalScorer, model_logprob
from actlab.explain.text import highlight, token_pieces

__all__ = [
                                     "CacheConfig",
                                     "ChatServer",
                                     "Chunk",
                                     "DetectionScorer",
                                     "DictionaryLatents",
                                     "DirectionLatents",
                                     "EmbeddingScorer",
                                     "EndpointClient",
                                     "EndpointConfig",
                                     "EndpointError",
                                     "EndpointExplainer",
                                     "Example",
                                     "ExampleConfig",
                                     "ExampleSet",
                                     "Explainer",
                                     "ExplainerConfig",
                                     "Explanation",
                                     "FuzzingScorer",
                                     "InterventionScorer",
                                     "LatentCache",
                                     "ModelExplainer",
                                     "NeuronLatents",
                                     "Promoted",
                                     "PromptConfig",
                                     "ResponseCache",
                                     "Runs",
                                     "ScoreConfig",
                                     "ScoreResult",
                                     "Scorer",
                                     "SelectConfig",
                                     "StoreRows",
                                     "SurprisalScorer",
                                     "TensorRows",
                                     "TextRows",
                                     "activating_windows",
                                     "auroc",
                                     "balanced_accuracy",
                                     "build_cache",
                                     "build_examples",
                                     "cooccurrence",
                                     "explain_latents",
                                     "explainer_messages",
                                     "export_neuronpedia",
                                     "fuzz_marks",
                                     "highlight",
                                     "judge_messages",
                                     "latent_intervention",
                                     "load_explanations",
                                     "load_scores",
                                     "logit_effect",
                                     "make_explainer",
                                     "minilm_embedder",
                                     "model_logprob",
                                     "nearest_features",
                                     "neighbour_negatives",
                                     "parse_explanation",
                                     "precision_recall_f1",
                                     "promoted_tokens",
                                     "random_marks",
                                     "random_negatives",
                                     "read_audit",
                                     "read_batch",
                                     "sample",
                                     "save_explanations",
                                     "save_scores",
                                     "score_explanations",
                                     "select_latents",
                                     "steered_generators",
                                     "summary",
                                     "token_pieces",
]
