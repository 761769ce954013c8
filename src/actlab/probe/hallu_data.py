"""An offline, labelled setting for the per-token hallucination detector: a short passage states facts about two
people; a continuation answers a question about the first one either copying the passage (truthful, label 0) or
contradicting it (hallucinated, label 1). The labelled token is the answer's object word. With ``distractor=True`` a
contradicting answer uses the *other* person's value, so the word itself appeared in the passage and only its binding
is wrong; otherwise it uses a value absent from the passage. Object words are drawn from one pool for both labels, so
the word alone does not predict the label; names are split between train/val/test so no person crosses splits."""
from __future__ import annotations

import random
from dataclasses import dataclass

from actlab.probe.hallucination import Span

NAMES = ["Alice", "Bruno", "Chen", "Dana", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
         "Marta", "Nikos", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wim", "Yara"]
RELATIONS = [
    ("{n} lives in {v}.", "Where does {n} live?", "{n} lives in {a}.",
     ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Madrid", "Delhi", "Sydney"]),
    ("{n} works as a {v}.", "What is {n}'s job?", "{n} works as a {a}.",
     ["doctor", "pilot", "teacher", "farmer", "lawyer", "baker", "painter", "nurse"]),
    ("{n}'s favourite colour is {v}.", "What is {n}'s favourite colour?", "{n}'s favourite colour is {a}.",
     ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]),
    ("{n} owns a {v}.", "What pet does {n} own?", "{n} owns a {a}.",
     ["dog", "cat", "horse", "parrot", "rabbit", "goat", "turtle", "hamster"]),
]


@dataclass
class HalluSet:
    """Texts, one labelled span each, and the split of every text (train, val or test)."""

    texts: list[str]
    spans: list[list[Span]]
    split: list[str]

    def take(self, split: str) -> tuple[list[str], list[list[Span]]]:
        idx = [i for i, s in enumerate(self.split) if s == split]
        return [self.texts[i] for i in idx], [self.spans[i] for i in idx]


def contradiction_set(n_per_name: int = 8, *, distractor: bool = True, seed: int = 0,
                      splits: tuple[int, int, int] = (12, 6, 6)) -> HalluSet:
    """``n_per_name`` examples per name (labels alternate 0/1 within a name), names split ``splits`` ways."""
    if sum(splits) != len(NAMES) or min(splits) < 1:
        raise ValueError(f"splits must be three positive counts summing to {len(NAMES)} names; got {splits}")
    if n_per_name < 2:
        raise ValueError(f"n_per_name must be >= 2 (both labels per name); got {n_per_name}")
    rng = random.Random(seed)
    names = NAMES[:]
    rng.shuffle(names)
    which = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    texts, spans, split = [], [], []
    for name, sp in zip(names, which):
        for j in range(n_per_name):
            fact, question, answer, pool = RELATIONS[rng.randrange(len(RELATIONS))]
            other = rng.choice([x for x in NAMES if x != name])
            v, w = rng.sample(pool, 2)
            label = j % 2
            a = v if label == 0 else (w if distractor else rng.choice([x for x in pool if x not in (v, w)]))
            first, second = fact.format(n=name, v=v), fact.format(n=other, v=w)
            passage = f"{first} {second}" if rng.random() < 0.5 else f"{second} {first}"
            ans = answer.format(n=name, a=a)
            text = f"Passage: {passage}\nQuestion: {question.format(n=name)}\nAnswer: {ans}"
            start = len(text) - len(ans) + ans.rindex(a)
            texts.append(text)
            spans.append([(start, start + len(a), label)])
            split.append(sp)
    return HalluSet(texts, spans, split)
