"""Subspace rerouting's behavioural effect on a chat model: which bundled harmful instructions does it refuse
(greedy, chat template, substring judge), and does the searched suffix stop the refusal where random suffixes of the
same length do not?

  python bench/security_reroute.py [--model smollm2-135m-instruct --max 4 --steps 20 --json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--sites", default="blocks.12.resid_post")
    ap.add_argument("--max", type=int, default=4, help="most refused instructions to attack")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=48)
    ap.add_argument("--suffix-len", type=int, default=10)
    ap.add_argument("--n-random", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="max new tokens per reply")
    ap.add_argument("--instructions", default="", help="'|'-separated instructions (default: the refused bundled ones)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the search and of the random suffixes")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    from actlab import load_model
    from actlab.security.reroute_behaviour import refused, reroute_behaviour
    from actlab.security.rerouting import ReroutingConfig
    from actlab.steer import load_instructions

    torch.set_num_threads(1)
    m = load_model(a.model)
    t0 = time.perf_counter()
    if a.instructions:
        chosen = a.instructions.split("|")
    else:
        ref = refused(m, load_instructions("harmful"), a.tokens)
        print(f"refused without a suffix: {len(ref)}/24 ({time.perf_counter() - t0:.0f}s)")
        for ins, reply in ref:
            print(f"  {ins!r} -> {reply[:90]!r}")
        chosen = [ins for ins, _ in ref][:a.max]
    cfg = ReroutingConfig(sites=a.sites, steps=a.steps, search_width=a.width, suffix_len=a.suffix_len,
                          seed=a.seed)
    rows = reroute_behaviour(m, chosen, cfg, n_random=a.n_random, max_new_tokens=a.tokens)
    for r in rows:
        print(f"{r.instruction!r}: plain refused {r.refused_plain}; SSR crossed {r.crossed} {r.score} -> refused "
              f"{r.refused_suffix} ({r.seconds:.0f}s): {r.reply_suffix[:90]!r}; random suffixes refused "
              f"{sum(r.random_refused)}/{len(r.random_refused)}", flush=True)
        for t in r.random_replies[:3]:
            print(f"    random: {t[:90]!r}")
    n = len(rows)
    print(f"SSR suffix stopped the refusal on {sum(r.refused_plain and not r.refused_suffix for r in rows)}/{n}; "
          f"random suffixes stopped it on {sum(not x for r in rows for x in r.random_refused)}/"
          f"{sum(len(r.random_refused) for r in rows)}")
    if a.json:
        Path(a.json).write_text(json.dumps([r.to_json() for r in rows], indent=1))


if __name__ == "__main__":
    main()
