"""Wall time to a target held-out FVU: actlab's TopK trainer (bf16 where native, and fp32) vs EleutherAI sparsify,
both at their documented defaults, on a synthetic activation bank larger than the tokens trained (no row seen twice).

Each method trains on the same rows in the same order; every ``--eval-every`` optimizer steps the held-out FVU
(sum ||x - x_hat||^2 / sum ||x - mean x||^2 over the last ``--held`` rows of the bank, never trained on) is measured
from the model at that step; evaluation time is excluded from the wall clock. The target is sparsify's final
held-out FVU (or ``--target``); the headline is each method's wall time to first reach it, as a ratio to sparsify's
own. Methods run one after the other, order alternated per round (``--rounds``); the load average is printed.

sparsify's documented defaults are its ``TrainConfig()`` (optimizer 'signum', lr 5e-3/sqrt(n/2^14), schedule-free)
and, as the issue compared, ``optimizer='adam'`` (lr 2e-4/sqrt(n/2^14), linear decay, no warm-up); it runs through
its own ``Trainer.fit`` on an embedding "model" whose rows are the bank. actlab runs ``TrainConfig()`` defaults.

  python bench/sae_quality.py --short                         # seconds: tiny shape, actlab only if no sparsify
  /tmp/peers/bin/python bench/sae_quality.py                  # headline (sparsify importable in that venv)
  python bench/sae_quality.py --device cuda --d-in 576 --latents 16384 --batch 4096 --steps 1000
  python bench/sae_quality.py --only actlab --lrs 1e-3,3e-3 --n-true 512 --d-in 128 --latents 2048   # an LR sweep
  python bench/sae_quality.py --bank real --store acts/ --site blocks.12.resid_post --batch 256   # harvested rows

``--bank real`` reads an actlab activation store (``actlab harvest``): the last ``--held`` rows (whole contexts at the
end of the store) are the held-out split, the rest is shuffled once (seeded) and trained on in that order; the run
needs ``steps * batch`` training rows (no row seen twice), else it stops with an error.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from _peers import bank, row_dataset, sparsify_bank_model


def fvu(x: torch.Tensor, xh: torch.Tensor) -> float:
    return float((x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


class Curve:
    """Held-out FVU against wall time with evaluation time excluded."""

    def __init__(self, every: int):
        self.every, self.points, self.t0, self.paused, self.step = every, [], time.perf_counter(), 0.0, 0

    def tick(self, evaluate) -> None:
        self.step += 1
        if self.step % self.every:
            return
        t = time.perf_counter()
        f, l0, never = evaluate()
        self.points.append({"step": self.step, "wall_s": t - self.t0 - self.paused, "fvu": f, "l0": l0,
                            "never_fired": never})
        self.paused += time.perf_counter() - t

    def time_to(self, target: float) -> float:
        return next((p["wall_s"] for p in self.points if p["fvu"] <= target), float("nan"))


def run_actlab(ctx, precision: str, lr: float | None = None) -> Curve:
    from actlab.dictionary import DictConfig
    from actlab.dictionary.trainer import TrainConfig, Trainer
    B, steps, train, held = ctx["batch"], ctx["steps"], ctx["train"], ctx["held"]

    def source(epoch):
        for i in range(steps):
            yield train[i * B:(i + 1) * B]
    tr = Trainer(DictConfig(arch="topk", d_in=ctx["d"], d_sae=ctx["n"], k=ctx["k"]),
                 TrainConfig(total_tokens=steps * B, batch_size=B, precision=precision, train_device=ctx["device"],
                             progress=False, log_every=10 ** 9, lr=lr, **ctx["train_kw"]), source)
    curve = Curve(ctx["every"])

    @torch.no_grad()
    def evaluate():
        m, s = tr.model, tr.state.scale_in
        m.eval()
        z = m.encode(held * s)
        f = fvu(held, m.decode(z) / s)
        m.train()
        return f, float((z > 0).sum(-1).float().mean()), 1 - float((z > 0).any(0).float().mean())
    tr.opt.register_step_post_hook(lambda *_: curve.tick(evaluate))
    curve.t0 = time.perf_counter()
    tr.fit()
    return curve


def run_sparsify(ctx, optimizer: str | None) -> Curve:
    from sparsify import SaeConfig, TrainConfig, Trainer

    B, steps, seq, held = ctx["batch"], ctx["steps"], ctx["seq"], ctx["held"]
    model = sparsify_bank_model(ctx["train"]).to(ctx["device"])
    ds = row_dataset(torch.arange(steps * B), seq)
    kw = {} if optimizer is None else {"optimizer": optimizer, "lr_warmup_steps": 0}
    cfg = TrainConfig(SaeConfig(num_latents=ctx["n"], k=ctx["k"]), batch_size=B // seq, log_to_wandb=False,
                      save_every=10 ** 9, save_dir=tempfile.mkdtemp(prefix="actlab-quality-sparsify-"),
                      hookpoints=["layers.0"], **kw)
    tr = Trainer(cfg, ds, model)
    curve = Curve(ctx["every"])
    opt = tr.optimizers[0]

    @torch.no_grad()
    def evaluate():
        if hasattr(opt, "eval"):
            opt.eval()                              # schedule-free: evaluate the averaged weights
        sae = next(iter(tr.saes.values()))
        out = sae(held)
        if hasattr(opt, "train"):
            opt.train()
        live = out.latent_acts > 0
        fired = torch.zeros(sae.num_latents, dtype=torch.bool, device=held.device)
        fired[out.latent_indices[live]] = True
        return fvu(held, out.sae_out), float(live.sum(-1).float().mean()), 1 - float(fired.float().mean())
    step = opt.step

    def stepped(*a, **k):
        r = step(*a, **k)
        curve.tick(evaluate)
        return r
    opt.step = stepped
    curve.t0 = time.perf_counter()
    tr.fit()
    torch.set_float32_matmul_precision("highest")   # fit() changes it globally
    return curve


METHODS = {"actlab": lambda c: run_actlab(c, "auto"), "actlab_fp32": lambda c: run_actlab(c, "fp32"),
           "sparsify": lambda c: run_sparsify(c, None), "sparsify_adam": lambda c: run_sparsify(c, "adam")}


def real_rows(store: str, site: str | None, held: int, max_norm: float,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows shuffled, held-out rows) from an activation store: the held-out rows are the store's last.

    Rows whose norm exceeds ``max_norm`` x the median are dropped first: on SmolLM2 the first token of every packed
    context is an attention sink with norm ~200x the others (0.8 % of rows), which would carry almost all of the
    held-out variance and make FVU meaningless (the usual SAE recipe excludes them, like BOS)."""
    from actlab.store import ActivationStore
    st = ActivationStore(store)
    site = site or st.sites[0]
    x = st.read(site, slice(0, len(st))).float()
    if max_norm > 0:
        n = x.norm(dim=1)
        keep = n <= max_norm * n.median()
        print(f"{store}: dropped {int((~keep).sum())} of {len(x)} rows with norm > {max_norm:g} x median")
        x = x[keep]
    if held >= len(x):
        raise ValueError(f"--held {held} leaves no training rows in {store} ({len(x)} rows)")
    train = x[:-held]
    return train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))], x[-held:].clone()


def loadavg() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--held", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--target", type=float, default=None, help="held-out FVU target (default: sparsify's final)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--short", action="store_true", help="tiny shape, 40 steps: a smoke run in seconds")
    ap.add_argument("--n-true", type=int, default=4096, help="synthetic bank: true dictionary atoms")
    ap.add_argument("--bank", choices=["synthetic", "real"], default="synthetic")
    ap.add_argument("--store", default="", help="--bank real: activation store folder (actlab harvest --out)")
    ap.add_argument("--site", default=None, help="--bank real: the store's site (default: its first)")
    ap.add_argument("--max-norm", type=float, default=10.0,
                    help="--bank real: drop rows with norm above this x the median (attention sinks); 0 keeps all")
    ap.add_argument("--lr", type=float, default=None, help="actlab's learning rate (default: its TrainConfig default)")
    ap.add_argument("--lrs", default="", help="comma-separated extra actlab learning rates, one method each")
    ap.add_argument("--warmup", type=int, default=None, help="actlab's warmup_steps (default: its default)")
    ap.add_argument("--decay-start", type=float, default=None, help="actlab's decay_start (default: its default)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.short:
        a.d_in, a.latents, a.k, a.batch, a.steps, a.eval_every, a.held = 64, 512, 8, 256, 40, 10, 1024
    torch.set_num_threads(a.threads)
    if a.bank == "real":
        if not a.store:
            ap.error("--bank real needs --store DIR (an actlab activation store)")
        train, held = real_rows(a.store, a.site, a.held, a.max_norm)
        if len(train) < a.steps * a.batch:
            ap.error(f"{a.store} holds {len(train)} training rows; {a.steps} steps x {a.batch} need "
                     f"{a.steps * a.batch} (no row is seen twice): fewer --steps or a smaller --batch")
        train, a.d_in = train[:a.steps * a.batch], train.shape[1]
    else:
        full = bank(a.steps * a.batch + a.held, a.d_in, n_true=a.n_true)
        train, held = full[:-a.held], full[-a.held:]
    train_kw = {k: v for k, v in (("warmup_steps", a.warmup), ("decay_start", a.decay_start)) if v is not None}
    ctx = {"d": a.d_in, "n": a.latents, "k": a.k, "batch": a.batch, "steps": a.steps, "every": a.eval_every,
           "seq": 128 if a.batch % 128 == 0 else a.batch, "device": a.device, "train_kw": train_kw,
           "train": train.to(a.device), "held": held.to(a.device)}
    methods = dict(METHODS)
    if a.lr is not None:
        methods["actlab"] = lambda c: run_actlab(c, "auto", a.lr)
        methods["actlab_fp32"] = lambda c: run_actlab(c, "fp32", a.lr)
    for lr in filter(None, a.lrs.split(",")):
        methods[f"actlab_lr{lr}"] = lambda c, lr=float(lr): run_actlab(c, "auto", lr)
    names = [m for m in methods if not a.only or m in a.only.split(",") or m.startswith("actlab_lr")]
    try:
        import sparsify  # noqa: F401
    except Exception as e:  # noqa: BLE001
        print(f"skip sparsify: not importable in this interpreter ({type(e).__name__}); run it with the peers venv")
        names = [m for m in names if not m.startswith("sparsify")]
    curves: dict[str, list[Curve]] = {m: [] for m in names}
    bank_s = f"store {a.store}" if a.bank == "real" else f"synthetic bank ({a.n_true} true atoms)"
    print(f"TopK d_in {a.d_in}, {a.latents} latents, k {a.k}, batch {a.batch}, {a.steps} steps "
          f"({a.steps * a.batch} fresh rows), held-out {a.held}, {bank_s}, {a.threads} thread(s), {a.device}; "
          f"actlab lr {a.lr or 'default'} {train_kw or ''}; load {loadavg()}")
    for r in range(a.rounds):
        for m in (names if r % 2 == 0 else names[::-1]):
            c = methods[m](ctx)
            curves[m].append(c)
            p = c.points[-1]
            print(f"round {r} {m:14s} final FVU {p['fvu']:.4f} L0 {p['l0']:.1f} never-fired {p['never_fired']:.3f} "
                  f"train wall {p['wall_s']:.1f} s ({a.steps * a.batch / p['wall_s']:.0f} tok/s); load {loadavg()}",
                  flush=True)
    ref = "sparsify" if "sparsify" in names else names[0]
    target = a.target if a.target is not None else statistics.median(c.points[-1]["fvu"] for c in curves[ref])
    rows = []
    print(f"\ntarget held-out FVU {target:.4f} ({'given' if a.target is not None else ref + ' final'}); "
          f"load now {loadavg()}")
    print(f"{'method':14s} {'final FVU':>9s} {'L0':>6s} {'dead':>6s} {'tok/s':>8s} {'s to target':>11s} "
          f"{'x ' + ref + ' time':>16s}")
    for m in names:
        cs = curves[m]
        tt = [c.time_to(target) for c in cs]
        ref_t = [c.time_to(target) for c in curves[ref]]
        ratio = statistics.median(x / y for x, y in zip(tt, ref_t))
        p = cs[-1].points[-1]
        row = {"method": m, "final_fvu": statistics.median(c.points[-1]["fvu"] for c in cs), "l0": p["l0"],
               "never_fired": p["never_fired"], "tokens_per_s": statistics.median(
                   a.steps * a.batch / c.points[-1]["wall_s"] for c in cs),
               "time_to_target_s": statistics.median(tt), "time_ratio_vs_ref": ratio,
               "curve": [c.points for c in cs]}
        rows.append(row)
        print(f"{m:14s} {row['final_fvu']:9.4f} {row['l0']:6.1f} {row['never_fired']:6.3f} {row['tokens_per_s']:8.0f} "
              f"{row['time_to_target_s']:11.1f} {ratio:15.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "target": target, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
