"""Recipe: concept-space learning dynamics and hidden capabilities (Park et al., training-dynamics.md §2).

Tooling that is generic for any conditional generator ``generate(c, step) -> outputs``: concept classifiers trained
on real data of *every* combination (so measurement never depends on the model), each checkpoint's position in
concept space per prompt, accuracy on a held-out combination under plain prompting and under latent interventions
(over-prompting: the conditioning scaled past the training range), the elicitation gap and capability onsets.

The planted generator of the spec: ``o = sigmoid(kappa_t * W c - theta) + noise`` with ``c`` a 2-bit concept vector,
``W = diag(signal) @ [[1, -mix], [-mix, 1]]`` (composing both concepts partly cancels, so the held-out combination
(1, 1) needs a larger ``kappa_t * ||c||`` than the trained ones) and ``kappa_t`` growing with the training step.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import torch

from actlab.train.configs import ConceptConfig

Generator = Callable[[torch.Tensor, int], torch.Tensor]
"""``generate(c [n, k], step) -> outputs [n, k]``: the model's outputs for conditioning vectors at a checkpoint."""


def kappa(step: int, cfg: ConceptConfig) -> float:
    """The planted model's scale at ``step``: ``kappa_max * step / (step + tau)`` (grows, saturates)."""
    return cfg.kappa_max * step / (step + cfg.tau)


def planted_generator(cfg: ConceptConfig) -> Generator:
    """The spec's planted conditional generator (seeded output noise, fresh per call)."""
    w = torch.diag(torch.tensor(cfg.signal, dtype=torch.float64)) @ torch.tensor([[1.0, -cfg.mix], [-cfg.mix, 1.0]],
                                                                                  dtype=torch.float64)
    g = torch.Generator().manual_seed(cfg.seed)

    def generate(c: torch.Tensor, step: int) -> torch.Tensor:
        o = torch.sigmoid(kappa(step, cfg) * c.double() @ w.T - cfg.theta)
        return o + cfg.noise * torch.randn(o.shape, generator=g, dtype=torch.float64)

    return generate


class ConceptClassifiers:
    """One logistic-regression classifier per concept, trained on real samples of all combinations."""

    def __init__(self, real_x: torch.Tensor, real_c: torch.Tensor):
        from sklearn.linear_model import LogisticRegression

        if real_x.shape[0] != real_c.shape[0]:
            raise ValueError(f"real data has {real_x.shape[0]} samples but {real_c.shape[0]} concept labels")
        combos = {tuple(r) for r in real_c.long().tolist()}
        k = real_c.shape[1]
        if len(combos) < 2 ** k:
            raise ValueError(f"concept classifiers need real data of every combination ({2 ** k}); got {sorted(combos)}"
                             " (training them on the model's combinations only would make measurement model-dependent)")
        self.clfs = [LogisticRegression().fit(real_x.numpy(), real_c[:, j].long().numpy()) for j in range(k)]

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, k]``: probability that each concept is present."""
        import numpy as np

        return torch.from_numpy(np.stack([c.predict_proba(x.numpy())[:, 1] for c in self.clfs], 1))

    def accuracy(self, x: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction of samples whose every concept is classified as in ``target``."""
        pred = self.probs(x) > 0.5
        return float((pred == target.bool()[None]).all(1).double().mean())


def real_data(cfg: ConceptConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Real samples of every combination: the concept bits plus noise (what a fully trained model produces)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    c = torch.tensor([[a, b] for a in (0, 1) for b in (0, 1)], dtype=torch.float64).repeat(cfg.samples, 1)
    return c + cfg.noise * torch.randn(c.shape, generator=g, dtype=torch.float64), c


def onset(steps: list[int], acc: list[float], threshold: float) -> int | None:
    """The first step whose accuracy reaches ``threshold`` (None if none does)."""
    return next((s for s, a in zip(steps, acc) if a >= threshold), None)


def track_concepts(generate: Generator, clfs: ConceptClassifiers, steps: list[int], prompts: torch.Tensor,
                   target: torch.Tensor, modes: dict[str, float], samples: int) -> dict:
    """Per checkpoint: concept-space position (mean classifier probabilities) of every prompt, and the accuracy on
    the held-out ``target`` combination under each elicitation mode (``{name: conditioning scale}``)."""
    traj = {str(p): [] for p in prompts.long().tolist()}
    acc = {m: [] for m in modes}
    for s in steps:
        for p in prompts:
            traj[str(p.long().tolist())].append(clfs.probs(generate(p.expand(samples, -1), s)).mean(0).tolist())
        for m, scale in modes.items():
            acc[m].append(clfs.accuracy(generate(target.expand(samples, -1) * scale, s), target))
    return {"steps": steps, "trajectories": traj, "accuracy": acc}


def run_concepts(cfg: ConceptConfig) -> dict:
    """The planted study: trajectories, plain vs over-prompted accuracy on the held-out (1, 1), onsets, the
    elicitation gap per checkpoint, and per concept the first step its classifier turns on (signal order)."""
    gen = planted_generator(cfg)
    clfs = ConceptClassifiers(*real_data(cfg))
    steps = sorted({0, *[round(x) for x in torch.logspace(0, math.log10(cfg.steps), cfg.n_checkpoints).tolist()]})
    prompts = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.float64)
    target = torch.tensor([1.0, 1.0], dtype=torch.float64)
    modes = {"plain": 1.0, "over": cfg.over_scale}
    rep = track_concepts(gen, clfs, steps, prompts, target, modes, cfg.samples)
    acc = rep["accuracy"]
    rep["gap"] = [o - p for o, p in zip(acc["over"], acc["plain"])]
    rep["onset"] = {m: onset(steps, acc[m], cfg.threshold) for m in modes}
    first_on = {}
    for j, name in enumerate(("concept0", "concept1")):
        single = [[1, 0], [0, 1]][j]
        probs = [pos[j] for pos in rep["trajectories"][str(single)]]
        first_on[name] = next((s for s, p in zip(steps, probs) if p > 0.5), None)
    rep["first_on"] = first_on
    rep["config"] = asdict(cfg)
    p, o = rep["onset"]["plain"], rep["onset"]["over"]
    rep["checks"] = {"over_earlier": o is not None and (p is None or o < p),
                     "max_gap": max(rep["gap"])}
    if cfg.out:
        from actlab.train.report import plot_curves, write_json

        write_json(cfg.out, "concepts.json", rep)
        plot_curves(cfg.out, "concepts_accuracy.png", {m: (steps, acc[m]) for m in modes} | {"gap": (steps, rep["gap"])},
                    ylabel="held-out (1,1) accuracy", title="hidden capability: plain vs over-prompting", logx=True)
        plot_curves(cfg.out, "concepts_trajectory.png",
                    {k: ([v[0] for v in tr], [v[1] for v in tr]) for k, tr in rep["trajectories"].items()},
                    xlabel="P(concept 0)", ylabel="P(concept 1)", title="concept-space trajectories per prompt")
    return rep
