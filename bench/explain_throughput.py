"""Explanation + detection scoring throughput with the bundled SmolLM2-135M-Instruct, in-process and through a
local OpenAI-compatible endpoint (actlab's ChatServer over the same model, real HTTP on 127.0.0.1).

Latents are planted on real text: latent i fires on one frequent word of the demo corpus; its examples are
32-token windows of SmolLM2 tokens around that word (train: ``--n-train``; detection test: ``--n-test``
activating + as many non-activating windows). Each backend explains every latent (greedy, ``--max-tokens``) and
then judges every test example with the detection scorer (one example per prompt). In-process, the judge reads
P(Yes) from one forward pass; through the endpoint it generates up to 3 tokens and parses Yes/No.
Prints explanations per minute and detection judgments per minute for each backend.

    python bench/explain_throughput.py [--latents 3 --n-train 20 --n-test 10 --max-tokens 32]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from actlab import load_model
from actlab.data import load_texts
from actlab.explain import (
    ChatServer,
    DetectionScorer,
    EndpointConfig,
    EndpointExplainer,
    Example,
    ModelExplainer,
    PromptConfig,
)

WORDS = [" function", " value", " default", " file", " list", " number"]


def planted(tok, n_latents: int, n_train: int, n_test: int, ctx: int = 32):
    ids = []
    for t in load_texts("demo"):
        ids += tok(t, add_special_tokens=False)["input_ids"]
    ids = torch.tensor(ids)
    out = []
    for i, w in enumerate(WORDS[:n_latents]):
        target = tok(w, add_special_tokens=False)["input_ids"][0]
        where = (ids == target).nonzero().squeeze(1).tolist()
        pos, neg = [], []
        for p in where:
            s = max(0, p - ctx + 8)
            if pos and s < pos[-1].start + ctx:
                continue
            win = ids[s:s + ctx].tolist()
            pos.append(Example(i, s, win, [3.0 if x == target else 0.0 for x in win], 0))
        for s in range(0, len(ids) - ctx, 997):
            win = ids[s:s + ctx].tolist()
            if target not in win:
                neg.append(Example(i, s, win, [0.0] * ctx, 0, kind="random"))
        if len(pos) < n_train + n_test:
            raise ValueError(f"{w!r} occurs in only {len(pos)} windows of the demo corpus")
        out.append((pos[:n_train], pos[n_train:n_train + n_test], neg[:n_test]))
    return out


def run(explainer, tok, sets) -> tuple[float, float, list[str]]:
    t0 = time.perf_counter()
    exps = [explainer.explain(train, tok, PromptConfig()) for train, _, _ in sets]
    t1 = time.perf_counter()
    judge = DetectionScorer(explainer.judge("detection"))
    n = 0
    for e, (_, test, neg) in zip(exps, sets):
        judge.score(e.text, test, neg, tok)
        n += len(test) + len(neg)
    t2 = time.perf_counter()
    return 60 * len(exps) / (t1 - t0), 60 * n / (t2 - t1), [e.text for e in exps]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latents", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    m = load_model("smollm2-135m-instruct")
    sets = planted(m.tokenizer, a.latents, a.n_train, a.n_test)
    local = ModelExplainer(m, max_tokens=a.max_tokens)
    e_min, d_min, texts = run(local, m.tokenizer, sets)
    print(f"{a.latents} latents, {a.n_train} train examples each (32 tokens), detection on {a.n_test} + {a.n_test} "
          f"examples each; max {a.max_tokens} new tokens; threads {torch.get_num_threads()}")
    print(f"in-process : {e_min:6.1f} explanations/min   {d_min:7.1f} detection judgments/min")
    with tempfile.TemporaryDirectory() as td, ChatServer(local, model_name="smollm2") as srv:
        remote = EndpointExplainer(EndpointConfig(base_url=srv.base_url, endpoint_model="smollm2", timeout=300,
                                                  cache_dir=os.path.join(td, "c")), max_tokens=a.max_tokens)
        r_e, r_d, r_texts = run(remote, m.tokenizer, sets)
        print(f"endpoint   : {r_e:6.1f} explanations/min   {r_d:7.1f} detection judgments/min  (HTTP, 127.0.0.1)")
        c_e, c_d, _ = run(remote, m.tokenizer, sets)
        print(f"endpoint, rerun from its cache: {c_e:8.0f} explanations/min  {c_d:8.0f} judgments/min")
    print(f"same explanations in-process and over HTTP: {texts == r_texts}; e.g. {texts[0]!r}")


if __name__ == "__main__":
    main()
