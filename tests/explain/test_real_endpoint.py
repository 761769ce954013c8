"""The endpoint client against a real local OpenAI-compatible server serving real SmolLM2-135M-Instruct
generations through actlab (ChatServer: stdlib HTTP on a real socket). llama-cpp-python is source-only on PyPI and
compiles for too long for CI, so the server is actlab's own."""
from __future__ import annotations

import json

import pytest

from actlab import load_model
from actlab.explain.endpoint import EndpointConfig, read_audit
from actlab.explain.examples import Example
from actlab.explain.explainers import EndpointExplainer, ModelExplainer
from actlab.explain.prompts import PromptConfig, explainer_messages
from actlab.explain.serve import ChatServer


def word_examples(tok, word=" apple"):
    texts = [f"She packed an{word} for lunch.", f"The{word} tree was tall.", f"He ate the red{word} slowly."]
    out = []
    for i, t in enumerate(texts):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        target = tok(word, add_special_tokens=False)["input_ids"][0]
        out.append(Example(0, i * 100, ids, [3.0 if x == target else 0.0 for x in ids], i))
    return out


@pytest.mark.real
def test_endpoint_serves_real_smollm2(tmp_path):
    m = load_model("smollm2-135m-instruct")
    local = ModelExplainer(m, max_tokens=24)
    exs = word_examples(m.tokenizer)
    assert all(any(x.acts) for x in exs)
    with ChatServer(local, model_name="smollm2") as srv:
        cfg = EndpointConfig(base_url=srv.base_url, endpoint_model="smollm2", cache_dir=str(tmp_path / "c"),
                             audit_log=str(tmp_path / "audit.jsonl"), timeout=120)
        remote = EndpointExplainer(cfg, max_tokens=24)
        e_remote = remote.explain(exs, m.tokenizer, PromptConfig(activations=True))
        e_local = local.explain(exs, m.tokenizer, PromptConfig(activations=True))
        assert e_remote.response == e_local.response and e_remote.text   # same greedy text over HTTP
        assert e_remote.text == e_local.text
        again = EndpointExplainer(cfg, max_tokens=24).explain(exs, m.tokenizer, PromptConfig(activations=True))
        assert again.response == e_remote.response and srv.counter["requests"] == 1   # cached: no request
        p = remote.judge("detection")(e_remote.text, "I bought an apple.")
        assert p in (0.0, 0.5, 1.0)
        assert srv.counter["requests"] == 2
    audit = read_audit(tmp_path / "audit.jsonl")
    assert json.loads(audit[0]["response"])["choices"][0]["message"]["content"] == e_local.response
    u = explainer_messages(exs, m.tokenizer, PromptConfig(activations=True))[1]["content"]
    assert "<< apple>>" in u and "(' apple', 10)" in u
    print(f"\n[explain endpoint] explanation: {e_remote.text!r}")
