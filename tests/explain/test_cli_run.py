"""`actlab explain run|score|export-neuronpedia|export-html` in-process on a tiny model's store, with the endpoint
explainer talking to a real local HTTP server (ChatServer over a stub LLM), and clear errors (exit 2)."""
from __future__ import annotations

import json

import pytest

from actlab import load_model
from actlab.cli import main
from actlab.dictionary import DictConfig, build
from actlab.explain import ChatServer
from actlab.explain.neuronpedia import FEATURE_FIELDS, read_batch
from actlab.explain.pipeline import load_explanations, load_scores
from actlab.store import HarvestConfig, harvest

from .stubllm import StubLLM

SITE = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clirun")
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"doc {i}: the apple and the pear, {i * 7} cake"}) + "\n"
                              for i in range(40)))
    m = load_model("tiny-llama")
    harvest(m, HarvestConfig(data=str(corpus), sites=[SITE], out=str(tmp / "store"), tokens=800,
                             context_length=32, store_dtype="fp32", progress=False))
    build(DictConfig(arch="topk", d_in=64, d_sae=64, k=4, site=SITE, model="tiny-llama"), seed=0).save(tmp / "sae")
    main(["explain", "cache", "--store", str(tmp / "store"), "--dictionary", str(tmp / "sae"), "--out",
          str(tmp / "cache"), "--noprogress"])
    return tmp


def test_run_score_export(cached, capsys):
    tmp = cached
    llm = StubLLM()
    with ChatServer(llm, model_name="stub") as srv:
        ep = ["--explainer", "endpoint", "--base-url", srv.base_url, "--endpoint-model", "stub",
              "--cache-dir", str(tmp / "llmcache"), "--audit-log", str(tmp / "audit.jsonl")]
        main(["explain", "run", "--cache", str(tmp / "cache"), "--min-examples", "5", "--max-latents", "2",
              "--n-train", "6", "--n-test", "5", "--n-non-activating", "5", "--out", str(tmp / "exp"), *ep])
        out = capsys.readouterr().out
        assert "explained 2 latent(s) with endpoint:stub@" in out
        _, exps = load_explanations(tmp / "exp")
        assert len(exps) == 2 and all(e.text.startswith("the token ") for e in exps)
        assert srv.counter["requests"] == 2
        main(["explain", "score", "--explanations", str(tmp / "exp"), "--scorers", "detection", "--out",
              str(tmp / "sc"), *ep])
        assert "detection: mean" in capsys.readouterr().out
        sconf, res = load_scores(tmp / "sc")
        assert [r.latent for r in res] == [e.latent for e in exps] and sconf["judge"].startswith("endpoint:stub")
        n_judged = sum(r.n_activating + r.n_non_activating for r in res)
        assert srv.counter["requests"] == 2 + n_judged          # one question per example
        main(["explain", "score", "--explanations", str(tmp / "exp"), "--scorers", "detection", "--out",
              str(tmp / "sc2"), *ep])
        assert srv.counter["requests"] == 2 + n_judged          # a rerun is answered from the cache
        assert [r.value for r in load_scores(tmp / "sc2")[1]] == [r.value for r in res]
    main(["explain", "export-neuronpedia", "--cache", str(tmp / "cache"), "--explanations", str(tmp / "exp"),
          "--scores", str(tmp / "sc"), "--model-id", "tiny-llama", "--source", "1-res-test", "--out",
          str(tmp / "np"), "--activations", "3"])
    feats = read_batch(tmp / "np" / "tiny-llama" / "1-res-test" / "features" / "batch-0.jsonl.gz")
    assert [int(f["index"]) for f in feats] == sorted(e.latent for e in exps)
    assert all(tuple(f) == FEATURE_FIELDS and len(f["pos_str"]) == 10 for f in feats)   # promoted tokens
    with pytest.raises(SystemExit) as e:
        main(["explain", "score", "--explanations", str(tmp / "exp"), "--scorers", "simulation", "--out",
              str(tmp / "x")])
    assert e.value.code == 2 and "unknown scorer" in capsys.readouterr().err


def test_export_html(cached, capsys):
    pytest.importorskip("actlab.web.export")
    tmp = cached
    main(["explain", "export-html", str(tmp / "cache"), "--latent", "0", "--out", str(tmp / "site")])
    assert (tmp / "site" / "index.html").exists()
