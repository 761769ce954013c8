"""VISTA (arXiv 2502.03628): self-logits augmentation (SLA) as a decoding option of ``generate()``, and the
steering vector from a context (an image in LVLMs; any removable context in text models) with its adaptive,
norm-preserving hook. Only text models are exercised on these machines; VSV works wherever a context can be dropped.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from actlab.core import Intervention, check_tensor, register_op, require_finite

if TYPE_CHECKING:
    from actlab.models import Model


def early_logits(model: Model, hidden: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
    """Logit lens: unembed ``hidden [..., d]`` (through the final norm when ``final_norm``), with the modules the
    architecture adapter names (``model.adapter.final_norm`` / ``unembed``)."""
    ad = model.adapter
    if final_norm:
        if ad.final_norm is None:
            raise ValueError(f"{model.name} ({ad.name}) has no final norm; use final_norm=False")
        hidden = ad.final_norm(hidden)
    if ad.unembed is None:
        raise ValueError(f"{model.name} ({ad.name}) has no unembedding (loaded without a language-model head); "
                         f"self-logits augmentation needs one")
    return ad.unembed(hidden)


class SelfLogitsAugmentation:
    """A Hugging Face logits processor: ``(1 - alpha) * logits + alpha * mean_l unembed(h_l)`` at each step.

    Reads ``blocks.{l}.resid_post`` of the newest token from a recording made during the same ``generate()``.
    """

    def __init__(self, model: Model, layers: Sequence[int], alpha: float, rec, final_norm: bool = True):
        self.model, self.layers, self.alpha, self.rec, self.final_norm = model, list(layers), alpha, rec, final_norm

    def mixed(self, logits: torch.Tensor, step: int = -1) -> torch.Tensor:
        hs = [self.rec.steps[f"blocks.{i}.resid_post"][step][:, -1] for i in self.layers]
        with torch.no_grad():
            early = torch.stack([early_logits(self.model, h, self.final_norm).float() for h in hs]).mean(0)
        if self.alpha == 0:
            return logits
        if self.alpha == 1:
            return early.to(logits.dtype)
        return ((1 - self.alpha) * logits.float() + self.alpha * early).to(logits.dtype)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.mixed(scores)


def _check_layers(model: Model, layers, alpha):
    if model.adapter.unembed is None:
        raise ValueError(f"{model.name} ({model.adapter.name}) has no unembedding (loaded without a language-model "
                         f"head); self-logits augmentation needs one")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    if not layers:
        raise ValueError("SLA needs at least one layer")
    bad = [i for i in layers if not 0 <= int(i) < model.n_layers]
    if bad:
        raise ValueError(f"SLA layers {bad} out of range for {model.n_layers} blocks")


@contextlib.contextmanager
def sla(model: Model, layers: Sequence[int], alpha: float = 0.3, final_norm: bool = True) -> Iterator[
        SelfLogitsAugmentation]:
    """Context giving a processor to pass as ``model.generate(..., logits_processor=[proc])``."""
    _check_layers(model, layers, alpha)
    with model.recording([f"blocks.{int(i)}.resid_post" for i in layers], positions="all") as rec:
        yield SelfLogitsAugmentation(model, layers, alpha, rec, final_norm)


def sla_generate(model: Model, prompts, max_new_tokens: int = 32, *, sla_layers: Sequence[int] | None = None,
             sla_alpha: float = 0.3, final_norm: bool = True, **kw):
    """``model.generate`` with self-logits augmentation from ``sla_layers`` (none: plain generate)."""
    if not sla_layers:
        return model.generate(prompts, max_new_tokens=max_new_tokens, **kw)
    from transformers import LogitsProcessorList

    with sla(model, sla_layers, sla_alpha, final_norm) as proc:
        procs = LogitsProcessorList([proc, *kw.pop("logits_processor", [])])
        return model.generate(prompts, max_new_tokens=max_new_tokens, logits_processor=procs, **kw)


def sla_logits(model: Model, inputs, layers: Sequence[int], alpha: float, final_norm: bool = True) -> torch.Tensor:
    """Next-token logits of one forward pass with SLA applied (last position), for analysis and tests."""
    _check_layers(model, layers, alpha)
    with sla(model, layers, alpha, final_norm) as proc, torch.no_grad():
        logits = model(inputs).logits[:, -1]
        return proc.mixed(logits, step=0)


# -- visual (context) steering vector -------------------------------------------------------------------------
def vsv_vectors(model: Model, with_context, without_context, layers: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """``v_l = h_l(with)[-1] - h_l(without)[-1]`` at each block's MLP output (one query; two extra forwards)."""
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    sites = [f"blocks.{i}.mlp_out" for i in layers]
    a = model.record(with_context, sites=sites, positions="last", dtype=torch.float32)
    b = model.record(without_context, sites=sites, positions="last", dtype=torch.float32)
    out = {s: (a[s] - b[s]).mean(0) for s in sites}
    for s, v in out.items():
        require_finite(f"vsv_vectors: context steering vector at {s!r}", v)
    return out


@register_op
@dataclass
class ContextSteer(Intervention):
    """VSV hook: ``x' = normalize(normalize(x) + lam * s * normalize(v)) * ||x||`` with
    ``s = 1 + max(0, cos(x, -v))`` (adaptive) or ``s = 1`` (simple). Norm preserving; identity at lam = 0."""

    op: ClassVar[str] = "vsv"
    vector: torch.Tensor
    lam: float = 0.1
    adaptive: bool = True

    def __post_init__(self):
        require_finite("ContextSteer.vector", self.vector)
        require_finite("ContextSteer.lam", self.lam)

    def edit(self, act, ctx):
        if self.lam == 0:
            return act
        v = check_tensor("ContextSteer.vector", self.vector, act, ctx).float()
        x = act.float()
        n = x.norm(dim=-1, keepdim=True)
        vn = v / v.norm().clamp_min(1e-12)
        s = 1 + (-(x @ vn) / n.squeeze(-1).clamp_min(1e-12)).clamp_min(0)[..., None] if self.adaptive else 1.0
        y = x / n.clamp_min(1e-12) + self.lam * s * vn
        return (y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12) * n).to(act.dtype)


def vsv_interventions(model: Model, with_context, without_context, lam: float = 0.05,
                      layers: Sequence[int] | None = None, adaptive: bool = True) -> dict[str, ContextSteer]:
    """``{blocks.{l}.mlp_out: ContextSteer(v_l, lam)}`` from one with/without-context pair: the VSV edit to apply
    (``model.intervene``) while generating from the input without the context."""
    return {s: ContextSteer(v, lam=lam, adaptive=adaptive)
            for s, v in vsv_vectors(model, with_context, without_context, layers).items()}


# -- token ranking dynamics (the diagnostic VISTA is built on) ------------------------------------------------
def _lens_ranks(model: Model, acts: dict[str, torch.Tensor], targets: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """``[n_layers, n]``: rank (0 = top) of ``targets[j]`` in the logit lens of ``acts[l][j]``."""
    rows = []
    for i in range(model.n_layers):
        with torch.no_grad():
            lg = early_logits(model, acts[f"blocks.{i}.resid_post"].to(model.dtype), final_norm).float()
        tgt = lg.gather(-1, targets[:, None].to(lg.device))
        rows.append((lg > tgt).sum(-1).cpu())
    return torch.stack(rows)


def token_ranks(model: Model, text: str, token: int | str, final_norm: bool = True) -> torch.Tensor:
    """``[n_layers]``: the rank (0 = top) of ``token`` (an id, or a string whose first token is taken) as the next
    token after ``text``, under the logit lens of every block's output."""
    if isinstance(token, str):
        ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"token {token!r} has no tokens")
        token = ids[0]
    sites = [f"blocks.{i}.resid_post" for i in range(model.n_layers)]
    acts = model.record([text], sites=sites, positions="last")
    return _lens_ranks(model, {s: a.reshape(1, -1) for s, a in acts.items()}, torch.tensor([int(token)]),
                       final_norm)[:, 0]


def ranking_dynamics(model: Model, prompt: str, max_new_tokens: int = 16, *, final_norm: bool = True,
                     chat: bool = False) -> tuple[list[str], torch.Tensor]:
    """(generated tokens, ``[n_layers, n_new]`` ranks): greedy generation from ``prompt`` (interventions of an
    active ``intervene`` block apply), then, for every step, the rank of the token finally emitted under each
    block's logit lens at that step (teacher-forced on the generated text, which for greedy decoding is the
    state the model decided in). VISTA's "token ranking dynamics": grounded tokens peak before the last layer."""
    out = model.generate([prompt], max_new_tokens=max_new_tokens, chat=chat, return_ids=True)[0]
    n_prompt = len(model.tokenize([prompt], chat=chat)["input_ids"][0])
    new = out[n_prompt:]
    if len(new) == 0:
        return [], torch.zeros(model.n_layers, 0, dtype=torch.long)
    sites = [f"blocks.{i}.resid_post" for i in range(model.n_layers)]
    acts = model.record({"input_ids": out[None], "attention_mask": torch.ones_like(out[None])}, sites=sites)
    steps = {s: a[0, n_prompt - 1:len(out) - 1] for s, a in acts.items()}  # the state that chose each new token
    ranks = _lens_ranks(model, steps, new, final_norm)
    return [model.tokenizer.decode([int(t)]) for t in new], ranks


def vsv_compare(model: Model, context: str, question: str, lam: float = 0.05, target: str | None = None,
                layers: Sequence[int] | None = None) -> dict:
    """One with/without-context pair (``context + question`` vs ``question``): next-token KL to the with-context run
    without and with the VSV edit, and, for ``target`` (its first token), p and its logit-lens rank per layer in the
    three runs. The numbers VISTA's sanity check reads, on any text model."""
    ivs = vsv_interventions(model, [context + question], [question], lam, layers)

    def logp(text, edit):
        with model.intervene(ivs if edit else {}), torch.no_grad():
            return model([text]).logits[0, -1].float().log_softmax(-1)

    p_ctx, p_no, p_st = logp(context + question, False), logp(question, False), logp(question, True)
    kl = lambda p, q: float((p.exp() * (p - q)).sum())
    out = {"kl_no_context": kl(p_ctx, p_no), "kl_steered": kl(p_ctx, p_st), "lam": lam}
    if target:
        ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"target {target!r} has no tokens")
        t = ids[0]
        out.update(p_context=float(p_ctx[t].exp()), p_no_context=float(p_no[t].exp()), p_steered=float(p_st[t].exp()),
                   ranks_context=token_ranks(model, context + question, t).tolist(),
                   ranks_no_context=token_ranks(model, question, t).tolist())
        with model.intervene(ivs):
            out["ranks_steered"] = token_ranks(model, question, t).tolist()
    return out
