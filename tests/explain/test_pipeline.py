"""explain -> score pipeline on the planted corpus with a stub LLM: the explanation names the planted token, the
scorers see only held-out examples and give 1.0, artifacts round-trip, and the Neuronpedia export has exactly
Neuronpedia's fields with the cache's values."""
from __future__ import annotations

import json

import pytest

from actlab.explain import ExampleConfig, PromptConfig
from actlab.explain.examples import activating_windows, build_examples
from actlab.explain.neuronpedia import (
    ACTIVATION_FIELDS,
    EXPLANATION_FIELDS,
    FEATURE_FIELDS,
    SCORE_FIELDS,
    export_neuronpedia,
    read_batch,
)
from actlab.explain.pipeline import (
    SelectConfig,
    explain_latents,
    load_explanations,
    load_scores,
    save_explanations,
    save_scores,
    score_explanations,
    select_latents,
    summary,
)
from actlab.explain.scorers import DetectionScorer, FuzzingScorer

from .planted import WordTokenizer, planted_cache
from .stubllm import StubLLM

TK = WordTokenizer()
ECFG = ExampleConfig(n_train=8, n_test=20, n_non_activating=20, ctx_len=12, after=3)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    c, _, _ = planted_cache(tmp / "c", exclude=("banana",), n_docs=60)
    return tmp, c


def test_explain_and_score(planted):
    tmp, c = planted
    assert select_latents(c, SelectConfig(min_examples=50)) == [1, 0]       # numbers fire more often than apple
    assert select_latents(c, SelectConfig(min_examples=50, max_latents=1)) == [1]
    with pytest.raises(IndexError, match="out of range"):
        select_latents(c, SelectConfig(), [7])
    llm = StubLLM()
    exps = explain_latents(c, [0, 2], llm, TK, ECFG, PromptConfig(contrastive=True, n_contrastive=4))
    assert [e.latent for e in exps] == [0]                  # latent 2 never fires: skipped
    assert exps[0].text == "the token apple" and exps[0].explainer == "stub"
    s = build_examples(c, 0, ECFG)
    train = set(exps[0].settings["train_starts"])
    assert train == {x.start for x in s.train} and not train & {x.start for x in s.test}
    shown = exps[0].messages[1]["content"].split("NOT active")[1]
    for x in s.non_activating:                              # contrastive block never shows a test negative
        assert x.text(TK) not in shown
    save_explanations(tmp / "e", exps, {"examples": {}})
    _, back = load_explanations(tmp / "e")
    assert back[0].text == exps[0].text and back[0].messages == exps[0].messages
    judge = llm.judge("detection")
    res = score_explanations(c, back, {"detection": DetectionScorer(judge),
                                       "fuzzing": FuzzingScorer(llm.judge("fuzzing"))}, TK, ECFG)
    assert [(r.scorer, r.value) for r in res] == [("detection", 1.0), ("fuzzing", 1.0)]
    assert res[0].n_activating == 20 and res[0].n_non_activating == 20
    test_texts = {x.text(TK) for x in s.test}
    assert {r["text"] for r in res[0].records if r["label_active"]} == test_texts
    save_scores(tmp / "s", res, {"summary": summary(res)})
    _, rback = load_scores(tmp / "s")
    assert rback[0].value == 1.0 and rback[0].records == res[0].records


def test_neuronpedia_export(planted):
    tmp, c = planted
    llm = StubLLM()
    exps = explain_latents(c, [0], llm, TK, ECFG)
    res = score_explanations(c, exps, {"detection": DetectionScorer(llm.judge("detection"))}, TK, ECFG)
    folder = export_neuronpedia(c, tmp / "np", model_id="planted-model", source="0-res-test", tokenizer=TK,
                                explanations=exps, scores=res, judge="stub", n_activations=5)
    assert folder == tmp / "np" / "planted-model" / "0-res-test"
    feats = read_batch(folder / "features" / "batch-0.jsonl.gz")
    acts = read_batch(folder / "activations" / "batch-0.jsonl.gz")
    ex = read_batch(folder / "explanations" / "batch-0.jsonl.gz")
    sc = read_batch(folder / "explanation_scores" / "batch-0.jsonl.gz")
    assert [tuple(f) for f in feats] == [FEATURE_FIELDS]
    assert all(tuple(a) == ACTIVATION_FIELDS for a in acts) and len(acts) == 5
    assert [tuple(e) for e in ex] == [EXPLANATION_FIELDS] and [tuple(s) for s in sc] == [SCORE_FIELDS]
    f = feats[0]
    assert f["index"] == "0" and f["layer"] == "0-res-test" and f["modelId"] == "planted-model"
    assert f["maxActApprox"] == pytest.approx(float(c.max[0])) and f["frac_nonzero"] == pytest.approx(
        float(c.density[0]))
    assert f["freq_hist_data_bar_heights"] == c.hist[0].double().tolist()
    top = activating_windows(c, 0, ExampleConfig(), limit=5)
    for a, x in zip(acts, top):
        assert a["values"] == pytest.approx(x.acts) and a["maxValue"] == pytest.approx(x.max_act)
        assert a["tokens"][a["maxValueTokenIndex"]] == " apple" and "".join(a["tokens"]) == x.text(TK)
        assert a["minValue"] == pytest.approx(min(x.acts)) and a["dataIndex"] == str(x.start)
    assert ex[0]["description"] == "the token apple" and ex[0]["explanationModelName"] == "stub"
    assert sc[0]["explanationId"] == ex[0]["id"] and sc[0]["value"] == 1.0
    assert sc[0]["explanationScoreTypeName"] == "detection" and sc[0]["explanationScoreModelName"] == "stub"
    assert json.loads(sc[0]["jsonDetails"])["balanced_accuracy"] == 1.0
    again = export_neuronpedia(c, tmp / "np2", model_id="planted-model", source="0-res-test", tokenizer=TK,
                               explanations=exps, scores=res, judge="stub", n_activations=5)
    assert [a["id"] for a in read_batch(again / "activations" / "batch-0.jsonl.gz")] == [a["id"] for a in acts]
    with pytest.raises(ValueError, match="without '/'"):
        export_neuronpedia(c, tmp / "x", model_id="a/b", source="0-x", tokenizer=TK)
