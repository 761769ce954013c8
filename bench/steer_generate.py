"""Steering cost in greedy generation on SmolLM2-135M-Instruct, and the wall time of a layer x strength sweep.

Part 1: steered / plain generation (one direction added at one layer's output, 64 new tokens forced), interleaved
repeats, each method paired with its own plain run (order alternating), medians of the per-pair ratios of wall and
of this thread's CPU time (see bench/capture_overhead.py); actlab (``m.generate``, which also tokenizes the text, and
``hf.generate`` on the same tokens inside ``m.intervene``: the steering cost alone) vs a raw torch forward hook, and
steering-vectors / repeng when importable (run with /work/peers-venv/bin/python after
`pip install -e /work/main --no-deps`). Every steered method must emit the raw hook's tokens. Part 2: `actlab.steer.sweep` over layers x 5 strengths x 8 prompts (64 new tokens; the 5 strengths
of a layer run side by side, 40 rows per generate call; scoring included:
keyword concept score, perplexity under the unsteered model, KL on the prompts); reports wall time, time per
generated token vs plain generation, and the extrapolated full 30-layer sweep when run reduced (--sweep-layers).

usage: python bench/steer_generate.py [--repeats 5] [--layer 15] [--batch 1] [--sweep-layers 5,15] [--skip-sweep]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median reported)")
    ap.add_argument("--layer", type=int, default=15, help="steered block (resid_post)")
    ap.add_argument("--batch", type=int, default=1, help="prompts per generate call in part 1")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--sweep-layers", default="all", help="'all' (30 layers) or comma-separated layers (reduced)")
    ap.add_argument("--sweep-tokens", type=int, default=64, help="new tokens per prompt in the sweep")
    ap.add_argument("--sweep-batch", type=int, default=40, help="rows (prompt x strength) per generate call")
    ap.add_argument("--skip-sweep", action="store_true", help="run part 1 only")
    ap.add_argument("--only-sweep", action="store_true", help="run part 2 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where the model and its inputs run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    import actlab
    from actlab.steer import Direction

    m = actlab.load_model("smollm2-135m-instruct", device=a.device)
    tok = m.tokenizer
    prompts = ["The history of the city begins with", "My favourite recipe for a quiet evening is",
               "Scientists recently discovered that", "The best way to learn a new language is"][: a.batch]
    enc = m.tokenize(prompts)
    site = f"blocks.{a.layer}.resid_post"
    norms = m.record(enc, sites=[site])[site].norm(dim=-1)
    g = torch.Generator().manual_seed(0)
    vec = torch.nn.functional.normalize(torch.randn(m.d_model, generator=g), dim=0) * 2 * float(norms.median())
    d = Direction(vector=vec, site=site, model=m.name)
    kw = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
              pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    hf = m.module

    def plain():
        with torch.no_grad():
            return hf.generate(**enc, **kw)

    def actlab_steer():
        with m.intervene(d.to_interventions(1.0)):
            return m.generate(prompts, a.new_tokens, min_new_tokens=a.new_tokens, return_ids=True)

    def actlab_steer_hf():
        with torch.no_grad(), m.intervene(d.to_interventions(1.0)):
            return hf.generate(**enc, **kw)

    layer_mod = hf.model.layers[a.layer]
    if a.only_sweep:
        return run_sweep(a, m, g)

    def raw_hook():
        h = layer_mod.register_forward_hook(lambda _m, _i, out: (out[0] + vec,) + tuple(out[1:])
                                            if isinstance(out, tuple) else out + vec)
        try:
            with torch.no_grad():
                return hf.generate(**enc, **kw)
        finally:
            h.remove()

    methods = {"plain HF generate": plain, "raw forward hook": raw_hook, "actlab intervene(Add)": actlab_steer,
               "actlab intervene(Add), hf.generate": actlab_steer_hf}
    try:
        from steering_vectors import SteeringVector

        sv = SteeringVector({a.layer: vec}, layer_type="decoder_block")

        def sv_run():
            with torch.no_grad(), sv.apply(hf):
                return hf.generate(**enc, **kw)
        methods["steering-vectors apply"] = sv_run
    except Exception as e:  # noqa: BLE001 - a peer that does not import is skipped
        print(f"# steering-vectors skipped: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        import numpy as np

        if not hasattr(np, "float_"):
            np.float_ = np.float64
        from repeng import ControlModel, ControlVector

        cm = ControlModel(copy.deepcopy(hf), [a.layer])
        cv = ControlVector(model_type=hf.config.model_type, directions={a.layer: vec.numpy()})

        def rp_run():
            cm.set_control(cv, 1.0)
            try:
                with torch.no_grad():
                    return cm.generate(**enc, **kw)
            finally:
                cm.reset()
        methods["repeng set_control"] = rp_run
    except Exception as e:  # noqa: BLE001
        print(f"# repeng skipped: {type(e).__name__}: {e}", file=sys.stderr)

    outs = {}
    for k, fn in methods.items():  # warm-up + token check
        t_w, outs[k] = timed(fn)
        print(f"# warm-up {k}: {t_w:.1f} s", file=sys.stderr, flush=True)
    ref = outs["raw forward hook"]
    same = {k: bool(torch.equal(v, ref)) for k, v in outs.items()}
    from capture_overhead import paired_rounds, report   # same directory: one pairing and report for both benches

    base = "plain HF generate"
    print(f"## part 1: greedy generate, batch {a.batch}, {a.new_tokens} new tokens, vector at {site} "
          f"(norm 2x median residual), {a.repeats} paired rounds, {a.threads} threads; load {os.getloadavg()[0]:.1f}")
    res = paired_rounds(methods, base, a.repeats, warmup=0)
    rows = report("ratios to the plain run paired with each", res, base)
    print(f"{'method':<36} {'ms/token':>9} tokens==raw_hook")
    for row in rows:
        k = row["method"]
        print(f"{k:<36} {1000 * row['median_s'] / a.new_tokens:9.1f} {same.get(k, '-') if k != base else '-'}")
    print(f"load after {os.getloadavg()[0]:.1f}")
    if not a.skip_sweep:
        run_sweep(a, m, g)


def run_sweep(a, m, g) -> None:
    from actlab.steer import Direction
    from actlab.steer.evaluate import KeywordScorer
    from actlab.steer.sweep import sweep

    layers = list(range(m.n_layers)) if a.sweep_layers == "all" else [int(x) for x in a.sweep_layers.split(",")]
    sw_prompts = ["Tell me about your weekend.", "What should I cook tonight?", "Describe your favourite room.",
                  "Write a sentence about cars.", "How do I fix a bike tyre?", "Give me a tip for studying.",
                  "What is a good name for a cat?", "Describe a busy street."]
    dirs = []
    for i in layers:
        s = f"blocks.{i}.resid_post"
        dirs.append(Direction(vector=torch.nn.functional.normalize(torch.randn(m.d_model, generator=g), dim=0),
                              site=s, model=m.name))
    n_tok = len(sw_prompts) * a.sweep_tokens
    def plain():
        return m.generate(sw_prompts, max_new_tokens=a.sweep_tokens, min_new_tokens=a.sweep_tokens)

    m.generate(sw_prompts, max_new_tokens=4)  # warm-up
    t_before, _ = timed(plain)
    t_sweep, res = timed(lambda: sweep(m, dirs, sw_prompts, KeywordScorer(["sea", "ocean"]),
                                       strengths=[1, 2, 4, 8, 16], scale="unit", max_new_tokens=a.sweep_tokens,
                                       batch_size=a.sweep_batch))
    t_after, _ = timed(plain)
    t_plain = (t_before + t_after) / 2  # plain timed before and after the sweep: the load drifts
    print(f"# plain before/after the sweep: {t_before:.1f} / {t_after:.1f} s; per setting: "
          f"{[round(r.seconds, 1) for r in res.rows]} s", flush=True)
    n_set = len(dirs) * 5 + 1  # + the unsteered baseline the sweep runs
    per_tok_sweep = t_sweep / (n_set * n_tok)
    per_tok_plain = t_plain / n_tok
    gen_only = sum(r.seconds for r in res.rows) / (len(res.rows) * n_tok)
    print(f"\n## part 2: sweep {len(layers)} layer(s) x 5 strengths x {len(sw_prompts)} prompts, "
          f"{a.sweep_tokens} new tokens, {a.sweep_batch} rows per generate call, strengths side by side "
          f"(+ scoring: keywords, perplexity, KL)")
    print(f"plain generate of the 8 prompts (one batch of 8): {t_plain:.2f} s = {1000 * per_tok_plain:.2f} ms / generated token")
    print(f"sweep wall time: {t_sweep:.1f} s for {n_set} generations = {1000 * per_tok_sweep:.2f} ms / generated "
          f"token (x plain {per_tok_sweep / per_tok_plain:.2f}); steered generation alone "
          f"{1000 * gen_only:.2f} ms / token (x plain {gen_only / per_tok_plain:.2f})")
    if len(layers) < m.n_layers:
        full = per_tok_sweep * (m.n_layers * 5 + 1) * n_tok
        print(f"extrapolated full sweep ({m.n_layers} layers x 5 x 8): {full:.0f} s "
              f"(= measured time per generated token x {(m.n_layers * 5 + 1) * n_tok} tokens)")


if __name__ == "__main__":
    main()
