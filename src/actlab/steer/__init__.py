"""Steering as a measured workflow: directions, application, refusal/harmfulness, GrAInS, VISTA (SLA + context
steering vector), MoTE, sweeps and their scorers. Everything docs/steer.md uses is importable from here."""
from actlab.steer.apply import (
                                NormPreservingAdd,
                                PromptAdd,
                                ablate_everywhere,
                                ablation_sites,
                                orthogonalize_,
                                orthogonalize_model,
)
from actlab.steer.directions import (
                                Direction,
                                ExtractConfig,
                                collect,
                                direction_from_acts,
                                extract,
                                logistic_probe,
                                massive_channels,
                                require_finite,
)
from actlab.steer.evaluate import (
                                EmbeddingScorer,
                                KeywordScorer,
                                Perplexity,
                                ProbeScorer,
                                completion_perplexity,
                                kl_on_neutral,
)
from actlab.steer.grains import GrainsConfig, GrainsResult, attribute, grains, response_logprob
from actlab.steer.moefy import moefied, moefy
from actlab.steer.mote import FTRI, ExpertSwitch, ftri, routing_frequencies, switch
from actlab.steer.refusal import (
                                HarmRefusal,
                                harm_refusal_directions,
                                instruction_positions,
                                inversion_rates,
                                is_refusal,
                                load_instructions,
                                refusal_rate,
                                separation,
                                steer_refusal,
)
from actlab.steer.sla import (
                                ContextSteer,
                                SelfLogitsAugmentation,
                                early_logits,
                                sla_generate,
                                sla_logits,
                                vsv_vectors,
)
from actlab.steer.sweep import SweepConfig, SweepResult, SweepRow, load_sweep, sweep

__all__ = [
    "FTRI", "ContextSteer", "Direction", "EmbeddingScorer", "ExpertSwitch", "ExtractConfig", "GrainsConfig",
    "GrainsResult", "HarmRefusal", "KeywordScorer", "NormPreservingAdd", "Perplexity", "ProbeScorer", "PromptAdd",
    "SelfLogitsAugmentation", "SweepConfig", "SweepResult", "SweepRow", "ablate_everywhere", "ablation_sites",
    "attribute", "collect", "completion_perplexity", "direction_from_acts", "early_logits", "extract", "ftri",
    "grains", "harm_refusal_directions", "instruction_positions", "inversion_rates", "is_refusal", "kl_on_neutral",
    "load_instructions", "load_sweep", "logistic_probe", "massive_channels", "moefied", "moefy", "orthogonalize_", "orthogonalize_model",
    "refusal_rate", "require_finite", "response_logprob", "routing_frequencies", "separation", "sla_generate",
    "sla_logits", "steer_refusal", "sweep", "switch", "vsv_vectors",
]
