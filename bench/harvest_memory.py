"""Flat memory: peak RSS of a tiny-model harvest of 20k tokens vs 200k tokens (each in a fresh process).

Each child loads tiny-llama, harvests two sites of the demo corpus with 16384-row shards, and reports its peak
RSS (ru_maxrss). Memory is bounded by the shard buffer, the batch queue and the model, not by the dataset, so the
growth from 20k to 200k tokens should be small. Target: growth < 10%.

    python bench/harvest_memory.py [--small 20000 --large 200000 --repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, torch
torch.set_num_threads(1)
import actlab
from actlab.data import demo_corpus
from actlab.store import HarvestConfig, harvest
m = actlab.load_model("tiny-llama", device=sys.argv[2])
data = demo_corpus()
out = tempfile.mkdtemp(prefix="actlab-bench-mem-")
st = harvest(m, HarvestConfig(data=str(data), sites=["blocks.0.resid_post", "blocks.1.mlp_act"], out=out,
                              tokens=int(sys.argv[1]), shard_rows=16384, batch_size=32, progress=False))
assert len(st) == int(sys.argv[1])
print(json.dumps({"rows": len(st), "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "out": out}))
"""


def run(tokens: int, device: str = "cpu") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(tokens), device], capture_output=True, text=True, env=env, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    import shutil

    shutil.rmtree(res["out"], ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where the model runs (host RSS is what is measured)")
    a = ap.parse_args()
    from actlab.data import demo_corpus

    demo_corpus()  # build once outside the measured children
    rss = {a.small: [], a.large: []}
    for _ in range(a.repeats):
        for n in (a.small, a.large):
            rss[n].append(run(n, a.device)["maxrss_kib"] / 1024)
    s, l_ = statistics.median(rss[a.small]), statistics.median(rss[a.large])
    print(f"peak RSS {a.small:>7} tokens: {s:7.1f} MiB   runs {['%.1f' % x for x in rss[a.small]]}")
    print(f"peak RSS {a.large:>7} tokens: {l_:7.1f} MiB   runs {['%.1f' % x for x in rss[a.large]]}")
    print(f"growth = {100 * (l_ / s - 1):.2f}%  (ratio {l_ / s:.3f})  target < 10%")


if __name__ == "__main__":
    main()
