"""Probe training throughput on cached activations: actlab's logistic probe (Newton, float64) vs scikit-learn's
LogisticRegression (lbfgs, same objective, C=1) on the same rows in the same run; also mean_diff and LDA.

  python bench/probe_train.py [--model smollm2-135m-instruct --site blocks.15.resid_post --tokens 20000 --repeats 5]

Activations: every token of real English text (Python's bundled documentation topics) at one site, labelled by
whether the token lies in the first or second half of its 128-token window (a real, non-trivial linear target),
recorded once and cached as safetensors under --cache. Prints rows/s for each trainer, ratio = actlab / sklearn
(median of paired rounds), and the agreement of the two logistic solutions (max |score difference|).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def corpus_ids(tok, n: int) -> torch.Tensor:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return tok(text, return_tensors="pt")["input_ids"][0][:n]


def cached_acts(model_name: str, site: str, tokens: int, ctx: int, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from actlab import load_model
    from actlab.artifact import load_tensors, save_tensors

    f = cache / f"{model_name.replace('/', '_')}_{site}_{tokens}_{ctx}.safetensors"
    if f.exists():
        t = load_tensors(f)
        return t["x"], t["y"]
    m = load_model(model_name)
    ids = corpus_ids(m.tokenizer, tokens)
    ids = ids[: len(ids) // ctx * ctx].view(-1, ctx)
    xs = []
    for i in range(0, len(ids), 8):
        xs.append(m.record({"input_ids": ids[i:i + 8]}, [site], dtype=torch.float32)[site].reshape(-1, m.d_model))
    x = torch.cat(xs)
    y = (torch.arange(ctx) >= ctx // 2).long().repeat(len(ids))
    save_tensors(f, {"x": x, "y": y})
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--site", default="blocks.15.resid_post")
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", default="/tmp/actlab_bench_probe")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    from actlab.probe import fit_probe

    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    x, y = cached_acts(a.model, a.site, a.tokens, a.ctx, cache)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)   # both trainers see the same standardised rows
    xn, yn = x.double().numpy(), y.numpy()
    n = len(y)
    print(f"{n} rows x {x.shape[1]} dims from {a.model} {a.site}")
    last = {}

    def ours() -> None:
        last["ours"] = fit_probe(x, y, "logistic", C=1.0)

    def sk() -> None:
        last["sk"] = LogisticRegression(C=1.0, max_iter=5000, tol=1e-6).fit(xn, yn)

    methods = {"actlab logistic (Newton)": ours, "sklearn LogisticRegression (lbfgs)": sk,
               "actlab mean_diff": lambda: fit_probe(x, y, "mean_diff"), "actlab lda": lambda: fit_probe(x, y, "lda")}
    times = {k: [] for k in methods}
    for r in range(a.repeats + 1):
        for k in list(methods)[r % len(methods):] + list(methods)[: r % len(methods)]:
            t0 = time.perf_counter()
            methods[k]()
            if r:
                times[k].append(time.perf_counter() - t0)
    base = "sklearn LogisticRegression (lbfgs)"
    rows = []
    for k, ts in times.items():
        paired = statistics.median(b / t for t, b in zip(ts, times[base]))
        rows.append({"method": k, "median_s": statistics.median(ts), "rows_per_s": n / statistics.median(ts),
                     "speedup_vs_sklearn": paired})
        print(f"  {k:<38} {statistics.median(ts):8.3f} s {n / statistics.median(ts):12.0f} rows/s "
              f"ratio (rows/s actlab / sklearn) {paired:6.2f}")
    diff = np.abs(last["ours"].score(x).double().numpy() - last["sk"].decision_function(xn)).max()
    print(f"max |score(actlab) - decision_function(sklearn)| = {diff:.2e}")
    if a.json:
        Path(a.json).write_text(json.dumps({"n": n, "d": x.shape[1], "rows": rows, "max_score_diff": float(diff)}))


if __name__ == "__main__":
    main()
