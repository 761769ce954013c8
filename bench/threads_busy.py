"""Small-problem throughput on a busy machine: intra-op threads x OpenMP wait policy, with a background load.

Starts one busy-loop process per core (the "other helpers"), then times a small TopK SAE training (d 64, 512
latents, k 8, batch 256) in fresh subprocesses (the wait policy is read when torch loads OpenMP) for: 2 threads with
libgomp's default (spinning) policy, 2 threads PASSIVE, 1 thread, and actlab's choice (``threads_for`` + PASSIVE,
what the ``actlab`` CLI does). Rounds are interleaved; the table gives each configuration's median seconds and its
ratio to actlab's choice. The background processes are stopped at the end (by their own pids).

  python bench/threads_busy.py [--steps 60 --rounds 3 --load 2] [--short]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")

CHILD = r"""
import os, sys, time
sys.path.insert(0, {src!r})
import torch
from actlab.core.threads import threads_for
from actlab.dictionary import DictConfig
from actlab.dictionary.trainer import TrainConfig, Trainer
threads, steps, device = {threads}, {steps}, {device!r}
B, d, n = 256, 64, 512
torch.set_num_threads(threads if threads > 0 else threads_for(2.0 * B * d * n))
x = torch.randn(steps * B, d, generator=torch.Generator().manual_seed(0))
def src(epoch):
    for i in range(steps):
        yield x[i * B:(i + 1) * B]
tr = Trainer(DictConfig(arch="topk", d_in=d, d_sae=n, k=8), TrainConfig(total_tokens=steps * B, batch_size=B,
             progress=False, log_every=10 ** 9, train_device=device), src)
t0 = time.perf_counter(); tr.fit(); print(time.perf_counter() - t0, torch.get_num_threads())
"""

CONFIGS = {"2 threads, default (spin) wait": (2, None), "2 threads, PASSIVE": (2, "PASSIVE"),
           "1 thread": (1, None), "actlab choice (threads_for + PASSIVE)": (0, "PASSIVE")}


def run(threads: int, policy: str | None, steps: int, device: str, timeout: float) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    code = CHILD.format(src=SRC, threads=threads, steps=steps, device=device)
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=timeout, check=True).stdout.split()
        return float(out[0]), int(out[1])
    except subprocess.TimeoutExpired:
        return float("inf"), threads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2, help="background busy processes")
    ap.add_argument("--timeout", type=float, default=120, help="per run (a stalled run counts as inf)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--short", action="store_true", help="20 steps, 1 round")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.short:
        a.steps, a.rounds = 20, 1
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.load)]
    times: dict[str, list[float]] = {k: [] for k in CONFIGS}
    chosen = {}
    try:
        time.sleep(1.0)
        print(f"background: {a.load} busy processes on {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
        for r in range(a.rounds):
            names = list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]
            for name in names:
                t, n = run(*CONFIGS[name], a.steps, a.device, a.timeout)
                times[name].append(t)
                chosen[name] = n
                print(f"round {r} {name:40s} {t:8.2f} s ({n} threads); load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    ref = "actlab choice (threads_for + PASSIVE)"
    print(f"\nsmall TopK SAE, {a.steps} steps, {a.rounds} interleaved rounds, {a.load} busy background processes")
    print(f"{'configuration':40s} {'median s':>9s} {'x actlab choice':>16s}")
    rows = []
    for name, ts in times.items():
        ratio = statistics.median(x / y for x, y in zip(ts, times[ref]))
        rows.append({"config": name, "median_s": statistics.median(ts), "x_actlab": ratio, "threads": chosen[name]})
        print(f"{name:40s} {statistics.median(ts):9.2f} {ratio:15.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rows": rows, "times": times}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
