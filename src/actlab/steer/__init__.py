"""Steering as a measured workflow: directions, application, refusal/harmfulness, GrAInS, SLA, MoTE, sweeps."""
from actlab.steer.apply import NormPreservingAdd, PromptAdd, ablate_everywhere, orthogonalize_model
from actlab.steer.directions import Direction, ExtractConfig, direction_from_acts, extract

__all__ = ["Direction", "ExtractConfig", "extract", "direction_from_acts", "NormPreservingAdd", "PromptAdd",
           "ablate_everywhere", "orthogonalize_model"]
