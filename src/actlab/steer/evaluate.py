"""Scoring steered generations: concept scores (keywords/regex, MiniLM cosine to a description, a direction probe)
and fluency costs (perplexity of the steered text under the unsteered model, KL on neutral prompts).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model
    from actlab.steer.directions import Direction


class KeywordScorer:
    """Concept score = mean number of keyword/regex matches per text (case-insensitive; a plain word matches at the
    start of a word, so "sea" also counts "seashell")."""

    name = "keywords"

    def __init__(self, patterns: Sequence[str] | str, regex: bool = False):
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        if not pats:
            raise ValueError("KeywordScorer needs at least one keyword or pattern")
        self.rx = re.compile("|".join(p if regex else rf"\b{re.escape(p)}" for p in pats), re.IGNORECASE)

    def per_text(self, texts: Sequence[str]) -> list[float]:
        return [float(len(self.rx.findall(t))) for t in texts]

    def __call__(self, texts: Sequence[str]) -> float:
        s = self.per_text(texts)
        return sum(s) / max(1, len(s))


class EmbeddingScorer:
    """Concept score = mean cosine between each text's MiniLM sentence embedding (mean pooling over tokens) and
    the embedding of a target description."""

    name = "minilm_cosine"

    def __init__(self, target: str, encoder=None):
        from actlab import load_model

        self.enc = encoder if encoder is not None else load_model("minilm-l6")
        self.target = self.embed([target])[0]

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.enc.tokenize(list(texts), max_length=256)
        out = self.enc(enc)
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        w = enc["attention_mask"][..., None].to(h.dtype)
        e = (h * w).sum(1) / w.sum(1).clamp_min(1)
        return torch.nn.functional.normalize(e.float(), dim=-1)

    def per_text(self, texts: Sequence[str]) -> list[float]:
        return (self.embed(texts) @ self.target).tolist()

    def __call__(self, texts: Sequence[str]) -> float:
        s = self.per_text(texts)
        return sum(s) / max(1, len(s))


class ProbeScorer:
    """Concept score = mean projection of each text's mean activation (at the direction's site, unsteered model)
    on the direction's unit vector."""

    name = "probe"

    def __init__(self, model: Model, direction: Direction):
        self.model, self.direction = model, direction

    def per_text(self, texts: Sequence[str]) -> list[float]:
        texts = [t if t.strip() else " " for t in texts]
        enc = self.model.tokenize(texts)
        a = self.model.record(enc, sites=[self.direction.site], dtype=torch.float32)[self.direction.site]
        w = enc["attention_mask"][..., None].float()
        m = (a * w).sum(1) / w.sum(1)
        return (m @ self.direction.unit.to(m.device)).tolist()

    def __call__(self, texts: Sequence[str]) -> float:
        s = self.per_text(texts)
        return sum(s) / max(1, len(s))


def make_scorer(keywords: Sequence[str] | None = None, target: str | None = None):
    """A concept scorer: ``KeywordScorer(keywords)`` or ``EmbeddingScorer(target)`` (exactly one of them)."""
    if keywords and target:
        raise ValueError("give keywords or a target description, not both")
    if keywords:
        return KeywordScorer(list(keywords))
    if target:
        return EmbeddingScorer(target)
    raise ValueError("give --keywords or --target (a description scored with MiniLM)")


@dataclass
class Perplexity:
    """Perplexity of completions given their prompts under the model as it runs (call it outside steering)."""

    ppl: float
    """exp(mean negative log-likelihood over all completion tokens)."""
    per_text: list[float]
    n_tokens: int
    nll: list[float] = field(default_factory=list)
    """Summed negative log-likelihood per text (0 for an empty completion)."""
    n_per_text: list[int] = field(default_factory=list)
    """Completion tokens per text."""


@torch.no_grad()
def completion_perplexity(model: Model, prompts: Sequence[str], completions: Sequence[str], *, chat: bool = False,
               batch_size: int = 8) -> Perplexity:
    """Teacher-forced perplexity of each completion after its prompt (empty completions are skipped)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    tok = model.tokenizer
    tot_nll, tot_n, per, nlls, ns = 0.0, 0, [], [], []
    for i in range(0, len(prompts), batch_size):
        ps, cs = list(prompts[i:i + batch_size]), list(completions[i:i + batch_size])
        if chat:
            ps = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in ps]
        p_ids = [tok(p, add_special_tokens=not chat)["input_ids"] for p in ps]
        c_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in cs]
        seqs = [a + b for a, b in zip(p_ids, c_ids)]
        L = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (L - len(s)) + s for s in seqs], device=model.device)
        am = torch.tensor([[0] * (L - len(s)) + [1] * len(s) for s in seqs], device=model.device)
        logits = model({"input_ids": ids, "attention_mask": am}).logits  # the Model passes position ids
        for r, (a, b) in enumerate(zip(p_ids, c_ids)):
            ns.append(len(b))
            if not b:
                per.append(float("nan"))
                nlls.append(0.0)
                continue
            start = L - len(b) - 1  # logits index predicting the first completion token
            lp = torch.log_softmax(logits[r, start:-1].float(), -1)  # only the completion's rows: bounded memory
            nll = -float(lp.gather(-1, ids[r, start + 1:, None]).sum())
            per.append(math.exp(nll / len(b)))
            nlls.append(nll)
            tot_nll += nll
            tot_n += len(b)
    return Perplexity(math.exp(tot_nll / tot_n) if tot_n else float("nan"), per, tot_n, nlls, ns)


@torch.no_grad()
def kl_on_neutral(model: Model, interventions, prompts: Sequence[str]) -> float:
    """Mean over real tokens of KL(p_plain || p_steered) for next-token distributions on neutral prompts."""
    enc = model.tokenize(list(prompts))
    base = torch.log_softmax(model(enc).logits.float(), -1)
    with model.intervene(interventions):
        st = torch.log_softmax(model(enc).logits.float(), -1)
    kl = (base.exp() * (base - st)).sum(-1)
    m = enc["attention_mask"].bool()
    return float(kl[m].mean())
