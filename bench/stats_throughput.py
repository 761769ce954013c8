"""Benchmark: `actlab stats` streaming pass (massive activations on 30 resid_post sites, sparsity on 30 mlp_act
sites, per-channel ranges/moments/outlier counts on 120 linear-input groups) vs a plain forward pass of SmolLM2,
tokens/s in the same run, interleaved repeats, median. Target ratio >= 0.8.

The stats pass stops after the last hooked site (it needs no logits), so a second baseline runs the model body
without the LM head (``module.model``) to show the cost of the statistics alone.

    .venv/bin/python bench/stats_throughput.py [--contexts 8 --context-length 256 --batch 4 --repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--contexts", type=int, default=8)
    ap.add_argument("--context-length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where the model and its inputs run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    import actlab
    from actlab.data import demo_corpus, load_texts, pack_contexts
    from actlab.stats.collect import collect, make_collector

    m = actlab.load_model(a.model, device=a.device)
    ids = pack_contexts(m.tokenizer, load_texts(demo_corpus()), a.context_length,
                        max_contexts=a.contexts).input_ids
    n_tok = ids.numel()

    def plain():
        with torch.no_grad():
            for s in range(0, len(ids), a.batch):
                m.module(input_ids=ids[s:s + a.batch], use_cache=False)

    def body():
        with torch.no_grad():
            for s in range(0, len(ids), a.batch):
                m.module.model(input_ids=ids[s:s + a.batch], use_cache=False)

    acc = {}

    def stats():
        col, plan = make_collector(m)
        collect(m, ids, col, plan, a.batch, progress=False)
        acc["s"] = col.seconds
        acc["sites"] = len(plan)

    fns = {"plain forward": plain, "forward without LM head": body, "actlab stats pass": stats}
    plain()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    acc_s = []
    for _ in range(a.repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        acc_s.append(acc["s"])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {a.model}, {n_tok} tokens ({a.contexts} x {a.context_length}), batch {a.batch}, "
          f"threads {a.threads}, repeats {a.repeats} (interleaved, median); {acc['sites']} hooked sites")
    for k, v in med.items():
        print(f"  {k:28s} {n_tok / v:8.1f} tokens/s  ({v:.2f} s)")
    print(f"  accumulator time inside the stats pass: {statistics.median(acc_s):.2f} s")
    print(f"ratio stats / plain forward (tokens/s): {med['plain forward'] / med['actlab stats pass']:.3f}  "
          f"(target >= 0.8)")
    print(f"ratio stats / forward without LM head: {med['forward without LM head'] / med['actlab stats pass']:.3f}")


if __name__ == "__main__":
    main()
