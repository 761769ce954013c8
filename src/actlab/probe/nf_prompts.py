"""Neurofeedback prompts (probes.md §3): N in-context (sentence, label) examples drawn from the train split only,
rendered through the tokenizer's chat template (multi-turn) or as plain few-shot text, and split into one shared
prefix (the examples, run once and cached) and one suffix per query. A reporting suffix ends exactly where the
label token would follow, so the next-token log-probabilities of the two label tokens there are the graded answer."""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

FORMATS = ("chat", "plain")
REPORT_SYSTEM = ("Each sentence gets a label, 0 or 1, from a hidden rule. Learn the rule from the labelled examples "
                 "and answer with the label only.")
CONTROL_SYSTEM = ("Each sentence gets a label, 0 or 1, from a hidden rule. The examples show sentences with their "
                  "labels. When asked, write one new short sentence that would get the requested label.")
REPORT_USER = "Sentence: {s}"
CONTROL_USER = "Write a sentence with label {y}."


@dataclass
class Prompts:
    """Token ids of a shared ``prefix`` and of one ``suffixes[i]`` per query (the prompt is their concatenation);
    ``label_ids`` = (id of label 0, id of label 1) read at each suffix's last position (reporting prompts);
    ``spans[i]`` = how many of suffix i's last tokens are the given sentence (implicit control prompts)."""

    prefix: list[int]
    suffixes: list[list[int]]
    label_ids: tuple[int, int] | None = None
    spans: list[int] | None = None
    prefix_text: str = ""


def sample_context(pool: Sequence[int], labels: torch.Tensor | Sequence[int], n: int, rng: random.Random) -> list[int]:
    """``n`` distinct example indices from ``pool`` (the train split), label-balanced (``n // 2`` of each label, an odd
    one drawn at random), in random order."""
    by = {0: [i for i in pool if int(labels[i]) == 0], 1: [i for i in pool if int(labels[i]) == 1]}
    k1 = n // 2 + (rng.random() < 0.5 if n % 2 else 0)
    k0 = n - k1
    if k0 > len(by[0]) or k1 > len(by[1]):
        raise ValueError(f"{n} in-context examples need {k0} of label 0 and {k1} of label 1; the train split has "
                         f"{len(by[0])} and {len(by[1])}")
    out = rng.sample(by[0], k0) + rng.sample(by[1], k1)
    rng.shuffle(out)
    return out


def _ids(tok: Any, text: str, special: bool) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"])


def _chat(tok: Any, system: str, turns: Sequence[tuple[str, str]], last_user: str) -> tuple[str, str]:
    """(prefix, suffix) strings: the prefix holds the system message and the example turns, the suffix the last user
    turn and the assistant header (the chat template's generation prompt)."""
    if getattr(tok, "chat_template", None) is None:
        raise ValueError("the chat format needs a tokenizer with a chat template; use fmt='plain'")
    msgs = [{"role": "system", "content": system}]
    for u, a in turns:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    prefix = tok.apply_chat_template(msgs, tokenize=False)
    full = tok.apply_chat_template(msgs + [{"role": "user", "content": last_user}], tokenize=False,
                                   add_generation_prompt=True)
    if not full.startswith(prefix):
        raise ValueError("the chat template renders the examples differently once a turn follows; cannot share a "
                         "prefix (use fmt='plain')")
    return prefix, full[len(prefix):]


def _answer_ids(tok: Any, suffix: str, sep: str) -> tuple[str, tuple[int, int]]:
    """(suffix, label ids) such that suffix + label tokenizes as the suffix's tokens plus one label token, the label
    written after ``sep`` as in the examples: with sep ' ' either the label token carries the space, or the suffix
    ends with it where the tokenizer splits the space off (SmolLM2 writes ' 1' as ' ', '1')."""
    options = [(suffix, sep)] + ([(suffix + sep, "")] if sep else [])
    for sfx, pre in options:
        base = _ids(tok, sfx, False)
        got = []
        for y in ("0", "1"):
            ids = _ids(tok, sfx + pre + y, False)
            if len(ids) == len(base) + 1 and ids[:-1] == base:
                got.append(ids[-1])
        if len(got) == 2 and got[0] != got[1]:
            return sfx, (got[0], got[1])
    raise ValueError(f"the labels 0/1 are not single tokens after {suffix[-20:]!r} in this tokenizer")


def report_prompts(tok: Any, examples: Sequence[tuple[str, int]], queries: Sequence[str],
                   fmt: str = "chat") -> Prompts:
    """Reporting: the examples as (sentence, label) turns, each query's suffix ending at its label's position. A
    query that is one of the example sentences raises (held-out sentences only)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}; use one of {', '.join(FORMATS)}")
    seen = {s for s, _ in examples}
    leaked = [q for q in queries if q in seen]
    if leaked:
        raise ValueError(f"query {leaked[0]!r} is one of its own in-context examples")
    if fmt == "chat":
        parts = [_chat(tok, REPORT_SYSTEM, [(REPORT_USER.format(s=s), str(int(y))) for s, y in examples],
                       REPORT_USER.format(s=q)) for q in queries]
        prefix, special = parts[0][0], False
        suffixes = [p[1] for p in parts]
    else:
        prefix = REPORT_SYSTEM + "\n\n" + "".join(f"Sentence: {s}\nLabel: {int(y)}\n\n" for s, y in examples)
        suffixes, special = [f"Sentence: {q}\nLabel:" for q in queries], True
    if not queries:
        raise ValueError("no query sentences")
    fixed, label_ids = _answer_ids(tok, suffixes[0], "" if fmt == "chat" else " ")
    tail = fixed[len(suffixes[0]):]
    return Prompts(_ids(tok, prefix, special), [_ids(tok, s + tail, False) for s in suffixes], label_ids,
                   prefix_text=prefix)


def control_prompts(tok: Any, examples: Sequence[tuple[str, int]], target: int,
                    sentences: Sequence[str] | None = None) -> Prompts:
    """Control (chat format): examples as ("Write a sentence with label y", sentence) turns, then the request for
    ``target``. Without ``sentences``: one suffix ending at the assistant header (explicit control: the model writes
    the sentence). With ``sentences``: one suffix per given sentence, teacher-forced as the assistant's answer
    (implicit control); ``spans`` = its token count."""
    if target not in (0, 1):
        raise ValueError(f"target must be 0 or 1; got {target!r}")
    prefix, head = _chat(tok, CONTROL_SYSTEM, [(CONTROL_USER.format(y=int(y)), s) for s, y in examples],
                         CONTROL_USER.format(y=target))
    head_ids = _ids(tok, head, False)
    if sentences is None:
        return Prompts(_ids(tok, prefix, False), [head_ids], prefix_text=prefix)
    sent = [_ids(tok, s, False) for s in sentences]
    return Prompts(_ids(tok, prefix, False), [head_ids + s for s in sent], spans=[len(s) for s in sent],
                   prefix_text=prefix)
