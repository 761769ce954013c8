"""Attribution graph of a 32-token prompt on SmolLM2-135M with 30 per-layer transcoders: wall time and peak memory
(actlab side; the circuit-tracer side is bench/circuits_graph_ct.py, run in its own venv on the same transcoders).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/circuits_graph.py --transcoders /tmp/circuits_tc --max-feature-nodes 500
    HF_HUB_OFFLINE=1 .venv/bin/python bench/circuits_graph.py --random 2304 --k 16      # untrained transcoders

Prints one JSON line: seconds for the replacement-model build and for the rows, peak RSS (MiB) before and after,
graph size, identity error. Timing only: untrained or briefly trained transcoders are fine (say which).
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

PROMPT = ("The quick brown fox jumps over the lazy dog near the river bank, and then the tired old dog finally "
          "falls asleep under the warm afternoon sun while the children play in the garden behind the small house")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--transcoders", help="folder of per-layer transcoders (bench/circuits_train.py)")
    ap.add_argument("--random", type=int, default=0, help="use untrained TopK transcoders of this width instead")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--max-feature-nodes", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from actlab import load_model
    from actlab.circuits import GraphConfig, attribute
    from actlab.circuits.run import load_transcoders
    from actlab.dictionary import DictConfig, build

    m = load_model(a.model)
    ids = m.tokenize(PROMPT)["input_ids"][0, :a.tokens].tolist()
    if len(ids) != a.tokens:
        raise SystemExit(f"prompt has only {len(ids)} tokens")
    if a.random:
        d = m.adapter.d_model
        tcs = []
        for i in range(m.adapter.n_layers):
            t = build(DictConfig(arch="topk", d_in=d, d_out=d, d_sae=a.random, k=a.k, site=f"blocks.{i}.mlp_in",
                                 site_out=f"blocks.{i}.mlp_out"), seed=i)
            tcs.append(t)
        what = f"untrained topk d_sae={a.random} k={a.k}"
    else:
        tcs = load_transcoders(a.transcoders)
        what = f"{a.transcoders} ({tcs[0].cfg.arch} d_sae={tcs[0].cfg.d_sae} k={tcs[0].cfg.k})"
    rss0 = rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    g = attribute(m, tcs, ids, GraphConfig(max_feature_nodes=a.max_feature_nodes, batch_size=a.batch_size))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"side": "actlab", "transcoders": what, "tokens": len(ids), "wall_s": round(wall, 2),
                      "cpu_s": round(cpu, 1),
                      "peak_rss_mib_before": round(rss0), "peak_rss_mib": round(rss_mib()),
                      "active_latents": g.meta["n_active"], "latent_rows": g.n_features, "targets": g.n_targets,
                      "identity_error": g.identity_error, "threads": a.threads}))


if __name__ == "__main__":
    main()
