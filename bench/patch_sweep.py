"""Benchmark: a full layers x positions activation-patching sweep, batched vs one forward per cell, same run.

Also times attribution patching of the same grid (2 forwards + 1 backward) as a ratio to one plain forward.
Prints the values' agreement (max |batched - naive|) so the speed-up is for the same numbers.

    .venv/bin/python bench/patch_sweep.py                       # SmolLM2-135M, all 30 layers x all positions
    .venv/bin/python bench/patch_sweep.py --model tiny-llama     # quick check
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import actlab  # noqa: E402
from actlab import Replace  # noqa: E402
from actlab.patch import LogitDiff, activation_patch, attribution_patch, make_pairs  # noqa: E402
from actlab.patch.common import last_logits  # noqa: E402

CLEAN = "When Mary and John went out, John gave a book to"
CORRUPT = "When Mary and John went out, Mary gave a book to"


def naive_sweep(m, pairs, metric, sites) -> torch.Tensor:
    """The baseline: for every (site, position) cell, one forward of the corrupted prompt with a core Replace."""
    src = m.record(pairs.inputs("clean"), sites)
    out = torch.empty(len(sites), pairs.width)
    idx = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for i, s in enumerate(sites):
            for j in range(pairs.width):
                with m.intervene({s: Replace(value=src[s], positions=[j])}):
                    out[i, j] = metric(last_logits(m, pairs.inputs("corrupt")), idx)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--site", default="resid_pre", help="per-layer site kind swept (default resid_pre)")
    ap.add_argument("--batch-size", type=int, default=128, help="patch cells per batched forward")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where the model and its inputs run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = actlab.load_model(a.model, device=a.device)
    pairs = make_pairs(m, CLEAN, CORRUPT)
    tok = m.tokenizer
    metric = LogitDiff(tok(" John", add_special_tokens=False)["input_ids"][0],
                       tok(" Mary", add_special_tokens=False)["input_ids"][0])
    sites = [f"blocks.{i}.{a.site}" for i in range(m.n_layers)]
    cells = len(sites) * pairs.width
    print(f"model {m.name}: {m.n_layers} layers x {pairs.width} positions = {cells} cells; "
          f"batch {a.batch_size}; threads {a.threads}; load avg {os.getloadavg()[0]:.1f}")
    t_b, t_n, t_a, t_f = [], [], [], []
    for rep in range(a.repeats):
        t0 = time.perf_counter()
        batched = activation_patch(m, pairs, metric=metric, sites=sites, batch_size=a.batch_size)
        t_b.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive = naive_sweep(m, pairs, metric, sites)
        t_n.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        attr = attribution_patch(m, pairs, metric=metric, sites=sites)
        t_a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            m(pairs.inputs("corrupt"))
        t_f.append(time.perf_counter() - t0)
        diff = (batched.values - naive).abs().max().item()
        print(f"repeat {rep}: batched {t_b[-1]:.2f}s  naive {t_n[-1]:.2f}s  attribution {t_a[-1]:.2f}s  "
              f"one forward {t_f[-1]:.3f}s  max|batched-naive| {diff:.2e}")
    b, n, at, f = (statistics.median(x) for x in (t_b, t_n, t_a, t_f))
    rho = torch.corrcoef(torch.stack([batched.values.flatten(), attr.values.flatten()]))[0, 1].item()
    print(f"activation patching sweep: batched {b:.2f}s vs naive {n:.2f}s -> speed-up {n / b:.2f}x "
          f"({cells / b:.1f} vs {cells / n:.1f} cells/s)")
    print(f"attribution patching of the same grid: {at:.3f}s = {at / f:.2f}x one forward ({f:.3f}s); "
          f"{n / at:.1f}x faster than the naive exact sweep; Pearson r with the exact sweep {rho:.3f}")


if __name__ == "__main__":
    main()
