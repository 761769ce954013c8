"""Harvest throughput on SmolLM2-135M: harvest tokens/s / plain forward tokens/s, measured in the same run.

Both sides process the same packed contexts of the demo corpus (128 tokens each, batches of 8). Baseline: the
plain Hugging Face forward of the decoder stack (``module.model(input_ids)``: 30 layers + final norm, no LM head)
under no_grad. actlab: a full ``harvest()`` of ``blocks.29.resid_post`` into a fresh folder (bf16 shards, crc32,
fsync, manifest), which includes reading the corpus, tokenizing and packing. Also shown: harvesting a middle site
(blocks.15.resid_post), where the early stop makes harvest faster than the plain full forward. Interleaved repeats,
median. Target: ratio >= 0.90.

    python bench/harvest_throughput.py [--contexts 16 --repeats 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import actlab
from actlab.data import demo_corpus, load_texts, pack_contexts
from actlab.store import HarvestConfig, harvest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, default=16, help="contexts of 128 tokens per repeat")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where the model and its inputs run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = actlab.load_model("smollm2-135m-instruct", device=a.device)
    data = demo_corpus()
    L, n_tok = 128, a.contexts * 128
    ids = pack_contexts(m.tokenizer, load_texts(data), L, seed=0, max_contexts=a.contexts).input_ids
    tmp = Path(tempfile.mkdtemp(prefix="actlab-bench-harvest-"))

    def plain():
        with torch.no_grad():
            for i in range(0, len(ids), a.batch_size):
                m.module.model(input_ids=ids[i:i + a.batch_size].to(a.device), use_cache=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()                # the harvest ends on host writes; time the forward to its end too

    def run_harvest(site):
        def f():
            out = tmp / f"h{time.perf_counter_ns()}"
            st = harvest(m, HarvestConfig(data=str(data), sites=[site], out=str(out), tokens=n_tok,
                                          context_length=L, batch_size=a.batch_size, store_dtype="bf16", progress=False))
            assert len(st) == n_tok
            shutil.rmtree(out)
        return f

    methods = {"plain forward (30 layers)": plain, "harvest blocks.29.resid_post": run_harvest("blocks.29.resid_post"),
               "harvest blocks.15.resid_post": run_harvest("blocks.15.resid_post")}
    for f in methods.values():
        f()  # warm-up + smoke
    names = list(methods)
    times = {k: [] for k in names}
    for r in range(a.repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            methods[k]()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = n_tok / med[names[0]]
    for k in names:
        print(f"{k:32s} {n_tok / med[k]:9.1f} tokens/s  ratio {n_tok / med[k] / base:.3f}   runs {['%.2f' % x for x in times[k]]}")
    print(f"ratio (harvest last layer / plain forward) = {n_tok / med[names[1]] / base:.3f}  target >= 0.90")
    print(f"({n_tok} tokens per run, batch {a.batch_size}x{L}, median of {a.repeats} interleaved repeats, "
          f"torch threads={a.threads}; CPU shared with other jobs)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
