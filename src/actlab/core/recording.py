"""``Recording``: what ``model.recording(...)`` captured, per site and forward call, and with ``grad=True`` the
gradients that ``backward()`` sends to each site (held here so no family writes its own gradient handler)."""
from __future__ import annotations

from typing import Callable, KeysView

import torch

from actlab.core.hooks import Ctx, StopForward
from actlab.core.positions import PassInfo, Positions, select_mask, selects_all


def position_mask(sel: Positions, info: PassInfo | None) -> torch.Tensor | None:
    """The ``[batch, pos]`` mask a selector takes from a call (None = every position); an int or 'last' must hit
    exactly one position in every row."""
    mask = select_mask(sel, info, "positions")
    if mask is not None and isinstance(sel, (str, int)) and not bool((mask.sum(1) == 1).all()):
        raise ValueError(f"positions={sel!r} is out of range for some rows (lengths {info.length_b.tolist()})")
    return mask


def take_positions(t: torch.Tensor, sel: Positions, info: PassInfo | None) -> torch.Tensor:
    """Select positions of a ``[batch, pos, ...]`` tensor: 'all' keeps it, 'last'/int give ``[batch, ...]``,
    other selectors (slice, list, mask) give the selected real-token rows flattened ``[n, ...]`` (row-major)."""
    mask = position_mask(sel, info)
    return t if mask is None else t[mask]


def hold(act: torch.Tensor) -> torch.Tensor:
    """The tensor the forward goes on with so that ``backward()`` gives its gradient: a fresh view of ``act`` in the
    graph (upstream sites keep receiving gradients), or a new leaf where nothing upstream needs a gradient."""
    if act.requires_grad:
        return act.view(act.shape)  # per-head sites are views of the module's tensor: the forward must use this one
    return act.detach().requires_grad_(True)


class Recording:
    """Activations captured inside ``model.recording(...)``: one tensor per forward call per site.

    ``rec[site]`` concatenates the calls along positions (prefill then each decode step of ``generate()``);
    ``rec.steps[site]`` keeps them separate. With ``grad=True`` the activations stay in the autograd graph and, after
    ``loss.backward()``, ``rec.grad(site)`` is ``d loss / d rec[site]`` (same shape).
    """

    def __init__(self, sites: list[str], grad: bool = False) -> None:
        self.steps: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
        self.grad_enabled = grad
        self._held: dict[str, list[tuple[torch.Tensor, torch.Tensor | None]]] = {s: [] for s in sites} if grad else {}
        self._grads: dict[str, list[torch.Tensor | None]] = {s: [] for s in sites} if grad else {}
        self._convert: Callable[[torch.Tensor], torch.Tensor] = lambda t: t

    def _join(self, site: str, steps: list[torch.Tensor]) -> torch.Tensor:
        if len(steps) == 1:
            return steps[0]
        if len({(t.dim(), t.shape[0], *t.shape[2:]) for t in steps}) > 1:
            raise ValueError(f"site {site!r} has another shape in each forward call ({[list(t.shape) for t in steps]};"
                             f" attention patterns grow with the KV cache): use rec.steps[{site!r}]")
        return torch.cat(steps, dim=1)

    def __getitem__(self, site: str) -> torch.Tensor:
        if site not in self.steps:
            raise KeyError(f"site {site!r} was not recorded; recorded: {list(self.steps)}")
        steps = self.steps[site]
        if not steps:
            raise KeyError(f"site {site!r} was not reached by the forward pass")
        return self._join(site, steps)

    def grad(self, site: str) -> torch.Tensor:
        """``d loss / d rec[site]`` after ``loss.backward()`` (zeros where the loss does not depend on the site)."""
        if not self.grad_enabled:
            raise ValueError("rec.grad() needs model.recording(sites, grad=True)")
        self[site]  # unknown / unreached site: KeyError
        if not any(g is not None for gs in self._grads.values() for g in gs):
            raise RuntimeError(f"no gradient at site {site!r} yet: call backward() on a loss computed from this "
                               f"forward pass (with gradients enabled) before rec.grad()")
        out = []
        for (t, mask), g in zip(self._held[site], self._grads[site]):
            g = torch.zeros_like(t) if g is None else g
            out.append(self._convert(g if mask is None else g[mask]))
        return self._join(site, out)

    def __contains__(self, site: str) -> bool:
        return bool(self.steps.get(site))

    def keys(self) -> KeysView[str]:
        return self.steps.keys()

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {s: self[s] for s in self.steps if self.steps[s]}

    def handler(self, site: str, positions: Positions, convert: Callable[[torch.Tensor], torch.Tensor],
                pending: set[str] | None = None) -> Callable[[torch.Tensor, Ctx], torch.Tensor | None]:
        """The site handler that fills this recording (``pending``: stop the forward once every site is seen)."""
        self._convert = convert

        every = selects_all(positions)
        store = self.steps[site].append
        if every and not self.grad_enabled and pending is None:   # the common case, kept lean (per-call overhead)
            def record_all(act: torch.Tensor, ctx: Ctx) -> None:
                store(convert(act))
            return record_all

        def handle(act: torch.Tensor, ctx: Ctx) -> torch.Tensor | None:
            mask = None if every else position_mask(positions, ctx.info)   # 'all' never computes positions
            new = None
            if self.grad_enabled and torch.is_grad_enabled():
                new = act = hold(act)
                i = len(self._grads[site])
                self._held[site].append((act, mask))
                self._grads[site].append(None)

                def keep(g: torch.Tensor) -> None:
                    prev = self._grads[site][i]
                    self._grads[site][i] = g if prev is None else prev + g  # accumulates like .grad
                act.register_hook(keep)
            t = act if mask is None else act[mask]
            store(convert(t))
            if pending is not None:
                pending.discard(site)
                if not pending:
                    raise StopForward
            return new

        return handle
