"""The embedding scorer with the bundled MiniLM: embeddings are sentence-transformers' mean pooling of the model's
last hidden state, and a fruit explanation ranks fruit sentences above unrelated ones."""
from __future__ import annotations

import pytest
import torch

from actlab import load_model
from actlab.explain import EmbeddingScorer, Example, minilm_embedder
from actlab.explain.scorers import QUERY_PREFIX


class Chars:
    """Token ids are code points (the examples below are plain text)."""

    def decode(self, ids, **kw):
        return "".join(chr(i) for i in ids)


def _ex(text, kind):
    return Example(0, 0, [ord(c) for c in text], [1.0 if kind == "activating" else 0.0] * len(text), 0, kind,
                   quantile=0 if kind == "activating" else -1)


@pytest.mark.real
def test_minilm_embedder_and_scorer():
    m = load_model("minilm-l6")
    embed = minilm_embedder(m)
    texts = ["I ate an apple and a banana.", "The sky is blue"]
    e = embed(texts)
    enc = m.tokenize(texts)
    with torch.no_grad():
        h = m.module(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    assert torch.allclose(e, (h * mask).sum(1) / mask.sum(1), atol=1e-5)
    pos = ["She peeled an orange for breakfast.", "Apples and pears grow in the orchard.",
           "He bought ripe bananas at the market.", "The strawberries were sweet and red."]
    neg = ["The train leaves at seven o'clock.", "Compile the program with optimisations on.",
           "The committee rejected the tax proposal.", "Snow covered the mountain pass."]
    r = EmbeddingScorer(embed).score("fruit", [_ex(t, "activating") for t in pos],
                                     [_ex(t, "random") for t in neg], Chars())
    assert r.auroc == 1.0 and r.settings["query_prefix"] == QUERY_PREFIX
