"""InverTune's activation-guidance term over fixture seeds: what does weighting it change?

  python bench/security_guidance.py [--seeds 3 --acts 0,1,10 --l1s 0.03,0 --cache DIR --json out.json]

Per seed, the CLIP-like toy (and its clean twin for the false-positive side) and, per (trigger_l1, trigger_act):
the inverted trigger's ASR on the original encoder (held-out test split, target class excluded), the share of its L2
norm on the planted 2x2 corner, its rate on the clean twin (a trigger inverted there for the same class), and after
the full invertune (identification, inversion, tuning rounds) the planted patch's ASR and zero-shot CA.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--acts", default="0,1,10", help="trigger_act weights, comma separated")
    ap.add_argument("--l1s", default="0.03,0", help="trigger_l1 weights, comma separated")
    ap.add_argument("--no-tune", action="store_true", help="skip the full invertune (inversion figures only)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    from actlab.security import ClipConfig, InverTuneConfig, additive_rate, clip_backdoor, invert_trigger, invertune

    torch.set_num_threads(1)
    cache = a.cache or tempfile.mkdtemp(prefix="security_guidance_")
    acts = [float(v) for v in a.acts.split(",")]
    l1s = [float(v) for v in a.l1s.split(",")]
    rows = []
    for seed in range(a.seeds):
        fx = clip_backdoor(ClipConfig(seed=seed), cache=cache)
        fc = clip_backdoor(ClipConfig(poison_fraction=0.0, seed=seed), cache=cache)
        t = fx.cfg.target
        for l1 in l1s:
            for act in acts:
                cfg = InverTuneConfig(trigger_l1=l1, trigger_act=act)
                t0 = time.perf_counter()
                delta, rate = invert_trigger(fx.encoder, fx.text, fx.x_val, t, cfg)
                _, rate_clean = invert_trigger(fc.encoder, fc.text, fc.x_val, t, cfg)
                row = {"seed": seed, "trigger_l1": l1, "trigger_act": act, "rate_val": rate,
                       "trigger_asr": additive_rate(fx.encoder, fx.text, fx.x_test, fx.y_test, delta, t).value,
                       "corner_share": float(delta[0, -2:, -2:].norm() / delta.norm().clamp_min(1e-12)),
                       "norm": float(delta.norm()), "clean_twin_rate": rate_clean}
                if not a.no_tune:
                    r = invertune(fx.encoder, fx.text, fx.x_val, cfg, target=t)
                    row.update({"asr_after": fx.asr(r.encoder).value, "ca_before": fx.ca().value,
                                "ca_after": fx.ca(r.encoder).value, "rounds": len(r.extra["rounds"])})
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                tune = (f" | tuned: ASR {fx.asr().value:.3f}->{row['asr_after']:.3f} CA {row['ca_before']:.3f}->"
                        f"{row['ca_after']:.3f} rounds {row['rounds']}") if not a.no_tune else ""
                print(f"seed {seed} l1 {l1:g} act {act:g}: inverted ASR {row['trigger_asr']:.3f} corner "
                      f"{row['corner_share']:.2f} norm {row['norm']:.2f} clean-twin rate {rate_clean:.2f}{tune} "
                      f"({row['seconds']:.1f}s)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
