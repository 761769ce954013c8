"""A deterministic stand-in LLM for pipeline tests: explains a latent as "the token X" for the most common
highlighted span, and judges an example Yes iff the explanation's last word is one of its words."""
from __future__ import annotations

import re
from collections import Counter

from actlab.explain import Explainer


class StubLLM(Explainer):
    name = "stub"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def complete(self, messages, max_tokens=None, temperature=None):
        self.calls += 1
        u = messages[-1]["content"]
        if "Feature: " in u:
            feature = u.split("Feature: ")[1].split("\n")[0].split()[-1]
            example = u.split("Example: ")[1].split("\n")[0]
            words = re.sub(r"<<|>>", " ", example).split()
            return "Yes" if feature in words else "No"
        spans = Counter(s.strip() for s in re.findall(r"<<(.*?)>>", u) for s in s.split())
        word = spans.most_common(1)[0][0] if spans else "nothing"
        return f"The marked tokens are all the same.\n[EXPLANATION]: the token {word}"
