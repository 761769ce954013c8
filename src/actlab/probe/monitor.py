"""Probes as monitors during ``generate()``: at every forward call (the prefill, then each decode step) the probe
scores the newest token's activation at its site; the stream is returned per row and, with ``stop_above``, a row
stops generating at the first step whose score reaches the bound (a Hugging Face stopping criterion). A monitor is a
:class:`LinearProbe` (one site) or a :class:`~actlab.probe.latent_guard.LatentGuard` (several sites: the step's score
is computed once every site of the forward call has been seen); :func:`load_monitor` reads either artifact."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actlab.artifact import read_json
from actlab.probe.latent_guard import KIND as GUARD_KIND
from actlab.probe.latent_guard import LatentGuard
from actlab.probe.linear import KIND as PROBE_KIND
from actlab.probe.linear import LinearProbe

if TYPE_CHECKING:
    from actlab.models import Model

Monitorable = LinearProbe | LatentGuard


def load_monitor(folder: str | Path) -> Monitorable:
    """A saved probe (kind ``probe``) or Latent Guard (kind ``latent_guard``), by the kind in its cfg.json."""
    cfg = read_json(Path(folder) / "cfg.json", what="probe or latent_guard config")
    kind = (cfg.get("artifact") or {}).get("kind") if isinstance(cfg, dict) else None
    if kind == GUARD_KIND:
        return LatentGuard.load(folder)
    if kind == PROBE_KIND:
        return LinearProbe.load(folder)
    raise ValueError(f"{folder}/cfg.json is a {kind!r} artifact; a monitor needs a {PROBE_KIND!r} (probe train) or "
                     f"{GUARD_KIND!r} (probe latent-guard) folder")


def monitor_sites(probe: Monitorable) -> list[str]:
    """The sites a monitor reads: the guard's sites, or the probe's one site."""
    return list(probe.sites) if isinstance(probe, LatentGuard) else [probe.site]


@dataclass
class MonitorResult:
    """``scores``: [batch, steps] probe score of the newest token at each forward call (step 0 = the prompt's last
    token, step k = the k-th generated token's input); ``stopped_at``: first step reaching ``stop_above`` or -1."""

    texts: list[str]
    scores: torch.Tensor
    stopped_at: list[int]
    ids: torch.Tensor | None = None
    """[batch, prompt + new] token ids (left-padded prompt, then the generated tokens)."""

    def to_json(self) -> dict[str, Any]:
        return {"texts": self.texts, "scores": self.scores.tolist(), "stopped_at": self.stopped_at}


class ProbeMonitor:
    """Scores every forward call at the probe's site(s); ``on_step(step, scores_b)`` streams them as they come."""

    def __init__(self, probe: Monitorable, *, stop_above: float | None = None,
                 on_step: Callable[[int, torch.Tensor], None] | None = None) -> None:
        self.probe, self.stop_above, self.on_step = probe, stop_above, on_step
        self.steps: list[torch.Tensor] = []
        self.flagged: torch.Tensor | None = None
        self.stopped_at: torch.Tensor | None = None
        self.sites = monitor_sites(probe)
        self._pending: dict[str, torch.Tensor] = {}

    def check_model(self, model: Model) -> None:
        """The probe's site must exist and its width match (a probe from another model is refused)."""
        if not all(self.sites):
            raise ValueError("this probe has no site recorded; set probe.site to the site it was trained on")
        model.check_sites(self.sites)
        if model.d_model is not None and model.d_model != self.probe.d_model:
            raise ValueError(f"probe has d_model={self.probe.d_model} ({self.probe.model or 'unknown model'}, "
                             f"{', '.join(self.sites)}) but {model.name} has d_model={model.d_model}: a probe only "
                             f"applies to the model it was trained on")

    def _handler(self, site: str) -> Callable[[torch.Tensor, Any], None]:
        def handle(act: torch.Tensor, ctx: Any) -> None:
            last = act[:, -1] if act.dim() == 3 else act
            self._pending[site] = last.detach()
            if len(self._pending) == len(self.sites):   # every site of this forward call seen: score the step
                acts, self._pending = self._pending, {}
                self._step(acts)

        return handle

    def _step(self, acts: dict[str, torch.Tensor]) -> None:
        if isinstance(self.probe, LatentGuard):
            s = self.probe.score(acts).cpu()
        else:
            last = acts[self.probe.site]
            self.probe.check_width(last, self.probe.site)
            s = self.probe.score(last).cpu()
        step = len(self.steps)
        self.steps.append(s)
        if self.flagged is None:
            self.flagged = torch.zeros(len(s), dtype=torch.bool)
            self.stopped_at = torch.full((len(s),), -1)
        if self.stop_above is not None:
            new = (s >= self.stop_above) & ~self.flagged
            self.stopped_at[new] = step
            self.flagged |= new
        if self.on_step is not None:
            self.on_step(step, s)

    @contextlib.contextmanager
    def watch(self, model: Model) -> Iterator[ProbeMonitor]:
        """Score every forward call of ``model`` in the block (state is reset on entry)."""
        self.check_model(model)
        self.steps, self.flagged, self.stopped_at, self._pending = [], None, None, {}
        with model.hooks({s: self._handler(s) for s in self.sites}):
            yield self

    def stopping_criteria(self) -> Any:
        """A transformers StoppingCriteria that ends the rows flagged so far."""
        from transformers import StoppingCriteria

        mon = self

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
                f = mon.flagged
                if f is None:
                    return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                return f.to(input_ids.device)

        return _Stop()

    def scores(self) -> torch.Tensor:
        return torch.stack(self.steps, 1) if self.steps else torch.empty(0, 0)


def monitor_generate(model: Model, prompts: str | Sequence[str], probe: Monitorable, *, max_new_tokens: int = 32,
                     stop_above: float | None = None, chat: bool = False,
                     on_step: Callable[[int, torch.Tensor], None] | None = None, **gen_kw: Any) -> MonitorResult:
    """Greedy ``generate()`` with the probe (or Latent Guard) scoring each step; rows stop once a score reaches
    ``stop_above``."""
    from transformers import StoppingCriteriaList

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    mon = ProbeMonitor(probe, stop_above=stop_above, on_step=on_step)
    if stop_above is not None:
        gen_kw["stopping_criteria"] = StoppingCriteriaList([mon.stopping_criteria()])
    n_prompt = model.tokenize(prompts, chat=chat)["input_ids"].shape[1]
    with mon.watch(model):
        ids = model.generate(prompts, max_new_tokens=max_new_tokens, chat=chat, return_ids=True, **gen_kw)
    texts = model.tokenizer.batch_decode(ids[:, n_prompt:], skip_special_tokens=True)
    return MonitorResult(list(texts), mon.scores(), [int(v) for v in mon.stopped_at.tolist()], ids.cpu())
