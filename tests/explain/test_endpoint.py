"""The OpenAI-compatible endpoint client against real local HTTP servers (stdlib ThreadingHTTPServer on a real
socket): each fault (HTTP 500, 429 + Retry-After, a response slower than the timeout, malformed JSON) is retried
or ends in a clear error; the on-disk cache answers reruns and survives SIGKILL mid-run intact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actlab.explain.endpoint import (
    EndpointClient,
    EndpointConfig,
    EndpointError,
    ResponseCache,
    cache_key,
    read_audit,
    retry_after,
)
from actlab.explain.explainers import EndpointExplainer, Explainer
from actlab.explain.serve import ChatServer

from .faultserver import FaultServer, echo

ROOT = Path(__file__).resolve().parents[2]


def msgs(i):
    return [{"role": "user", "content": f"question {i}"}]


def cfg(server, tmp_path, **kw):
    kw.setdefault("backoff", 0.01)
    return EndpointConfig(base_url=server.base_url, endpoint_model="m", cache_dir=str(tmp_path / "cache"),
                          audit_log=str(tmp_path / "audit.jsonl"), **kw)


def test_every_fault_is_retried(tmp_path):
    script = [("status", 500), ("429", 1), ("slow", 1.5), ("malformed",), ("nochoices",), ("status", 503)]
    with FaultServer(script) as s:
        c = EndpointClient(cfg(s, tmp_path, timeout=0.5, max_retries=6))
        t0 = time.time()
        assert c.chat(msgs(0)) == "echo: question 0"
        assert len(s.requests) == 7 and c.stats["retries"] == 6
        assert s.times[2] - s.times[1] >= 1.0          # Retry-After: 1 honoured (backoff alone is ~0.02 s)
        assert time.time() - t0 < 8
    audit = read_audit(tmp_path / "audit.jsonl")
    assert [a["status"] for a in audit] == [500, 429, None, 200, 200, 503, 200]
    assert "no response within 0.5 s" in audit[2]["error"] and "malformed" in audit[3]["error"]
    assert json.loads(audit[-1]["response"])["choices"][0]["message"]["content"] == "echo: question 0"


def test_gives_up_with_a_clear_error(tmp_path):
    with FaultServer([("status", 500)] * 3) as s:
        c = EndpointClient(cfg(s, tmp_path, max_retries=2))
        with pytest.raises(EndpointError, match=r"failed after 3 attempts; last error: HTTP 500"):
            c.chat(msgs(0))
        assert len(s.requests) == 3
    with FaultServer([("status", 401)]) as s:
        with pytest.raises(EndpointError, match="refused the request .*HTTP 401.*not retried"):
            EndpointClient(cfg(s, tmp_path, max_retries=5)).chat(msgs(0))
        assert len(s.requests) == 1
    with FaultServer([("malformed",)] * 2) as s, pytest.raises(EndpointError, match="malformed response"):
        EndpointClient(cfg(s, tmp_path, max_retries=1)).chat(msgs(1))
    bad = EndpointConfig(base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(EndpointError, match="cannot reach"):
        EndpointClient(bad).chat(msgs(0))
    with pytest.raises(ValueError, match="http://"):
        EndpointConfig(base_url="localhost:8080").resolved()


def test_cache_key_params_and_key_secrecy(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret")
    with FaultServer() as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.base_url)
        c = EndpointClient(EndpointConfig(api_key_env="MY_KEY", cache_dir=str(tmp_path / "c"), backoff=0.01,
                                          audit_log=str(tmp_path / "a.jsonl")))
        assert c.base_url == s.base_url and c.model == "default"
        assert c.chat(msgs(1)) == c.chat(msgs(1)) == "echo: question 1"
        assert len(s.requests) == 1 and c.stats["cache_hits"] == 1
        assert s.requests[0]["auth"] == "Bearer sk-secret"
        c.chat(msgs(1), temperature=0.7)                 # other params: another key, another request
        c.chat(msgs(1), max_tokens=5)
        assert len(s.requests) == 3
        assert len(ResponseCache(tmp_path / "c").keys()) == 3
    on_disk = "".join(p.read_text() for p in (tmp_path / "c").rglob("*.json")) + (tmp_path / "a.jsonl").read_text()
    assert "sk-secret" not in on_disk
    k = cache_key(msgs(1), "default", {"max_tokens": 64, "temperature": 0.0})
    assert ResponseCache(tmp_path / "c").get(k) == "echo: question 1"
    assert k != cache_key(msgs(1), "other", {"max_tokens": 64, "temperature": 0.0})
    # a damaged entry is a miss, not a crash or a wrong answer
    k2 = cache_key(msgs(2), "default", {"max_tokens": 64, "temperature": 0.0})
    ResponseCache(tmp_path / "c").path(k2).parent.mkdir(parents=True, exist_ok=True)
    ResponseCache(tmp_path / "c").path(k2).write_text(ResponseCache(tmp_path / "c").path(k).read_text())
    assert ResponseCache(tmp_path / "c").get(k2) is None       # an entry under the wrong name is not an answer
    ResponseCache(tmp_path / "c").path(k).write_text('{"key": "')
    assert ResponseCache(tmp_path / "c").get(k) is None


def test_retry_after_forms():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    from email.utils import formatdate
    assert 4 <= retry_after(formatdate(time.time() + 6, usegmt=True)) <= 6


def test_concurrency_limit(tmp_path):
    with FaultServer(delay=0.15) as s:
        c = EndpointClient(cfg(s, tmp_path, concurrency=2))
        out = c.chat_many([msgs(i) for i in range(6)])
        assert out == [f"echo: question {i}" for i in range(6)]
        assert s.max_in_flight == 2


class EchoExplainer(Explainer):
    name = "echo"

    def complete(self, messages, max_tokens=None, temperature=None):
        return f"I think so.\n[EXPLANATION]: words like {messages[-1]['content'].split()[-1]}"


def test_chat_server_round_trip(tmp_path):
    with ChatServer(EchoExplainer(), model_name="echo") as srv:
        e = EndpointExplainer(EndpointConfig(base_url=srv.base_url, endpoint_model="echo", max_retries=0))
        assert e.complete(msgs(7)) == "I think so.\n[EXPLANATION]: words like 7"
        with pytest.raises(EndpointError, match="HTTP 400"):
            e.complete([])
        assert srv.counter["requests"] == 2


KILLED = r"""
import os, signal, sys, threading
from actlab.explain.endpoint import EndpointClient, EndpointConfig
url, folder, mode = sys.argv[1:4]
if mode == "replace":   # die between writing a temp file and renaming it, on the 3rd entry
    real, n, lock = os.replace, [0], threading.Lock()
    def replace(a, b):
        with lock:      # count and rename together: two threads' renames cannot straddle the kill
            n[0] += 1
            if n[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
    os.replace = replace
c = EndpointClient(EndpointConfig(base_url=url, endpoint_model="m", cache_dir=folder, concurrency=4))
c.chat_many([[{"role": "user", "content": f"question {i}"}] for i in range(40)])
"""


@pytest.mark.parametrize("mode", ["random", "replace"])
def test_cache_intact_after_sigkill(tmp_path, mode):
    folder = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with FaultServer(delay=0.05) as s:
        p = subprocess.Popen([sys.executable, "-c", KILLED, s.base_url, str(folder), mode], env=env)
        if mode == "random":
            t0 = time.time()
            while len(list(folder.glob("??/*.json"))) < 8 and time.time() - t0 < 60 and p.poll() is None:
                time.sleep(0.01)
            p.send_signal(signal.SIGKILL)
        assert p.wait(60) == -signal.SIGKILL
        cache = ResponseCache(folder)
        keys = cache.keys()
        assert 2 <= len(keys) < 40
        if mode == "replace":
            assert len(keys) == 2 and list(folder.glob("??/.*.tmp"))   # a temp file left, not an entry
        by_key = {cache_key(msgs(i), "m", {"max_tokens": 64, "temperature": 0.0}): i for i in range(40)}
        for k in keys:
            assert cache.get(k) == f"echo: question {by_key[k]}"     # every entry whole and right
        before = len(s.requests)
        c = EndpointClient(EndpointConfig(base_url=s.base_url, endpoint_model="m", cache_dir=str(folder)))
        assert c.chat_many([msgs(i) for i in range(40)]) == [echo(msgs(i)) for i in range(40)]
        assert len(s.requests) - before == 40 - len(keys) and c.stats["cache_hits"] == len(keys)
