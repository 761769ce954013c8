"""Training step time with an identity intervention / without, same run, interleaved (target <= 1.05).

The toy is the induction recipe's 2-layer attention-only transformer (d=64, 4 heads, batch 32 x 24 tokens, Adam).
Rounds alternate a block of plain steps and a block of steps inside ``model.intervene({site: identity})`` (entered
once per block, as a training loop would); ratio = median over rounds of (intervened block time / plain block
time). Two sites: the layer-0 attention pattern (a raw module output) and the layer-0 attention output.

    python bench/train_overhead.py [--rounds 15] [--steps 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from actlab.core.interventions import Fn
from actlab.train.configs import InductionConfig
from actlab.train.induction import make_model
from actlab.train.toy import ATTN_OUT, PATTERN, repeated_sequences


def block(model, opt, xs, ivs) -> float:
    t = time.perf_counter()
    if ivs:
        with model.intervene(ivs):
            _steps(model, opt, xs)
    else:
        _steps(model, opt, xs)
    return time.perf_counter() - t


def _steps(model, opt, xs) -> None:
    for x in xs:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = InductionConfig()
    model = make_model(cfg)
    opt = torch.optim.Adam(model.module.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    xs = [repeated_sequences(cfg.batch, cfg.context, cfg.vocab, cfg.min_len, cfg.max_len, g).ids for _ in range(a.steps)]
    identity = Fn(fn=lambda act, ctx: act)
    for name, site in (("pattern", PATTERN.format(i=0)), ("attn_out", ATTN_OUT.format(i=0))):
        ivs = {site: identity}
        block(model, opt, xs, None), block(model, opt, xs, ivs)  # warm-up
        ratios, base, inter = [], [], []
        for r in range(a.rounds):
            order = (None, ivs) if r % 2 == 0 else (ivs, None)  # alternate which goes first
            t = {id(o): block(model, opt, xs, o) for o in order}
            b, i = t[id(None)], t[id(ivs)]
            base.append(b / a.steps)
            inter.append(i / a.steps)
            ratios.append(i / b)
        print(f"{name:9s} site {site}: step {statistics.median(base) * 1e3:.2f} ms plain, "
              f"{statistics.median(inter) * 1e3:.2f} ms with identity intervention; "
              f"ratio = {statistics.median(ratios):.3f} (median of {a.rounds} interleaved rounds; "
              f"quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}..{statistics.quantiles(ratios, n=4)[2]:.3f})")


if __name__ == "__main__":
    main()
