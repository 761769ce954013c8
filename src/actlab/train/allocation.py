"""Unit allocation to tasks for SHARP's sparse connectivity (training-dynamics.md §4; the NISPA-style mechanism of
the authors' code, ``BurakGurbuz97/SHARP-Continual-Learning``, ``Source/architecture.py`` and ``Source/rewire.py``).

Every hidden unit has an age: 0 = plastic (free for new tasks), 1 = allocated to the current episode, k >= 2 =
allocated k - 1 episodes ago. At the start of each training phase the units of a layer that carry ``coverage`` of
the layer's total activation on the new task's data are allocated (among the plastic and current ones; the rest of
those go back to plastic). Connections from plastic units into allocated or older units are dropped and as many are
regrown into plastic units (from any source, starting at zero), so an allocated unit only ever reads units at least
as old as itself. Units older than ``stm_tasks + 1`` episodes (their classes are no longer replayed) are frozen:
their incoming weights and biases get zero gradient. A frozen unit therefore computes the same function of the input
for the rest of training: what later tasks learn cannot overwrite it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Masks = dict[str, torch.Tensor]


class UnitAllocation:
    """Ages of the hidden units of a feed-forward chain of linear layers ``layers`` = ``[(weight_name, bias_name),
    ...]`` (layer ``i``'s weight is ``[units_i, units_{i-1}]``; layer 0 reads the inputs, which are never plastic)."""

    def __init__(self, layers: Sequence[tuple[str, str]], units: Sequence[int], stm_tasks: int = 1):
        if len(layers) != len(units) or not layers:
            raise ValueError(f"need one unit count per layer; got {len(layers)} layers and {len(units)} counts")
        if stm_tasks < 0:
            raise ValueError(f"stm_tasks must be >= 0; got {stm_tasks}")
        self.layers, self.stm_tasks = list(layers), stm_tasks
        self.age = [torch.zeros(n, dtype=torch.long) for n in units]

    def frozen(self, i: int) -> torch.Tensor:
        """Boolean mask of layer ``i``'s frozen units (allocated more than ``stm_tasks + 1`` episodes ago)."""
        return self.age[i] > self.stm_tasks + 1

    def counts(self) -> list[dict[str, int]]:
        """Per layer: plastic, current (allocated this episode), older-but-trainable and frozen unit counts."""
        return [{"plastic": int((a == 0).sum()), "current": int((a == 1).sum()),
                 "trainable_old": int(((a > 1) & ~self.frozen(i)).sum()), "frozen": int(self.frozen(i).sum())}
                for i, a in enumerate(self.age)]

    def select(self, activations: Sequence[torch.Tensor], coverage: float) -> None:
        """Allocate, per layer, the units among the plastic and current ones that are in the smallest set of units
        (by summed activation ``[n, units]`` on the new task's data) covering ``coverage`` of the layer's total."""
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1]; got {coverage}")
        if len(activations) != len(self.age):
            raise ValueError(f"need activations of {len(self.age)} layers; got {len(activations)}")
        for i, act in enumerate(activations):
            if act.dim() != 2 or act.shape[1] != len(self.age[i]):
                raise ValueError(f"layer {i}: activations must be [n, {len(self.age[i])}]; got {list(act.shape)}")
            total = act.detach().double().clamp_min(0).sum(0)
            order = torch.sort(-total, stable=True).indices
            cum = total[order].cumsum(0)
            k = int((cum < coverage * cum[-1]).sum()) + 1 if cum[-1] > 0 else 0
            top = torch.zeros(len(total), dtype=torch.bool)
            top[order[:k]] = True
            free = self.age[i] <= 1
            self.age[i][free & top] = 1
            self.age[i][free & ~top] = 0

    @torch.no_grad()
    def rewire(self, params: Mapping[str, torch.Tensor], masks: Masks, generator: torch.Generator) -> dict[str, int]:
        """Drop the connections from plastic units of layer ``i - 1`` into non-plastic units of layer ``i`` and regrow
        as many (where there is room) from any unit of layer ``i - 1`` into plastic units of layer ``i``, starting at
        zero. Updates ``masks`` and the weights in place; returns the number dropped per weight."""
        dropped = {}
        for i in range(1, len(self.layers)):
            name = self.layers[i][0]
            m, w = masks[name], params[name]
            if m.shape != (len(self.age[i]), len(self.age[i - 1])):
                raise ValueError(f"{name}: mask {list(m.shape)} does not match units "
                                 f"{len(self.age[i])} x {len(self.age[i - 1])}")
            drop = m & (self.age[i] != 0)[:, None] & (self.age[i - 1] == 0)[None, :]
            n = int(drop.sum())
            m[drop] = False
            w[drop] = 0.0
            room = (~m & (self.age[i] == 0)[:, None]).flatten().nonzero().flatten()
            grow = room[torch.randperm(len(room), generator=generator)[:n]]
            m.view(-1)[grow] = True
            w.view(-1)[grow] = 0.0
            dropped[name] = n
        return dropped

    def freeze_grads(self, params: Mapping[str, torch.Tensor]) -> None:
        """Zero the gradients of the frozen units' incoming weights and biases (call after ``backward``; the
        optimizer must have no moment estimates for them, e.g. a fresh Adam per episode, so nothing moves them)."""
        for i, (wn, bn) in enumerate(self.layers):
            f = self.frozen(i)
            for n in (wn, bn):
                if params[n].grad is not None:
                    params[n].grad[f] = 0.0

    def promote(self) -> None:
        """End of an episode: every allocated unit gets one episode older."""
        for a in self.age:
            a[a > 0] += 1
