"""Scorers on planted latents (spec §4): stub judge 1.0 for the right keyword and 0.5 for a wrong one, balanced
accuracy independent of the class ratio, exact fuzz highlighting, embedding stub AUROC 1.0, metric formulas."""
from __future__ import annotations

import random
import re

import pytest
import torch

from actlab.explain.examples import ExampleConfig, build_examples
from actlab.explain.metrics import auroc, balanced_accuracy, precision_recall_f1
from actlab.explain.scorers import DetectionScorer, EmbeddingScorer, FuzzingScorer, fuzz_marks, random_marks

from .planted import WORDS, WordTokenizer, planted_cache

TK = WordTokenizer()


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    c, _x, _tok = planted_cache(tmp_path_factory.mktemp("sc") / "c", exclude=("banana",), n_docs=60)
    return build_examples(c, 0, ExampleConfig(n_train=10, n_test=30, n_non_activating=20, ctx_len=16, after=4))


def keyword_judge(expl, text):
    return expl.split()[-1] in text.split()


def fuzz_judge(expl, text):
    """Correct iff every highlighted span is the explanation's keyword."""
    spans = re.findall(r"<<(.*?)>>", text)
    return bool(spans) and all(set(s.split()) == {expl.split()[-1]} for s in spans)


def test_detection_and_fuzzing_stub(examples):
    s = examples
    assert len(s.test) == 30 and len(s.non_activating) == 20
    for scorer, judge in ((DetectionScorer, keyword_judge), (FuzzingScorer, fuzz_judge)):
        good = scorer(judge).score("the token apple", s.test, s.non_activating, TK)
        bad = scorer(judge).score("the token banana", s.test, s.non_activating, TK)
        assert good.balanced_accuracy == 1.0 and good.precision == 1.0 and good.recall == 1.0
        assert bad.balanced_accuracy == 0.5, scorer
        assert good.settings["examples_per_prompt"] == 1 and len(good.records) == 50
        assert set(good.per_quantile) >= {"q0", "q9", "non_activating"}


def test_balanced_accuracy_ignores_class_ratio(examples):
    s = examples

    def judge(expl, text):   # imperfect: also fires on "pear"
        return "apple" in text.split() or "pear" in text.split()
    a = DetectionScorer(judge).score("apple", s.test, s.non_activating, TK)
    b = DetectionScorer(judge).score("apple", s.test, s.non_activating * 3, TK)
    assert 0.5 < a.balanced_accuracy < 1.0
    assert a.balanced_accuracy == pytest.approx(b.balanced_accuracy)
    acc = [sum(r["pred"] == r["label"] for r in x.records) / len(x.records) for x in (a, b)]
    assert acc[0] != pytest.approx(acc[1])   # plain accuracy would move


def test_fuzz_highlighting_exact(examples):
    s = examples
    sc = FuzzingScorer(fuzz_judge)
    for x in s.test:
        marks = fuzz_marks(x)
        m = max(x.acts)
        assert marks == [a > 0 and a >= 0.3 * m for a in x.acts]
        assert any(marks)
    k = sc.n_incorrect(s.test)
    assert k == -(-sum(sum(fuzz_marks(x)) for x in s.test) // len(s.test))
    r = sc.score("apple", s.test, s.non_activating, TK)
    for rec in r.records:
        if not rec["label_active"]:
            assert rec["text"].count("<<") <= k
            marked = sum(len(span.split()) for span in re.findall(r"<<(.*?)>>", rec["text"]))
            assert marked == k
    assert sum(random_marks(16, 5, random.Random(0))) == 5


def bag_of_words(texts):
    return torch.tensor([[t.split().count(w) for w in WORDS] for t in texts], dtype=torch.float)


def test_embedding_stub_auroc(examples):
    s = examples
    r = EmbeddingScorer(bag_of_words, query_prefix="").score("apple", s.test, s.non_activating, TK)
    assert r.auroc == 1.0 and r.balanced_accuracy is None
    r = EmbeddingScorer(bag_of_words, query_prefix="").score("banana", s.test, s.non_activating, TK)
    assert r.auroc == 0.5


def test_metrics_formulas():
    y = [True, True, True, False]
    p = [True, False, True, False]
    assert balanced_accuracy(y, p) == pytest.approx((2 / 3 + 1) / 2)
    assert precision_recall_f1(y, p) == pytest.approx((1.0, 2 / 3, 0.8))
    assert auroc([True, False, True, False], [0.9, 0.1, 0.4, 0.4]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert auroc([True, True], [1, 2]) is None


def test_every_scorer_exported_with_a_headline_value(examples):
    import actlab.explain as E
    for name in ("DetectionScorer", "FuzzingScorer", "EmbeddingScorer", "SurprisalScorer", "InterventionScorer"):
        assert issubclass(getattr(E, name), E.Scorer) and name in E.__all__
    s = examples
    d = DetectionScorer(keyword_judge).score("apple", s.test, s.non_activating, TK)
    assert d.value == d.balanced_accuracy == 1.0
    e = EmbeddingScorer(bag_of_words, query_prefix="").score("apple", s.test, s.non_activating, TK)
    assert e.value == e.auroc == 1.0
