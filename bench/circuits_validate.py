"""Validation by intervention on SmolLM2 (issue 17 item 5): for a few prompts, build the attribution graph through
the per-layer transcoders of bench/circuits_train.py, ablate its top-k latents one at a time, and report the
correlation of the graph's predicted target change with the actual one (replacement model and real model).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/circuits_validate.py --transcoders /tmp/circuits_tc --k 15
"""
from __future__ import annotations

import argparse
import json
import time

import torch

PROMPTS = ["The capital of France is", "One, two, three, four,", "The cat sat on the", "She opened the door and"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--transcoders", required=True)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--max-feature-nodes", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from actlab import load_model
    from actlab.circuits import GraphConfig, attribute, top_paths
    from actlab.circuits.run import load_transcoders
    from actlab.circuits.validate import pearson, validate_by_ablation

    m = load_model(a.model)
    tcs = load_transcoders(a.transcoders)
    res = []
    allp: dict[str, list] = {}
    for prompt in PROMPTS[:a.prompts]:
        t0 = time.perf_counter()
        g = attribute(m, tcs, prompt, GraphConfig(max_n_logits=1, max_feature_nodes=a.max_feature_nodes))
        t_graph = time.perf_counter() - t0
        row = {"prompt": prompt, "target": m.tokenizer.decode([int(g.logit_tokens[0])]),
               "target_p": float(g.logit_probabilities[0]), "identity_error": g.identity_error,
               "latent_rows": g.n_features, "active": g.meta["n_active"], "graph_s": round(t_graph, 1),
               "top_path": [g.node_label(i) for i in top_paths(g)[0][1]]}
        for mode, scale in (("replacement", 1.0), ("model", 1.0), ("replacement", 0.1)):
            r = validate_by_ablation(m, tcs, g, a.k, mode=mode, scale=scale)
            key = f"{mode}@{scale}"
            row[key] = {"r": round(r.correlation, 3), "r_direct": round(r.direct_correlation, 3),
                        "baseline_error": r.baseline_error}
            p, d, act = allp.setdefault(key, [[], [], []])
            p += r.predicted.tolist()
            d += r.direct.tolist()
            act += r.actual.tolist()
        print(json.dumps(row), flush=True)
        res.append(row)
    pooled = {k: {"r": round(pearson(torch.tensor(v[0]), torch.tensor(v[2])), 3),
                  "r_direct": round(pearson(torch.tensor(v[1]), torch.tensor(v[2])), 3), "n": len(v[0])}
              for k, v in allp.items()}
    print(json.dumps({"pooled": pooled}))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"prompts": res, "pooled": pooled}, f, indent=2)


if __name__ == "__main__":
    main()
