"""bf16 harvest vs fp32: tokens/s of the same harvest with the model in bf16 and in fp32 (activations stored bf16
in both), and the drift that bf16 brings to the stored statistics and to an SAE's metrics.

Same tokens, same order: both harvests read the same corpus with the same config, so row i is the same token.
Reported: tokens/s (median of interleaved repeats) and the ratio; per-site relative drift of the mean vector and of
the per-dimension std, the median row-wise relative error; an SAE (TopK) trained on the fp32 rows, evaluated on the
held-out fp32 rows and on the same rows of the bf16 harvest (FVU, L0).

  python bench/harvest_bf16.py [--model smollm2-135m-instruct --tokens 4096 --repeats 3] [--device cuda]
  python bench/harvest_bf16.py --short            # tiny-llama, 2048 tokens
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--site", default=None, help="default: the middle layer's resid_post")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--short", action="store_true", help="tiny-llama, 2048 tokens, 1 repeat")
    a = ap.parse_args()
    if a.short:
        a.model, a.tokens, a.repeats = "tiny-llama", 2048, 1
    torch.set_num_threads(a.threads)
    import actlab
    from actlab.data import demo_corpus
    from actlab.dictionary import DictConfig
    from actlab.dictionary.trainer import TrainConfig, Trainer
    from actlab.store import ActivationStore, HarvestConfig, harvest
    data = demo_corpus()
    models = {dt: actlab.load_model(a.model, dtype=dt, device=a.device) for dt in ("fp32", "bf16")}
    site = a.site or f"blocks.{models['fp32'].n_layers // 2}.resid_post"
    tmp = Path(tempfile.mkdtemp(prefix="actlab-bench-harvest-bf16-"))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    stores = {}
    print(f"{a.model}, {site}, {a.tokens} tokens, batch {a.batch_size} x 128, {a.threads} thread(s), {a.device}; "
          f"load {os.getloadavg()[0]:.1f}")
    for r in range(a.repeats + 1):                      # round 0: warm-up (its stores are the ones compared)
        for dt in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            out = tmp / f"{dt}-{r}"
            t0 = time.perf_counter()
            harvest(models[dt], HarvestConfig(data=str(data), sites=[site], out=str(out), tokens=a.tokens,
                                              context_length=128, batch_size=a.batch_size, store_dtype="bf16",
                                              progress=False))
            if r:
                times[dt].append(time.perf_counter() - t0)
            if r == 0:
                stores[dt] = ActivationStore(out)
            else:
                shutil.rmtree(out)
    x = {dt: s.read(site, slice(0, len(s)), dtype=torch.float32) for dt, s in stores.items()}
    assert torch.equal(stores["fp32"].tokens(slice(0, len(x["fp32"]))), stores["bf16"].tokens(slice(0, len(x["bf16"]))))
    f, b = x["fp32"], x["bf16"]
    med = {dt: statistics.median(ts) for dt, ts in times.items()}
    print(f"\n{'harvest':8s} {'tokens/s':>10s}  runs")
    for dt in ("fp32", "bf16"):
        print(f"{dt:8s} {a.tokens / med[dt]:10.1f}  {['%.2f' % t for t in times[dt]]}")
    print(f"bf16 / fp32 tokens/s = {med['fp32'] / med['bf16']:.2f}x  (target >= 1.5x on an AVX512-BF16 CPU)")
    rel = lambda u, v: float((u - v).norm() / v.norm().clamp_min(1e-12))  # noqa: E731
    row_err = ((b - f).norm(dim=1) / f.norm(dim=1).clamp_min(1e-12)).median()
    print(f"\nstats drift (bf16 vs fp32 model, same tokens): mean vector {rel(b.mean(0), f.mean(0)):.4f}, "
          f"per-dim std {rel(b.std(0), f.std(0)):.4f}, median row-wise relative error {float(row_err):.4f}")
    n = f.shape[0]
    cut = n * 3 // 4
    B = min(256, cut)
    steps = max(cut // B, 1)

    def src(epoch):
        for i in range(steps):
            yield f[i * B:(i + 1) * B]
    sae = Trainer(DictConfig(arch="topk", d_in=f.shape[1], expansion=4, k=16),
                  TrainConfig(total_tokens=steps * B, batch_size=B, lr=2e-3, warmup_steps=5, progress=False,
                              estimate=False), src).fit()
    with torch.no_grad():
        for dt, held in (("fp32", f[cut:]), ("bf16", b[cut:])):
            z = sae.encode(held)
            fvu = float((held - sae(held)).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
            print(f"SAE (trained on fp32 rows) on held-out {dt} rows: FVU {fvu:.4f}, L0 {float((z > 0).sum(-1).float().mean()):.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
