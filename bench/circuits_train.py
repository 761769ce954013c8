"""Train one TopK transcoder per SmolLM2 layer (blocks.i.mlp_in -> blocks.i.mlp_out) on the bundled demo corpus,
briefly, for the attribution-graph validation run and benchmark (docs/circuits.md). One forward pass records every
layer's pair; each transcoder then trains on those rows in memory.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/circuits_train.py --out /tmp/circuits_tc --tokens 16000 \
        --d-sae 2304 --k 16 --steps-tokens 200000
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=16_000, help="activation rows recorded per layer")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--steps-tokens", type=int, default=200_000, help="training rows per transcoder (epochs repeat)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from actlab import load_model
    from actlab.data.sources import load_texts
    from actlab.dictionary import DictConfig, TrainConfig, Trainer, tensor_source

    m = load_model(a.model)
    L = m.adapter.n_layers
    texts = load_texts("demo")
    sites = [s for i in range(L) for s in (f"blocks.{i}.mlp_in", f"blocks.{i}.mlp_out")]
    rows: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    n = 0
    t0 = time.time()
    for t in texts:
        enc = m.tokenize(t)
        ids = enc["input_ids"][:, :a.context]
        if ids.shape[1] < 8:
            continue
        rec = m.record(ids, sites, stop_early=False)
        for s in sites:
            rows[s].append(rec[s][0, 1:].to(torch.float32))            # skip the first token (attention sink)
        n += ids.shape[1] - 1
        if n >= a.tokens:
            break
    t_rec = time.time() - t0
    print(f"recorded {n} tokens x {len(sites)} sites in {t_rec:.0f}s", flush=True)
    summary = {"model": a.model, "tokens_recorded": n, "record_s": t_rec, "layers": {}}
    for i in range(L):
        x = torch.cat(rows.pop(f"blocks.{i}.mlp_in"))
        y = torch.cat(rows.pop(f"blocks.{i}.mlp_out"))
        dc = DictConfig(arch="topk", d_in=x.shape[1], d_out=y.shape[1], d_sae=a.d_sae, k=a.k,
                        site=f"blocks.{i}.mlp_in", site_out=f"blocks.{i}.mlp_out", model=m.name)
        tc = TrainConfig(total_tokens=a.steps_tokens, batch_size=a.batch, out=f"{a.out}/blocks.{i}.mlp_in",
                         progress=False, overwrite=True, checkpoint_minutes=0, warmup_steps=20, dead_tokens=50_000)
        t1 = time.time()
        d = Trainer(dc, tc, tensor_source(x, a.batch, y, seed=i)).fit()
        with torch.no_grad():
            pred = d(x[:4096])
            fvu = float((pred - y[:4096]).pow(2).sum() / (y[:4096] - y[:4096].mean(0)).pow(2).sum())
        summary["layers"][i] = {"fvu_train_rows": fvu, "train_s": time.time() - t1}
        print(f"layer {i}: FVU {fvu:.3f} ({time.time() - t1:.0f}s)", flush=True)
    with open(f"{a.out}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
