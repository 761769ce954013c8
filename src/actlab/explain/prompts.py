"""Chat prompts of the explainer and the LLM judges (spec §1.4, §2), and parsing their answers.

Explainer prompt: the training examples with the activating tokens in ``<< >>``, optionally each example's
activations as ``("token", value)`` pairs on a 0-10 scale (values normalised by the examples' max, as delphi
does), optionally a contrastive block of non-activating examples; the answer's last ``[EXPLANATION]:`` line is the
explanation (a small model that ignores the format gives its first line instead). Judge prompts show one example
each (no leakage between examples) and ask for ``Yes`` / ``No``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from actlab.explain.examples import Example
from actlab.explain.text import token_pieces

Messages = list[dict]
MARKER = "[EXPLANATION]:"

EXPLAINER_SYSTEM = (
    "You are a meticulous AI researcher studying a feature of a language model. You are given text examples; in "
    "each, the tokens where the feature is active are marked like <<this>>. Find what the marked tokens have in "
    "common (their word, meaning or grammatical role, and the context around them) and describe it in a short "
    "phrase. The last line of your answer must be the explanation, formatted as: "
    f"{MARKER} <short phrase>")

DETECTION_SYSTEM = (
    "You are a careful linguist. You are given the description of a feature of text and one text example. Answer "
    "Yes if the feature is present anywhere in the example, No if it is not. Answer with one word: Yes or No.")

FUZZING_SYSTEM = (
    "You are a careful linguist. You are given the description of a feature of text and one text example in which "
    "some tokens are marked like <<this>>. Answer Yes if the marked tokens are exactly the kind of tokens the "
    "description is about, No if they are not. Answer with one word: Yes or No.")


@dataclass
class PromptConfig:
    """What the explainer is shown."""

    activations: bool = False
    """List each example's activating tokens with their activation on a 0-10 scale."""
    contrastive: bool = False
    """Also show non-activating examples (the pipeline draws them apart from the scorers' test negatives)."""
    n_contrastive: int = 10
    """Non-activating examples shown in the contrastive variant."""
    max_shown: int = 40
    """Activating examples shown at most (the training set, in the order given)."""


def activation_pairs(ex: Example, tokenizer, scale_max: float) -> list[tuple[str, int]]:
    """``(token text, round(10 * act / scale_max))`` for the example's tokens with activation > 0."""
    pieces, group = token_pieces(tokenizer, ex.tokens)
    out = []
    for q, a in enumerate(ex.acts):
        if a > 0:
            out.append((pieces[group[q]], round(10 * a / scale_max) if scale_max > 0 else 0))
    return out


def explainer_messages(examples: Sequence[Example], tokenizer, cfg: PromptConfig | None = None,
                       non_activating: Sequence[Example] = ()) -> Messages:
    """System + user messages asking for an explanation of the latent that fires in ``examples``."""
    cfg = cfg or PromptConfig()
    exs = list(examples)[: cfg.max_shown]
    if not exs:
        raise ValueError("no activating examples to explain (the latent never fires in the cache?)")
    top = max(x.max_act for x in exs)
    lines = ["Examples where the feature is active:"]
    for i, x in enumerate(exs, 1):
        lines.append(f"Example {i}: " + x.highlighted(tokenizer).replace("\n", " "))
        if cfg.activations:
            pairs = ", ".join(f"({t!r}, {v})" for t, v in activation_pairs(x, tokenizer, top))
            lines.append(f"Activations: {pairs}")
    if cfg.contrastive:
        neg = list(non_activating)[: cfg.n_contrastive]
        if not neg:
            raise ValueError("the contrastive prompt needs non-activating examples")
        lines.append("")
        lines.append("Examples where the feature is NOT active anywhere:")
        for i, x in enumerate(neg, 1):
            lines.append(f"Counter-example {i}: " + x.text(tokenizer).replace("\n", " "))
    lines.append("")
    lines.append(f"What does the feature detect? End with the line: {MARKER} <short phrase>")
    return [{"role": "system", "content": EXPLAINER_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_explanation(response: str, max_chars: int = 200) -> str:
    """The text after the last ``[EXPLANATION]:`` (its line), else the response's first non-empty line (lead-in
    lines ending in ':' skipped, list bullets dropped); quotes and a trailing period stripped, cut to ``max_chars``."""
    text = response.strip()
    k = text.rfind(MARKER)
    if k >= 0:
        text = text[k + len(MARKER):].strip()
    lines = [re.sub(r"^(?:[-*\u2022]|\d+[.)])\s+", "", ln.strip()) for ln in text.splitlines() if ln.strip()]
    while len(lines) > 1 and lines[0].endswith(":"):   # a lead-in ("... the following:") before the answer
        lines.pop(0)
    line = lines[0] if lines else ""
    line = line.strip().strip("\"'`*").rstrip(".").strip()
    return line[:max_chars]


def judge_messages(kind: str, explanation: str, text: str) -> Messages:
    """One judge question: ``detection`` (is the feature in the plain example?) or ``fuzzing`` (is the marking
    right?)."""
    if kind not in ("detection", "fuzzing"):
        raise ValueError(f"judge kind must be detection or fuzzing; got {kind!r}")
    system = DETECTION_SYSTEM if kind == "detection" else FUZZING_SYSTEM
    user = f"Feature: {explanation}\n\nExample: {text.strip()}\n\nAnswer (Yes or No):"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_YES = re.compile(r"^\W*(yes|true|1)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|false|0)\b", re.IGNORECASE)


def parse_yes_no(response: str) -> bool | None:
    """True for an answer starting with yes/true/1, False for no/false/0, None otherwise."""
    if _YES.match(response):
        return True
    if _NO.match(response):
        return False
    return None
