"""Labelled sentence sets for the neurofeedback paradigm, offline: the bundled sentiment set (50 positive and 50
negative sentences, paired by topic) and actlab.steer's harmful/harmless instructions (24 + 24)."""
from __future__ import annotations

import json
from importlib import resources

NF_DATASETS = ("sentiment", "harmful")


def nf_sentences(name: str = "sentiment") -> tuple[list[str], list[int]]:
    """(sentences, dataset labels): 'sentiment' (1 = positive) or 'harmful' (1 = harmful instruction)."""
    if name == "sentiment":
        d = json.loads(resources.files("actlab.probe.data").joinpath("sentiment.json").read_text(encoding="utf-8"))
        return list(d["positive"]) + list(d["negative"]), [1] * len(d["positive"]) + [0] * len(d["negative"])
    if name == "harmful":
        from actlab.steer import load_instructions

        h, s = load_instructions("harmful"), load_instructions("harmless")
        return h + s, [1] * len(h) + [0] * len(s)
    raise ValueError(f"unknown neurofeedback dataset {name!r}; use one of {', '.join(NF_DATASETS)}")
