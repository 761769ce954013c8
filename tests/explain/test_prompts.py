"""Explainer and judge prompts on the planted corpus: << >> marks exactly the activating tokens, activations on a
0-10 scale, the contrastive block, answer parsing, and the Explainer base's judge plumbing."""
from __future__ import annotations

import re

import pytest

from actlab.explain import Explainer, PromptConfig, explainer_messages, judge_messages, parse_explanation
from actlab.explain.examples import ExampleConfig, build_examples
from actlab.explain.prompts import activation_pairs, parse_yes_no
from actlab.explain.scorers import DetectionScorer

from .planted import WordTokenizer, planted_cache

TK = WordTokenizer()


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    c, _, _ = planted_cache(tmp_path_factory.mktemp("p") / "c", exclude=("banana",))
    return build_examples(c, 0, ExampleConfig(n_train=6, n_test=10, n_non_activating=10, ctx_len=10, after=2))


def test_explainer_prompt(ex):
    m = explainer_messages(ex.train, TK)
    assert [x["role"] for x in m] == ["system", "user"] and "[EXPLANATION]:" in m[0]["content"]
    u = m[1]["content"]
    assert u.count("Example ") == 6 and "Activations" not in u and "NOT active" not in u
    for x in ex.train:
        n_marked = sum(a > 0 for a in x.acts)
        spans = re.findall(r"<<(.*?)>>", x.highlighted(TK))
        assert x.highlighted(TK) in u and " ".join(spans).split() == ["apple"] * n_marked
    top = max(x.max_act for x in ex.train)
    m = explainer_messages(ex.train, TK, PromptConfig(activations=True, contrastive=True, n_contrastive=3),
                           ex.non_activating)
    u = m[1]["content"]
    assert u.count("Activations: ") == 6 and u.count("Counter-example") == 3
    pairs = [p for x in ex.train for p in activation_pairs(x, TK, top)]
    assert all(t == " apple" for t, _ in pairs) and max(v for _, v in pairs) == 10
    assert all(0 <= v <= 10 for _, v in pairs)
    neg_part = u.split("NOT active")[1]
    assert "<<" not in neg_part and ex.non_activating[0].text(TK) in neg_part
    with pytest.raises(ValueError, match="non-activating"):
        explainer_messages(ex.train, TK, PromptConfig(contrastive=True))
    with pytest.raises(ValueError, match="no activating"):
        explainer_messages([], TK)


def test_parsing():
    assert parse_explanation("The marked words are fruit.\n[EXPLANATION]: the word \"apple\".") == 'the word "apple"'
    assert parse_explanation("[EXPLANATION]: a\n[EXPLANATION]: fruit names") == "fruit names"
    assert parse_explanation("\n  \"Apple tokens.\"\nmore") == "Apple tokens"
    assert parse_explanation("The feature detects the following:\n\n- the word default.\n- more") == "the word default"
    assert parse_explanation("Answer:") == "Answer:"
    assert parse_yes_no("Yes.") is True and parse_yes_no(" no, it is not") is False
    assert parse_yes_no("Maybe") is None and parse_yes_no("Nobody") is None
    with pytest.raises(ValueError, match="detection or fuzzing"):
        judge_messages("simulation", "x", "y")


class KeywordLLM(Explainer):
    """Answers judge questions by looking for the feature's last word in the example."""

    def complete(self, messages, max_tokens=None, temperature=None):
        u = messages[-1]["content"]
        feature = u.split("Feature: ")[1].split("\n")[0].split()[-1]
        example = u.split("Example: ")[1].split("\n")[0]
        return "Yes" if feature in example.split() else "No"


def test_llm_judge_plumbing(ex):
    j = KeywordLLM().judge("detection")
    good = DetectionScorer(j).score("the token apple", ex.test, ex.non_activating, TK)
    bad = DetectionScorer(j).score("the token banana", ex.test, ex.non_activating, TK)
    assert good.balanced_accuracy == 1.0 and bad.balanced_accuracy == 0.5
