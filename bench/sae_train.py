"""TopK SAE training throughput on CPU: actlab (sparse fused kernels) vs sparsify and SAELens in the same run.

Default shape: d_in 576, 16384 latents, k 32, batch 4096 tokens, fp32 parameters (actlab at precision 'auto':
its encoder GEMM and selection in bf16 where the hardware has it; ``actlab_fp32`` for fp32), Adam, 2 threads,
synthetic activations
(sparse mixtures of a random dictionary + noise + offset). Every method is timed per optimizer step through an
optimizer step hook; methods run in interleaved rounds (A B C A B C ...) and ratios are paired per round, because
the machine is shared. Also prints the achieved GFLOP/s against a dense GEMM of the encoder's shape measured in
the same run (the physical limit for the one dense product a TopK step must do).

  python bench/sae_train.py                       # all methods available in this interpreter
  /tmp/peers/bin/python bench/sae_train.py        # with sparsify + SAELens installed
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch
from _peers import bank, row_dataset, sparsify_bank_model


def cycle(data: torch.Tensor, bs: int):
    i = 0
    while True:
        yield data[i:i + bs]
        i = (i + bs) % (data.shape[0] - bs + 1)


def stamps_hook(opt, stamps):
    opt.register_step_post_hook(lambda *_: stamps.append(time.perf_counter()))


def run_actlab(ctx, steps: int, fused: bool = True, precision: str = "auto") -> list[float]:
    from actlab.dictionary import DictConfig, TrainConfig, Trainer
    B = ctx["batch"]
    data = ctx["data"]

    def source(epoch):
        it = cycle(data, B)
        for _ in range(steps):
            yield next(it)
    tr = Trainer(DictConfig(arch="topk", d_in=ctx["d"], d_sae=ctx["n"], k=ctx["k"], fused=fused),
                 TrainConfig(total_tokens=steps * B, batch_size=B, lr=2e-4, warmup_steps=1, normalize="none",
                             train_device=ctx.get("device", "cpu"), precision=precision,
                             progress=False, log_every=10 ** 9), source)
    stamps = [time.perf_counter()]
    stamps_hook(tr.opt, stamps)
    tr.fit()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run_dense_reference(ctx, steps: int) -> list[float]:
    """Plain torch TopK SAE: dense scatter of the top-k and a dense decoder GEMM (5 GEMMs per step)."""
    d, n, k, B = ctx["d"], ctx["n"], ctx["k"], ctx["batch"]
    g = torch.Generator().manual_seed(0)
    W_enc = (torch.randn(d, n, generator=g) / d ** 0.5).requires_grad_()
    W_dec = W_enc.detach().t().clone().requires_grad_()
    b_enc = torch.zeros(n, requires_grad=True)
    b_dec = ctx["data"].mean(0).clone().requires_grad_()
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=2e-4)
    stamps = [time.perf_counter()]
    stamps_hook(opt, stamps)
    it = cycle(ctx["data"], B)
    for _ in range(steps):
        x = next(it)
        pre = (x - b_dec) @ W_enc + b_enc
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        loss = (acts @ W_dec + b_dec - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run_sparsify(ctx, steps: int) -> list[float]:
    """EleutherAI sparsify Trainer.fit (adam). It trains on a model's hooked outputs, so the 'model' is an
    embedding lookup into the activation bank (token id = row)."""
    from sparsify import SaeConfig, TrainConfig, Trainer

    B, seq = ctx["batch"], 128
    data = ctx["data"]
    model = sparsify_bank_model(data)
    ds = row_dataset(torch.arange(steps * B).remainder(data.shape[0]), seq)
    cfg = TrainConfig(SaeConfig(num_latents=ctx["n"], k=ctx["k"]), batch_size=B // seq, optimizer="adam",
                      lr=2e-4, lr_warmup_steps=0, log_to_wandb=False, save_every=10 ** 9,
                      save_dir=tempfile.mkdtemp(prefix="actlab-bench-sparsify-"), hookpoints=["layers.0"])
    tr = Trainer(cfg, ds, model)
    stamps = [time.perf_counter()]
    for opt in tr.optimizers:
        stamps_hook(opt, stamps)
    tr.fit()
    torch.set_float32_matmul_precision("highest")  # fit() changes it globally
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run_saelens(ctx, steps: int) -> list[float]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer
    B = ctx["batch"]
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=ctx["d"], d_sae=ctx["n"], k=ctx["k"], dtype="float32",
                                                device="cpu", normalize_activations="none"))
    cfg = SAETrainerConfig(total_training_samples=steps * B, train_batch_size_samples=B, lr=2e-4, lr_end=2e-4,
                           device="cpu")
    tr = SAETrainer(cfg, sae, cycle(ctx["data"], B))
    stamps = [time.perf_counter()]
    stamps_hook(tr.optimizer, stamps)
    tr.fit()
    return [b - a for a, b in zip(stamps, stamps[1:])]


METHODS = {"actlab": run_actlab, "actlab_fp32": lambda c, s: run_actlab(c, s, precision="fp32"),
           "actlab_eager": lambda c, s: run_actlab(c, s, fused=False),
           "dense_reference": run_dense_reference, "sparsify": run_sparsify, "saelens": run_saelens}


def available(name: str) -> str | None:
    mod = {"sparsify": "sparsify", "saelens": "sae_lens"}.get(name)
    if mod is None:
        return None
    try:
        __import__(mod)
        if name == "sparsify":
            __import__("datasets")
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"[:120]


def gemm_gflops(B: int, d: int, n: int, reps: int = 5) -> float:
    a, b = torch.randn(B, d), torch.randn(d, n)
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * B * d * n / statistics.median(ts) / 1e9


def cpu_busy(seconds: float = 0.5) -> float:
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = read()
    time.sleep(seconds)
    i1, t1 = read()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--latents", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per round (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: actlab trains there (train_device); the bank moves there")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--json", default="", help="also write the results here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    busy = cpu_busy()
    if busy > 0.2:
        print(f"warning: CPU {busy:.0%} busy before the run: absolute figures are depressed; compare ratios")
    ctx = {"d": a.d_in, "n": a.latents, "k": a.k, "batch": a.batch, "data": bank(4 * a.batch, a.d_in).to(a.device),
           "device": a.device}
    names = [m for m in METHODS if not a.only or m in a.only.split(",")]
    skipped = {m: why for m in names if (why := available(m))}
    for m, why in skipped.items():
        print(f"skip {m}: not importable ({why})")
    names = [m for m in names if m not in skipped]
    gemm = [gemm_gflops(a.batch, a.d_in, a.latents)]
    per_round: dict[str, list[float]] = {m: [] for m in names}
    for r in range(a.rounds):
        for m in (names if r % 2 == 0 else names[::-1]):   # alternate the order: drift in load cancels out
            try:
                t = METHODS[m](ctx, a.steps)[1:]
                per_round[m].append(statistics.median(t))
                print(f"round {r} {m:16s} {statistics.median(t):7.3f} s/step ({a.batch / statistics.median(t):7.0f} tok/s)",
                      flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"round {r} {m}: FAILED {type(e).__name__}: {str(e)[:200]}")
                per_round[m].append(float("nan"))
        gemm.append(gemm_gflops(a.batch, a.d_in, a.latents))
    peak = max(gemm)
    flops_exec = 2 * a.batch * a.d_in * a.latents + 8 * a.batch * a.k * a.d_in  # encoder GEMM + sparse parts
    rows = []
    from actlab.dictionary.precision import select_dtype
    sel = select_dtype("auto", a.device)
    print(f"\nTopK SAE d_in {a.d_in}, {a.latents} latents, k {a.k}, batch {a.batch}, fp32 parameters; "
          f"actlab's encoder GEMM + selection in {'bf16' if sel is not None else 'fp32'} (precision auto; "
          f"actlab_fp32: fp32), peers fp32; {a.threads} threads, "
          f"{a.rounds} interleaved rounds x {a.steps - 1} timed steps; CPU busy before run {busy:.0%}")
    print(f"dense GEMM {a.batch}x{a.d_in} @ {a.d_in}x{a.latents}: best {peak:.1f} GFLOP/s "
          f"(per round: {', '.join(f'{g:.0f}' for g in gemm)})")
    print(f"{'method':16s} {'s/step':>8s} {'tok/s':>8s} {'actlab/x (paired median [min-max])':>36s}")
    for m in names:
        t = statistics.median(per_round[m])
        row = {"method": m, "s_per_step": t, "tokens_per_s": a.batch / t}
        ratios = [x / y for x, y in zip(per_round[m], per_round.get("actlab", [])) if y == y and x == x]
        if "actlab" in per_round and m != "actlab" and ratios:
            row["actlab_speedup"] = statistics.median(ratios)
            row["speedup_range"] = [min(ratios), max(ratios)]
            rs = f"{row['actlab_speedup']:.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"
        else:
            rs = ""
        rows.append(row)
        print(f"{m:16s} {t:8.3f} {a.batch / t:8.0f} {rs:>36s}")
    if "actlab" in per_round:
        t = statistics.median(per_round["actlab"])
        gf = flops_exec / t / 1e9
        print(f"actlab executed {gf:.1f} GFLOP/s = {100 * gf / peak:.0f}% of the dense GEMM rate; "
              f"dense-equivalent (5 GEMMs of a dense trainer) {5 * 2 * a.batch * a.d_in * a.latents / t / 1e9:.1f} "
              f"GFLOP/s = {100 * 5 * 2 * a.batch * a.d_in * a.latents / t / 1e9 / peak:.0f}%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "busy_before": busy, "gemm_gflops": gemm, "rows": rows,
                       "per_round": per_round, "skipped": skipped}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
