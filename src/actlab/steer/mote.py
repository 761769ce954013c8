"""MoTE (arXiv 2502.11096): localise a behaviour to routed experts by how their routing frequency differs between
a behaviour set and a control set (fTRI), then switch those experts off or force them on during generation.

Switching edits the router logits at ``blocks.{i}.moe.router`` so the model's own routing code re-selects: an
expert that is off gets a logit far below the row's minimum (finite: +-inf makes softmax routers NaN), a forced
expert gets the row's best logit (its gate weight equals the largest of the token's other selections before the
router renormalises). Softmax top-k routers (Mixtral, Qwen-MoE) are switched that way. Routers whose adapter reads
switches (DeepSeek-V3/R1: sigmoid scores + bias, group-limited top-k, ``routed_scaling_factor``) get the request
itself: the adapter's rebuild excludes / forces the experts in its own selection, since no finite logit edit
guarantees (de)selection there. Frequencies use the adapter's own selection rule (``adapter.route``) where it has one.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from actlab.core import Intervention, register_op

if TYPE_CHECKING:
    from actlab.models import Model

OFF_MARGIN = 1e4
# the switch protocol of routers whose adapter rebuild reads the request (actlab.models.arch_deepseek_v3 documents it;
# tests/steer/test_mote_routers.py holds the names equal)
READS_SWITCH = "_actlab_reads_switch"
SWITCH_ATTR = "_actlab_expert_switch"


def _top_k(model: Model) -> int:
    return model.adapter.experts_per_token  # Unsupported (a ValueError) naming the architecture for dense MLPs


def router_sites(model: Model) -> list[str]:
    sites = [s for s in model.sites if s.endswith(".moe.router")]
    if not sites:
        raise ValueError(f"{model.name} ({model.family}) has no 'blocks.*.moe.router' sites; MoTE needs an MoE model")
    return sites


def routing_frequencies(model: Model, prompts: Sequence[str], batch_size: int = 16, positions: str = "all") -> torch.Tensor:
    """``[n_layers_moe, n_experts]``: fraction of (real) tokens routed to each expert: the expert indices each router
    actually returned (after any active switch), read from the router modules' outputs. ``positions``: all | last."""
    if positions not in ("all", "last"):
        raise ValueError(f"positions={positions!r}; use 'all' or 'last'")
    sites = router_sites(model)
    n_e = model.record(model.tokenize(["a"]), sites=sites[:1])[sites[0]].shape[-1]
    counts, n_tok = torch.zeros(len(sites), n_e), 0
    for i in range(0, len(prompts), batch_size):
        enc = model.tokenize(list(prompts[i:i + batch_size]))
        got: dict[int, torch.Tensor] = {}
        with contextlib.ExitStack() as stack:
            for j, s in enumerate(sites):
                def grab(mod, args, out, j=j, got=got):
                    got[j] = out[2].detach()  # (logits, weights, indices): the router's own selection
                stack.enter_context(model.module_hook(model.sitemap.resolve(s).module, grab))
            with torch.no_grad():
                model(enc)
        b, p = enc["input_ids"].shape
        valid = enc["attention_mask"].bool()
        if positions == "last":
            valid = torch.zeros_like(valid)
            valid[:, -1] = True  # left padding: the last position is every row's last real token
        for j in range(len(sites)):
            sel = got[j].reshape(b, p, -1)[valid.to(got[j].device)].cpu()
            counts[j] += torch.nn.functional.one_hot(sel, n_e).sum(-2).sum(0).float()
        n_tok += int(valid.sum())
    return counts / max(n_tok, 1)


def _score_diff(fb, fc, nb, nc):
    return fb - fc


def _score_ratio(fb, fc, nb, nc):
    return (fb + 1e-3) / (fc + 1e-3)


def _score_z(fb, fc, nb, nc):
    p = (fb * nb + fc * nc) / (nb + nc)
    se = (p * (1 - p) * (1 / nb + 1 / nc)).sqrt().clamp_min(1e-9)
    return (fb - fc) / se


SCORES: dict[str, Callable] = {"diff": _score_diff, "ratio": _score_ratio, "z": _score_z}


@dataclass
class FTRI:
    """fTRI result: frequencies per set, scores, and experts ranked most distinctive for the behaviour set first."""

    freq_b: torch.Tensor
    freq_c: torch.Tensor
    scores: torch.Tensor
    ranked: list[tuple[int, int]] = field(default_factory=list)
    """(layer, expert) pairs, best first; layer indexes the model's blocks."""


def ftri(model: Model, behaviour: Sequence[str], control: Sequence[str], score: str = "diff",
         positions: str = "all") -> FTRI:
    """Rank experts by how much more often the behaviour set routes to them than the control set (over every real
    token, or each prompt's last token with ``positions="last"``)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; use one of {sorted(SCORES)}")
    if not behaviour or not control:
        raise ValueError("need non-empty behaviour and control prompt sets")
    fb, fc = routing_frequencies(model, behaviour, positions=positions), routing_frequencies(model, control,
                                                                                          positions=positions)
    if positions == "last":
        nb, nc = float(len(behaviour)), float(len(control))
    else:
        nb = float(sum(len(model.tokenizer(p)["input_ids"]) for p in behaviour))
        nc = float(sum(len(model.tokenizer(p)["input_ids"]) for p in control))
    sc = SCORES[score](fb, fc, torch.tensor(nb), torch.tensor(nc))
    layers = [int(s.split(".")[1]) for s in router_sites(model)]
    order = torch.argsort(sc.flatten(), descending=True).tolist()
    n_e = sc.shape[1]
    return FTRI(fb, fc, sc, [(layers[i // n_e], i % n_e) for i in order])


@register_op
@dataclass
class ExpertSwitch(Intervention):
    """Edit router logits ``[b, p, E]`` so experts ``off`` are never selected and experts ``on`` always are."""

    op: ClassVar[str] = "expert_switch"
    off: list[int] = field(default_factory=list)
    on: list[int] = field(default_factory=list)
    top_k: int = 2

    def edit(self, act, ctx):
        n = act.shape[-1]
        bad = [e for e in [*self.off, *self.on] if not 0 <= e < n]
        if bad:
            raise IndexError(f"ExpertSwitch experts {bad} out of range for {n} experts at {ctx.site!r}")
        if set(self.off) & set(self.on):
            raise ValueError(f"experts {sorted(set(self.off) & set(self.on))} are both off and on")
        if len(self.off) > n - self.top_k or len(self.on) > self.top_k:
            raise ValueError(f"cannot switch off {len(self.off)} and force {len(self.on)} of {n} experts with "
                             f"top-{self.top_k} routing")
        out = act.clone()
        if ctx.module is not None and getattr(ctx.module, READS_SWITCH, False):
            prev = getattr(ctx.module, SWITCH_ATTR, None) or ((), ())  # several switches at one site compose
            setattr(ctx.module, SWITCH_ATTR, ([*prev[0], *self.off], [*prev[1], *self.on]))
            return out  # a new tensor, so the router's selection is rebuilt (with the request)
        if self.off:
            low = act.amin(-1, keepdim=True) - OFF_MARGIN
            out[..., self.off] = low.expand(*act.shape[:-1], len(self.off)).to(act.dtype)
        if self.on:
            others = [e for e in range(n) if e not in self.on]
            best = out[..., others].amax(-1, keepdim=True)
            # tiny increments keep forced experts strictly ahead of every other expert
            bump = torch.arange(len(self.on), 0, -1, device=act.device, dtype=act.dtype) * 1e-3
            out[..., self.on] = best + bump
        return out


def switch(model: Model, experts: Sequence[tuple[int, int]], mode: str = "off") -> list[tuple[str, ExpertSwitch]]:
    """Interventions turning the given (layer, expert) pairs off or on; use with ``model.intervene``."""
    if mode not in ("off", "on"):
        raise ValueError(f"mode={mode!r}; use 'off' or 'on'")
    k = _top_k(model)
    by_layer: dict[int, list[int]] = {}
    for layer, e in experts:
        by_layer.setdefault(int(layer), []).append(int(e))
    out = []
    for layer, es in sorted(by_layer.items()):
        site = f"blocks.{layer}.moe.router"
        model.check_sites([site])
        out.append((site, ExpertSwitch(off=es if mode == "off" else [], on=es if mode == "on" else [], top_k=k)))
    return out


def to_json(res: FTRI, top: int = 20) -> dict:
    """The ranking as JSON: the top experts with their frequencies in both sets and their score."""
    n_e = res.scores.shape[1]
    layers = sorted({layer for layer, _ in res.ranked})
    row = {layer: j for j, layer in enumerate(layers)}
    return {"format_version": 1, "kind": "actlab.steer.ftri", "experts": [
        {"layer": layer, "expert": e, "freq_behaviour": float(res.freq_b[row[layer], e]),
         "freq_control": float(res.freq_c[row[layer], e]), "score": float(res.scores[row[layer], e])}
        for layer, e in res.ranked[:top]], "n_experts": n_e}
