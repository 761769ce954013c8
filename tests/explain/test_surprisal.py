"""Surprisal scorer: a stub LM that finds keyword texts likelier after the keyword gives AUROC 1.0 for the right
explanation and 0.5 for a wrong one; model_logprob equals Hugging Face's own loss on the text tokens."""
from __future__ import annotations

import pytest
import torch

from actlab import load_model
from actlab.explain.examples import ExampleConfig, build_examples
from actlab.explain.surprisal import SurprisalScorer, model_logprob

from .planted import WordTokenizer, planted_cache


def stub_lm(prefix, text):
    """Each word costs -3 nats, or -1 when the prefix names it."""
    named = set(prefix.replace(":", " ").split())
    return float(sum(-1.0 if w in named else -3.0 for w in text.split()))


def test_surprisal_stub(tmp_path):
    c, _, _ = planted_cache(tmp_path / "c", exclude=("banana",))
    s = build_examples(c, 0, ExampleConfig(n_train=5, n_test=20, n_non_activating=20, ctx_len=12, after=3))
    good = SurprisalScorer(stub_lm).score("apple", s.test, s.non_activating, WordTokenizer())
    bad = SurprisalScorer(stub_lm).score("banana", s.test, s.non_activating, WordTokenizer())
    assert good.auroc == 1.0 and bad.auroc == 0.5
    assert all(r["gain"] > 0 for r in good.records if r["label"])
    with pytest.raises(ValueError, match="explanation"):
        SurprisalScorer(stub_lm, template="no slot")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_model_logprob_equals_hf_loss(name):
    m = load_model(name)
    lp = model_logprob(m)
    tok = m.tokenizer
    prefix, text = "fruit:", " an apple a day"
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    t = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.bos_token_id] + p + t])
    labels = ids.clone()
    labels[0, : 1 + len(p)] = -100
    with torch.no_grad():
        loss = m.module(input_ids=ids, labels=labels).loss
    assert lp(prefix, text) == pytest.approx(-float(loss) * len(t), rel=1e-5)
    assert lp("", text) != pytest.approx(lp(prefix, text))
