"""Activation maximisation: actlab.viz.maximize (with and without its regularisers) vs a plain autograd loop on the
same objective, in one process, timed interleaved (median of per-round paired ratios).

  python bench/viz_maximize.py [--steps 40 --repeats 5 --batch 8 --only digits|user]

Objectives: a class logit and a conv channel (read through model.recording, forward stopped at the site) of
(a) the digits CNN (16x16) and (b) a wider torchvision-style CNN at 32x32 passed in by the user (random weights;
speed does not depend on training). Rows: plain = Adam on raw pixels, module forward (a hand-written objective: the
baseline); plain-f = the same loop on actlab's ``objective`` (what the objective wrapper / ``model.recording`` costs);
bare = maximize with pixel parameters and no transforms/penalties (the framework's own cost); full = Fourier parameterisation + jitter + scaling
+ TV + L2 on the fast path (the regularisers' cost = full / bare); full-ref = the same with fast=False (the eager
reference: irfft2, affine_grid + grid_sample, autograd penalties). Target (issue 19): regularisers cost < 20%
(full / plain and full / bare < 1.2). Each ratio is the median over rounds of the paired per-round ratio, by wall
clock and by process CPU time (on a shared, loaded machine CPU time leaves out the waits for a core).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import OrderedDict

import torch
from torch import nn

import actlab
from actlab.viz import MaximizeConfig, Unit, digits_model, maximize, objective, plain_ascent


def user_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 32, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(64, 128, 3, padding=1)), ("relu3", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(128, 10))]))


def rounds(methods: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall seconds, process CPU seconds) per method per round; the order rotates every round."""
    names = list(methods)
    wall, cpu = {k: [] for k in methods}, {k: [] for k in methods}
    for r in range(repeats + 1):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t0, c0 = time.perf_counter(), time.process_time()
            methods[k]()
            if r:                                     # round 0 warms up
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    return wall, cpu


def paired(t: dict[str, list[float]], a: str, b: str) -> float:
    return round(statistics.median(x / y for x, y in zip(t[a], t[b])), 3)


def bench(name: str, m, unit: Unit, plain_f, shape, steps: int, repeats: int) -> list[dict]:
    f = objective(m, unit)
    bare = MaximizeConfig(steps=steps, param="pixel", squash=False, jitter=0, scale=0)
    full = MaximizeConfig(steps=steps, param="fourier", jitter=2, scale=0.1, tv=0.05, l2=0.01)
    ref = MaximizeConfig(steps=steps, param="fourier", jitter=2, scale=0.1, tv=0.05, l2=0.01, fast=False)
    wall, cpu = rounds({"plain": lambda: plain_ascent(plain_f, shape, steps),
                        "plain-f": lambda: plain_ascent(f, shape, steps),
                        "bare": lambda: maximize(f, shape, bare),
                        "full": lambda: maximize(f, shape, full),
                        "full-ref": lambda: maximize(f, shape, ref)}, repeats)
    out = []
    for k in ("plain", "plain-f", "bare", "full", "full-ref"):
        out.append({"workload": name, "objective": unit.describe(), "method": k,
                    "steps_per_s": round(steps / statistics.median(wall[k]), 1),
                    "ratio_vs_plain": paired(wall, k, "plain"), "ratio_vs_bare": paired(wall, k, "bare"),
                    "cpu_ratio_vs_plain": paired(cpu, k, "plain"), "cpu_ratio_vs_bare": paired(cpu, k, "bare")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", choices=("digits", "user"), default=None, help="one workload (default: both)")
    a = ap.parse_args()
    rows = []
    if a.only in (None, "digits"):
        with tempfile.TemporaryDirectory() as tmp:
            m = digits_model("cnn", cache=tmp)
        net = m.module
        rows += bench("digits-cnn 16x16", m, Unit(neuron=3), lambda x: net(x)[:, 3], (a.batch, 1, 16, 16), a.steps,
                      a.repeats)
        rows += bench("digits-cnn 16x16", m, Unit("module:conv3", channel=5),
                      lambda x: net[:7](x)[:, 5].mean((1, 2)), (a.batch, 1, 16, 16), a.steps, a.repeats)
    if a.only in (None, "user"):
        u = actlab.wrap(user_cnn().eval().requires_grad_(False))
        rows += bench("user CNN 3x32x32", u, Unit(neuron=3), lambda x: u.module(x)[:, 3], (a.batch, 3, 32, 32),
                      a.steps, a.repeats)
        rows += bench("user CNN 3x32x32", u, Unit("module:conv3", channel=5),
                      lambda x: u.module[:7](x)[:, 5].mean((1, 2)), (a.batch, 3, 32, 32), a.steps, a.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, {a.steps} steps, "
          f"median of {a.repeats} rounds")
    print("| workload | objective | method | steps/s | x plain | x bare | x plain (CPU) | x bare (CPU) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['objective']} | {r['method']} | {r['steps_per_s']} | {r['ratio_vs_plain']} | "
              f"{r['ratio_vs_bare']} | {r['cpu_ratio_vs_plain']} | {r['cpu_ratio_vs_bare']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
