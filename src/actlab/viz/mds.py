"""Most discriminative stimuli (MDS) clustering of units (arXiv 2401.05342): an EM-like loop.

Stimulus step: for each cluster k optimise a stimulus ``x_k`` (on an L2 sphere) to maximise
``sum_{n in C_k} log softmax_k(r_n(x_1..x_K) / tau)``: its members respond more to it than to any other cluster's
stimulus. Assignment step: each unit joins ``argmax_k r_n(x_k)``. Empty clusters are removed; the loop stops when
the assignment no longer changes. Responses are normalised per unit (mean and std over reference stimuli), since
units have very different gains.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class MDSConfig:
    """Clusters, rounds and the stimulus optimiser."""

    n_clusters: int = 6
    """initial clusters (empty ones vanish, so start with more than you expect)."""
    rounds: int = 20
    """most EM rounds."""
    steps: int = 60
    """stimulus optimisation steps per round."""
    lr: float = 0.05
    """Adam learning rate of the stimuli."""
    tau: float = 0.5
    """softmax temperature over the clusters' stimuli."""
    radius: float = 1.0
    """L2 norm of every stimulus (the norm constraint)."""
    init: str = "random"
    """initial assignment: random, or kmeans (on the units' normalised responses to the reference stimuli)."""
    n_reference: int = 256
    """random reference stimuli for the per-unit normalisation (and the k-means init)."""
    seed: int = 0
    """seed of stimuli, references and init."""

    def __post_init__(self) -> None:
        if self.n_clusters < 1 or self.rounds < 1 or self.steps < 0 or self.lr <= 0 or self.tau <= 0:
            raise ValueError("n_clusters, rounds >= 1, steps >= 0, lr and tau > 0 are required")
        if self.init not in ("kmeans", "random"):
            raise ValueError(f"init must be kmeans or random, got {self.init!r}")
        if self.radius <= 0 or self.n_reference < 2:
            raise ValueError("radius > 0 and n_reference >= 2 are required")


@dataclass
class MDSResult:
    """``labels`` [units] (0..K-1), ``stimuli`` [K, ...], ``history`` (labels after each round), ``converged``."""

    labels: torch.Tensor
    stimuli: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)
    converged: bool = False


def _sphere(x: torch.Tensor, r: float) -> torch.Tensor:
    return x * (r / x.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *[1] * (x.dim() - 1))


class Normalised:
    """Per-unit standardised responses ``(r(x) - mean) / std`` with mean/std over reference stimuli."""

    def __init__(self, responses: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor):
        self.f = responses
        with torch.no_grad():
            r = responses(reference).float()
        self.reference_responses = r
        self.mean, self.std = r.mean(0), r.std(0).clamp_min(1e-8)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.f(x) - self.mean) / self.std


def stimulus_step(norm: Callable[[torch.Tensor], torch.Tensor], stim: torch.Tensor, labels: torch.Tensor,
                  cfg: MDSConfig) -> torch.Tensor:
    """Optimise all stimuli jointly: every unit's log-softmax (over stimuli) of its own cluster's stimulus."""
    x = stim.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    with torch.enable_grad():
        for _ in range(cfg.steps):
            r = norm(x)                                                   # [K, units]
            loss = -torch.log_softmax(r / cfg.tau, dim=0).gather(0, labels[None]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(_sphere(x, cfg.radius))
    return x.detach()


def assign(norm: Callable[[torch.Tensor], torch.Tensor], stim: torch.Tensor) -> torch.Tensor:
    """Each unit's cluster: the stimulus it responds to most (normalised response)."""
    with torch.no_grad():
        return norm(stim).argmax(0)


def mds_cluster(responses: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...],
                cfg: MDSConfig | None = None) -> MDSResult:
    """Cluster the units of ``responses(x [K, *shape]) -> [K, units]`` by their most discriminative stimuli."""
    cfg = cfg or MDSConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    ref = _sphere(torch.randn((cfg.n_reference, *shape), generator=gen), cfg.radius)
    norm = Normalised(responses, ref)
    n_units = norm.reference_responses.shape[1]
    k = min(cfg.n_clusters, n_units)
    if cfg.init == "kmeans":
        from sklearn.cluster import KMeans

        z = (norm.reference_responses - norm.mean) / norm.std
        labels = torch.as_tensor(KMeans(k, n_init=10, random_state=cfg.seed).fit_predict(z.T.double().numpy()))
    else:
        labels = torch.randint(0, k, (n_units,), generator=gen)
    labels = _compact(labels)
    stim = _sphere(torch.randn((int(labels.max()) + 1, *shape), generator=gen), cfg.radius)
    history, converged = [], False
    for _ in range(cfg.rounds):
        stim = stimulus_step(norm, stim, labels, cfg)
        new = assign(norm, stim)
        keep = torch.unique(new)
        stim, new = stim[keep], _compact(new)
        history.append(new)
        if len(new) == len(labels) and torch.equal(new, labels):
            converged = True
            break
        labels = new
    return MDSResult(labels, stim, history, converged)


def _compact(labels: torch.Tensor) -> torch.Tensor:
    """Relabel to 0..K-1 in order of first cluster id (drops empty clusters)."""
    return torch.unique(labels, return_inverse=True)[1]


def channel_responses(model, site: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``responses(x) -> [batch, units]`` for a model site: conv channels averaged over space, other sites
    flattened (to cluster an artificial network's channels with :func:`mds_cluster`)."""
    from actlab.viz.objectives import read_site

    def f(x: torch.Tensor) -> torch.Tensor:
        a = read_site(model, x, site)
        return a.mean((2, 3)) if a.dim() == 4 else a.reshape(len(a), -1)
    return f
