"""Behavioural effect of subspace rerouting: does a chat model that refuses an instruction still refuse it with the
searched suffix, and with random suffixes of the same length (the control)? Greedy decoding through the chat template
(the suffix sits where ``rerouting.prompt_parts`` puts it) and actlab.steer's substring refusal judge. The search is
judged by behaviour, not only by the projection crossing its target: a crossing that leaves the refusal in place (or
a random suffix that removes it as well) says the direction is not what decides the reply."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.security.rerouting import (
    ReroutingConfig,
    allowed_tokens,
    prompt_parts,
    refusal_subspace,
    subspace_reroute,
)

if TYPE_CHECKING:
    from actlab.models import Model


def _need_chat(model: Model) -> None:
    if not getattr(model.tokenizer, "chat_template", None):
        raise ValueError(f"{model.name} has no chat template; the behavioural check judges chat replies")


def suffix_replies(model: Model, instruction: str, suffixes: torch.Tensor, max_new_tokens: int = 32) -> list[str]:
    """Greedy replies to the chat-templated ``instruction`` with each suffix row (``[n, L]`` token ids; equal lengths,
    so one unpadded batch)."""
    if suffixes.dim() != 2 or len(suffixes) == 0:
        raise ValueError(f"suffixes must be a non-empty [n, L] batch of token ids; got {list(suffixes.shape)}")
    before, after = prompt_parts(model, instruction, chat=True)
    n = len(suffixes)
    ids = torch.cat([before.expand(n, -1), suffixes.cpu(), after.expand(n, -1)], 1)
    return list(model.generate(ids, max_new_tokens=max_new_tokens))


def refused(model: Model, instructions: Sequence[str], max_new_tokens: int = 32) -> list[tuple[str, str]]:
    """(instruction, reply) for the instructions the model refuses without a suffix (greedy, chat template, one at a
    time so no padding enters), judged by ``actlab.steer.is_refusal``."""
    from actlab.steer import is_refusal

    out = []
    for ins in instructions:
        reply = model.generate(ins, max_new_tokens=max_new_tokens, chat=True)
        if is_refusal(reply):
            out.append((ins, reply))
    return out


@dataclass
class BehaviourResult:
    """One instruction: the plain reply, the searched suffix's reply, and random suffixes' replies, each judged."""

    instruction: str
    reply_plain: str
    refused_plain: bool
    suffix: str
    crossed: bool
    score: dict[str, float]
    reply_suffix: str
    refused_suffix: bool
    random_replies: list[str] = field(default_factory=list)
    random_refused: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge_suffix(model: Model, instruction: str, suffix_ids: Sequence[int], *, n_random: int = 8, seed: int = 0,
                 max_new_tokens: int = 32, allowed: torch.Tensor | None = None) -> dict[str, Any]:
    """Greedy chat replies to ``instruction`` plain, with ``suffix_ids`` and with ``n_random`` random suffixes of the
    same length (allowed tokens, generator seeded ``seed + 2``), each judged by ``actlab.steer.is_refusal``."""
    from actlab.steer import is_refusal

    _need_chat(model)
    allowed = allowed_tokens(model) if allowed is None else allowed
    plain = model.generate(instruction, max_new_tokens=max_new_tokens, chat=True)
    reply = suffix_replies(model, instruction, torch.tensor([list(suffix_ids)]), max_new_tokens)[0]
    g = torch.Generator().manual_seed(seed + 2)
    rand = allowed[torch.randint(len(allowed), (n_random, len(suffix_ids)), generator=g)]
    rr = suffix_replies(model, instruction, rand, max_new_tokens) if n_random else []
    return {"reply_plain": plain, "refused_plain": is_refusal(plain), "reply_suffix": reply,
            "refused_suffix": is_refusal(reply), "random_replies": rr, "random_refused": [is_refusal(t) for t in rr]}


def reroute_behaviour(model: Model, instructions: Sequence[str], cfg: ReroutingConfig, *, n_random: int = 8,
                      max_new_tokens: int = 32) -> list[BehaviourResult]:
    """SSR on each instruction (``cfg``'s sites, measure and target), then ``judge_suffix`` on the best suffix (random
    suffixes seeded by ``cfg.seed``)."""
    _need_chat(model)
    if not instructions:
        raise ValueError("no instructions to reroute")
    vec, kw, _, _ = refusal_subspace(model, cfg)
    allowed = allowed_tokens(model)
    out = []
    for ins in instructions:
        res = subspace_reroute(model, ins, vec, cfg, chat=True, allowed=allowed, **kw)
        j = judge_suffix(model, ins, res.suffix_ids, n_random=n_random, seed=cfg.seed, max_new_tokens=max_new_tokens,
                         allowed=allowed)
        out.append(BehaviourResult(ins, j["reply_plain"], j["refused_plain"], res.suffix, res.crossed, res.score,
                                   j["reply_suffix"], j["refused_suffix"], j["random_replies"], j["random_refused"],
                                   res.seconds))
    return out


__all__ = ["BehaviourResult", "judge_suffix", "refused", "reroute_behaviour", "suffix_replies"]
