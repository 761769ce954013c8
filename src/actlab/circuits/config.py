"""Configuration of attribution graphs (no torch: the CLI derives its flags from it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GraphConfig:
    """How an attribution graph is built and pruned."""

    max_n_logits: int = 10
    """At most this many target logits (the most probable ones at the last position)."""
    desired_logit_prob: float = 0.95
    """Keep the top logits until their cumulative probability reaches this."""
    max_feature_nodes: int = 0
    """Compute rows for at most this many latents, most influential first (0: every active latent)."""
    batch_size: int = 64
    """Targets per transpose pass (memory ~ batch * positions * d_model * 4 bytes per layer)."""
    update_interval: int = 4
    """Batches between re-rankings of the pending latents by influence."""
    node_threshold: float = 0.8
    """Pruning: keep the nodes that carry this fraction of the total influence on the targets."""
    edge_threshold: float = 0.98
    """Pruning: keep the edges that carry this fraction of the total edge influence."""


@dataclass
class ValidateConfig:
    """How a graph is validated by ablation."""

    k: int = 10
    """Ablate the k most influential latent nodes, one at a time."""
    mode: str = "replacement"
    """'replacement' (downstream MLPs are transcoders + clean errors) or 'model' (the real model downstream)."""
    scale: float = 1.0
    """Fraction of each latent's activation removed (1: full ablation; small: the linear regime)."""


__all__ = ["GraphConfig", "ValidateConfig"]
