"""Sparse connectivity tools shared by two recipes: magnitude masks and iterative magnitude pruning with rewinding
(lottery-ticket checks of the random-teacher student, training-dynamics.md §3) and prune-and-regrow rewiring at a
fixed sparsity (SHARP's sparse dynamic connectivity, §4). Masks are boolean tensors keyed by parameter name; only
weight matrices (``dim >= 2``) are masked."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


def prunable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The module's weight matrices (parameters with ``dim >= 2``), by name."""
    return {n: p for n, p in module.named_parameters() if p.dim() >= 2}


def _check(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    bad = [n for n in masks if n not in params or masks[n].shape != params[n].shape]
    if bad:
        raise KeyError(f"masks {bad[:5]} name no parameter of that shape; parameters: {sorted(params)[:8]}")


def magnitude_masks(params: Mapping[str, torch.Tensor], sparsity: float,
                    masks: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Per tensor, keep the ``round((1 - sparsity) * numel)`` entries of largest ``|w|`` (ties: lower flat index
    first); entries already pruned in ``masks`` are never kept again."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity}")
    if masks is not None:
        _check(params, masks)
    out = {}
    for n, w in params.items():
        score = w.detach().abs().flatten().double()
        if masks is not None and n in masks:
            score = torch.where(masks[n].flatten(), score, torch.full_like(score, -1.0))
        keep = round((1.0 - sparsity) * score.numel())
        order = torch.sort(-score, stable=True).indices[:keep]
        m = torch.zeros(score.numel(), dtype=torch.bool, device=w.device)
        m[order] = True
        out[n] = m.view_as(w)
    return out


def random_masks(params: Mapping[str, torch.Tensor], sparsity: float, generator: torch.Generator) -> Masks:
    """Per tensor, a uniformly random mask keeping ``round((1 - sparsity) * numel)`` entries."""
    return magnitude_masks({n: torch.rand(w.shape, generator=generator) for n, w in params.items()}, sparsity)


@torch.no_grad()
def apply_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place."""
    params = dict(module.named_parameters())
    _check(params, masks)
    for n, m in masks.items():
        params[n].mul_(m)


def mask_grads(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights (call between ``backward`` and the optimizer step; with Adam also
    ``apply_masks`` after the step, since moment estimates can move a zero-gradient weight)."""
    params = dict(module.named_parameters())
    for n, m in masks.items():
        if params[n].grad is not None:
            params[n].grad.mul_(m)


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked-out entries over all masked tensors."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def iterative_magnitude_pruning(module: nn.Module, train: Callable[[nn.Module, Masks], None], rounds: int,
                                rate: float = 0.2, rewind: Mapping[str, torch.Tensor] | None = None
                                ) -> list[Masks]:
    """Lottery-ticket IMP: ``rounds`` times, ``train(module, masks)`` (the caller keeps pruned weights at zero, e.g.
    with ``mask_grads``/``apply_masks``), prune ``rate`` of the remaining weights of each matrix by magnitude, and
    rewind the module to ``rewind`` (default: its state at the call, i.e. the init) with the new mask applied.
    Returns the masks after each round (round k: sparsity ``1 - (1 - rate)^k``); the module ends rewound and masked."""
    if rounds < 1 or not 0.0 < rate < 1.0:
        raise ValueError(f"need rounds >= 1 and 0 < rate < 1; got rounds={rounds}, rate={rate}")
    start = {k: v.detach().clone() for k, v in (rewind or module.state_dict()).items()}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable(module).items()}
    history = []
    for k in range(1, rounds + 1):
        apply_masks(module, masks)
        train(module, masks)
        masks = magnitude_masks(prunable(module), 1.0 - (1.0 - rate) ** k, masks)
        module.load_state_dict(start)
        apply_masks(module, masks)
        history.append({n: m.clone() for n, m in masks.items()})
    return history


@torch.no_grad()
def prune_and_regrow(module: nn.Module, masks: Masks, fraction: float, generator: torch.Generator) -> Masks:
    """One rewiring step at fixed sparsity (SET-style): per masked matrix, drop ``round(fraction * active)`` active
    weights of smallest ``|w|`` and regrow as many at uniformly random inactive positions, starting at zero. The
    number of active weights per matrix is unchanged. Returns the new masks (the module's weights are updated)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    params = dict(module.named_parameters())
    _check(params, masks)
    out = {}
    for n, m in masks.items():
        w, flat = params[n], m.flatten().clone()
        active = flat.nonzero().flatten()
        k = min(round(fraction * len(active)), int((~flat).sum()))
        if k == 0:
            out[n] = m.clone()
            continue
        mag = w.detach().abs().flatten()[active].double()
        drop = active[torch.sort(mag, stable=True).indices[:k]]
        inactive = (~flat).nonzero().flatten()
        grow = inactive[torch.randperm(len(inactive), generator=generator)[:k]]
        flat[drop] = False
        flat[grow] = True
        out[n] = flat.view_as(m)
        w.view(-1)[drop] = 0.0
        w.view(-1)[grow] = 0.0               # regrown connections start at zero
    return out
