"""Explainers: an LLM reads a latent's training examples and writes an explanation (spec §1.4), and the same LLM
judges examples for the detection / fuzzing scorers.

One ``Explainer`` base: ``complete(messages, max_tokens, temperature) -> str`` is the only thing a backend
provides. ``ModelExplainer`` runs an actlab causal LM in-process through its tokenizer's chat template (default: the
bundled SmolLM2-135M-Instruct); ``EndpointExplainer`` calls an OpenAI-compatible server (``EndpointClient``:
retries, cache, audit log). Temperature 0 (greedy) by default, for reproducible scores.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.explain.endpoint import EndpointClient, EndpointConfig
from actlab.explain.examples import Example
from actlab.explain.prompts import (
    Messages,
    PromptConfig,
    explainer_messages,
    judge_messages,
    parse_explanation,
    parse_yes_no,
)

if TYPE_CHECKING:
    from actlab.models import Model

BUNDLED = "smollm2-135m-instruct"


@dataclass
class Explanation:
    """An explanation of one latent, with the prompt and the raw answer it came from."""

    latent: int
    text: str
    explainer: str
    response: str
    messages: Messages
    settings: dict[str, Any] = field(default_factory=dict)


class Explainer:
    """Base: a chat LLM that explains latents and judges examples."""

    name = "explainer"

    def __init__(self, max_tokens: int = 64, temperature: float = 0.0):
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)

    def complete(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None) -> str:
        """The assistant's answer to a chat."""
        raise NotImplementedError

    def complete_many(self, conversations: Sequence[Messages], **kw: Any) -> list[str]:
        return [self.complete(m, **kw) for m in conversations]

    def explain(self, examples: Sequence[Example], tokenizer, cfg: PromptConfig | None = None,
                non_activating: Sequence[Example] = ()) -> Explanation:
        """Explain the latent of ``examples`` (its training set; ``non_activating`` for the contrastive prompt)."""
        cfg = cfg or PromptConfig()
        msgs = explainer_messages(examples, tokenizer, cfg, non_activating)
        raw = self.complete(msgs)
        latent = examples[0].latent if examples else -1
        return Explanation(latent, parse_explanation(raw), self.name, raw, msgs,
                           {"prompt": asdict(cfg), "max_tokens": self.max_tokens, "temperature": self.temperature,
                            "n_examples": min(len(examples), cfg.max_shown)})

    def yes_probability(self, messages: Messages) -> float:
        """P(yes) of a Yes/No question: 1.0 / 0.0 from the parsed answer (0.5 when it says neither)."""
        ans = parse_yes_no(self.complete(messages, max_tokens=3, temperature=0.0))
        return 0.5 if ans is None else float(ans)

    def judge(self, kind: str):
        """A judge ``(explanation, text) -> probability`` for :class:`DetectionScorer` (``kind="detection"``) or
        :class:`FuzzingScorer` (``"fuzzing"``), one example per question."""
        judge_messages(kind, "", "")   # validates kind

        def fn(explanation: str, text: str) -> float:
            return self.yes_probability(judge_messages(kind, explanation, text))
        return fn


class ModelExplainer(Explainer):
    """An actlab causal LM with a chat template, in-process (default: the bundled SmolLM2-135M-Instruct). Judges
    read P(Yes) / (P(Yes) + P(No)) from the first answer token's logits (one forward pass, graded for AUROC)."""

    def __init__(self, model: Model | None = None, max_tokens: int = 64, temperature: float = 0.0):
        super().__init__(max_tokens, temperature)
        if model is None:
            from actlab import load_model
            model = load_model(BUNDLED)
        tok = model.tokenizer
        if tok is None or not getattr(tok, "chat_template", None):
            raise ValueError(f"{model.name} has no tokenizer chat template; an instruct model is needed "
                             f"(e.g. {BUNDLED})")
        if not model.is_causal_lm:
            raise ValueError(f"{model.name} is not a causal LM")
        self.model = model
        self.name = f"model:{model.name}"
        self._lock = threading.Lock()   # one generation at a time (servers call from several threads)
        self._yes_no = (self._first_id("Yes"), self._first_id("No"))

    def _first_id(self, word: str) -> int:
        return self.model.tokenizer(word, add_special_tokens=False)["input_ids"][0]

    def _ids(self, messages: Messages) -> torch.Tensor:
        ids = self.model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):   # newer tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return torch.tensor([list(ids)], dtype=torch.long)

    def complete(self, messages, max_tokens=None, temperature=None) -> str:
        n = self.max_tokens if max_tokens is None else int(max_tokens)
        t = self.temperature if temperature is None else float(temperature)
        kw: dict[str, Any] = {"do_sample": t > 0}
        if t > 0:
            kw["temperature"] = t
        ids = self._ids(messages)
        with self._lock:
            out = self.model.generate(ids, max_new_tokens=n, return_ids=True, **kw)
        return self.model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    @torch.no_grad()
    def yes_probability(self, messages) -> float:
        ids = self._ids(messages).to(self.model.device)
        with self._lock:
            logits = self.model(ids).logits[0, -1].float()
        y, n = self._yes_no
        return float(torch.softmax(logits[[y, n]], 0)[0])


class EndpointExplainer(Explainer):
    """An OpenAI-compatible endpoint (llama.cpp server, vLLM, Ollama, OpenAI) through :class:`EndpointClient`."""

    def __init__(self, client: EndpointClient | EndpointConfig | None = None, max_tokens: int = 64,
                 temperature: float = 0.0):
        super().__init__(max_tokens, temperature)
        self.client = client if isinstance(client, EndpointClient) else EndpointClient(client)
        self.name = self.client.name

    def complete(self, messages, max_tokens=None, temperature=None) -> str:
        return self.client.chat(messages, max_tokens=self.max_tokens if max_tokens is None else max_tokens,
                                temperature=self.temperature if temperature is None else temperature)

    def complete_many(self, conversations, **kw) -> list[str]:
        kw.setdefault("max_tokens", self.max_tokens)
        kw.setdefault("temperature", self.temperature)
        return self.client.chat_many(list(conversations), **kw)
