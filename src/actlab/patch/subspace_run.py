"""One subspace-patching experiment end to end (what ``actlab patch subspace`` runs), as a library call.

Move the corrupted run towards the clean one along a given direction (a tensor, a steer direction folder, a
safetensors file) or a subspace learned by DAS; report the normalised effect next to the whole-site patch and, where
the site has a single readout weight, the dormant-pathway illusion check.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actlab.artifact import folder_lock, save_artifact
from actlab.patch.common import Effect, MetricLike, make_pairs
from actlab.patch.subspace import (das, illusion_check, lm_score, lm_target_loss, load_basis, readout_weight,
                                   subspace_effect)

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

KIND = "patch.subspace"
EFFECT_JSON = "effect.json"
BASIS_FILE = "basis.safetensors"


@dataclass
class SubspaceReport:
    """``basis`` [d] or [k, d] patched at ``site``; ``effect`` / ``full`` (whole-site patch) scores; the illusion
    check of the first direction (``illusion``, a summary dict) when the site has one readout; DAS losses if learned;
    ``notes``: what a user should know (e.g. a direction made at another site)."""

    site: str
    basis: torch.Tensor
    effect: Effect
    full: Effect
    illusion: dict | None = None
    das_losses: list[float] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"site": self.site, "k": int(self.basis.shape[0]) if self.basis.dim() == 2 else 1,
               "base": self.effect.base, "source": self.effect.source, "patched": self.effect.patched,
               "normalized": self.effect.normalized, "full_patch_normalized": self.full.normalized,
               "notes": self.notes}
        if self.das_losses:
            out["das_loss"] = [self.das_losses[0], self.das_losses[-1]]
        if self.illusion is not None:
            out["illusion_check"] = self.illusion
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        """``effect.json`` + ``basis.safetensors`` (tensor ``direction``), an ``actlab.artifact`` folder."""
        with folder_lock(folder, what="writing a subspace report"):
            return save_artifact(folder, KIND, self.to_dict(), {"direction": self.basis.detach().float().cpu()},
                                 tensors_file=BASIS_FILE, cfg_file=EFFECT_JSON)


def subspace_experiment(m: Model, clean, corrupt, metric: MetricLike, site: str | None = None, *,
                        basis: torch.Tensor | str | os.PathLike | None = None, das_k: int = 0,
                        das_target: int | None = None, steps: int = 100, lr: float = 0.05, positions="last",
                        align: str = "strict", progress: bool = False) -> SubspaceReport:
    """Patch the corrupted run towards the clean one along ``basis`` (or a DAS subspace of ``das_k`` dims).

    ``basis``: a tensor [d] / [k, d], or a path read by ``load_basis`` (a steer direction folder gives its site when
    ``site`` is None). ``das_target``: the answer id DAS trains towards (cross-entropy at the last position).
    ``positions``: which positions are patched ('last', 'all', an index).
    """
    notes: list[str] = []
    if basis is not None and not isinstance(basis, torch.Tensor):
        basis_path = basis
        basis, dsite = load_basis(basis_path)
        if site is None:
            site = dsite
        elif dsite is not None and dsite != site:
            notes.append(f"the direction was made at {dsite}; patched at {site}")
        if site is None:
            raise ValueError(f"give a site: {basis_path} names no site")
    if site is None:
        raise ValueError("give a site to patch")
    pairs = make_pairs(m, clean, corrupt, align=align)
    base, source = pairs.inputs("corrupt"), pairs.inputs("clean")  # move the corrupted run towards clean
    losses = None
    if basis is None:
        if das_k < 1:
            raise ValueError("give a basis (tensor or direction file) or das_k >= 1 to learn one with DAS")
        if das_target is None:
            raise ValueError("DAS needs das_target (the answer id the patched run should predict)")
        res = das(m, base, source, site, lm_target_loss(das_target), k=das_k, steps=steps, lr=lr, positions=positions,
                  progress=progress)
        basis, losses = res.basis, res.losses
    basis = torch.as_tensor(basis).float()
    score = lm_score(metric)
    eff = subspace_effect(m, base, source, site, basis, score, positions=positions)
    full = subspace_effect(m, base, source, site, None, score, positions=positions)
    illusion = None
    try:
        W = readout_weight(m, site)
    except ValueError as e:
        notes.append(f"illusion check skipped: {e}")
    else:
        v = basis if basis.dim() == 1 else basis[0]
        acts = m.record(pairs.inputs("clean"), [site])[site]
        acts = torch.cat([acts, m.record(pairs.inputs("corrupt"), [site])[site]])
        rep = illusion_check(v, W, lambda d: subspace_effect(m, base, source, site, d, score,
                                                             positions=positions).normalized,
                             acts=acts.reshape(-1, acts.shape[-1]), full_effect=full.normalized)
        illusion = rep.summary()
    log.info("subspace patch at %s: normalised %.3f (whole site %.3f)", site, eff.normalized, full.normalized)
    return SubspaceReport(site, basis, eff, full, illusion, losses, notes)
