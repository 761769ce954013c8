"""Intervention scoring (spec §2, causal): steer the model with a latent (add its decoder direction, or clamp the
latent) while generating continuations of some prompts, also generate plain continuations, and let a scorer LM
read the explanation after each (prompt, completion). Score = mean over prompts of
``surprisal(explanation | plain) - surprisal(explanation | steered)`` ("delta conditional entropy", nats): positive
when the explanation predicts what the intervention does to the text. It explains output-side latents that the
activation-based scorers miss.

The generators and the scorer LM are callables (stubs test the harness); :func:`steered_generators` builds them
from an actlab model and a dictionary latent, :func:`actlab.explain.model_logprob` the scorer LM.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from actlab.explain.scorers import Scorer, ScoreResult
from actlab.explain.surprisal import LogProb

if TYPE_CHECKING:
    from actlab.dictionary import Dictionary
    from actlab.models import Model

Generate = Callable[[list[str]], list[str]]
TEMPLATE = "{prompt}{completion}\n\nThe text above is about"
MODES = ("add", "clamp")


class InterventionScorer(Scorer):
    """``score(explanation, ...)``: mean delta surprisal of the explanation, plain minus steered completions."""

    name = "intervention"

    def __init__(self, clean: Generate, steered: Generate, logprob: LogProb, prompts: Sequence[str],
                 template: str = TEMPLATE, latent: int = -1, settings: dict | None = None):
        if not prompts:
            raise ValueError("the intervention scorer needs prompts to continue")
        if "{prompt}" not in template or "{completion}" not in template:
            raise ValueError(f"the template must contain {{prompt}} and {{completion}}; got {template!r}")
        self.clean, self.steered, self.logprob = clean, steered, logprob
        self.prompts, self.template, self.latent = list(prompts), template, latent
        self.settings = dict(settings or {})
        self._cache: tuple[list[str], list[str]] | None = None

    def completions(self) -> tuple[list[str], list[str]]:
        """(plain, steered) completions of the prompts, generated once and reused for every explanation."""
        if self._cache is None:
            plain, steered = list(self.clean(self.prompts)), list(self.steered(self.prompts))
            if len(plain) != len(self.prompts) or len(steered) != len(self.prompts):
                raise ValueError(f"the generators returned {len(plain)} / {len(steered)} completions for "
                                 f"{len(self.prompts)} prompts")
            self._cache = (plain, steered)
        return self._cache

    def score(self, explanation: str, activating=(), non_activating=(), tokenizer=None) -> ScoreResult:
        plain, steered = self.completions()
        text = " " + explanation.strip()
        records, deltas = [], []
        for p, c, s in zip(self.prompts, plain, steered):
            h_plain = -self.logprob(self.template.format(prompt=p, completion=c), text)
            h_steer = -self.logprob(self.template.format(prompt=p, completion=s), text)
            deltas.append(h_plain - h_steer)
            records.append({"prompt": p, "plain": c, "steered": s, "surprisal_plain": h_plain,
                            "surprisal_steered": h_steer, "delta": h_plain - h_steer})
        latent = self.latent if self.latent >= 0 else (activating[0].latent if len(activating) else -1)
        value = sum(deltas) / len(deltas)
        return ScoreResult(self.name, latent, explanation, 0, 0, None, None, None, None, None, {},
                           {"template": self.template, "n_prompts": len(self.prompts), **self.settings}, records,
                           value=value)


def latent_intervention(dictionary: Dictionary, j: int, mode: str = "add", value: float = 10.0):
    """The edit of latent ``j`` at the dictionary's site: ``add`` writes ``value x`` its unit decoder direction
    at every position; ``clamp`` sets the latent to ``value`` (adds ``(value - z_j) W_dec[j]``, the rest of the
    activation - the SAE's error included - untouched). SAEs only (a transcoder writes to another site)."""
    from actlab import Add, Fn

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if not 0 <= j < dictionary.d_sae:
        raise IndexError(f"latent {j} out of range: the dictionary has {dictionary.d_sae} latents")
    if dictionary.cfg.is_transcoder:
        raise ValueError("steering a latent needs an SAE (it writes where it reads); this is a transcoder")
    if mode == "clamp" and dictionary.cfg.normalize_activations not in (None, "none"):
        raise ValueError(f"clamp needs a dictionary without input normalisation (its decoder is in normalised "
                         f"units); this one has normalize_activations={dictionary.cfg.normalize_activations!r}; "
                         f"use mode='add'")
    w = dictionary.W_dec[j].detach().float()
    if mode == "add":
        return Add(w / w.norm().clamp_min(1e-12), alpha=float(value))

    @torch.no_grad()
    def clamp(act, ctx):
        z = dictionary.encode(act.float().to(w.device))[..., j]
        return act + ((value - z)[..., None] * w).to(act.dtype).to(act.device)
    return Fn(clamp)


def steered_generators(model: Model, site: str, intervention, max_new_tokens: int = 24,
                       chat: bool = False) -> tuple[Generate, Generate]:
    """``(plain, steered)``: greedy continuations of prompts without and with ``intervention`` at ``site``."""
    model.check_sites([site])

    def plain(prompts: list[str]) -> list[str]:
        return list(model.generate(list(prompts), max_new_tokens=max_new_tokens, chat=chat))

    def steered(prompts: list[str]) -> list[str]:
        with model.intervene({site: intervention}):
            return list(model.generate(list(prompts), max_new_tokens=max_new_tokens, chat=chat))
    return plain, steered
