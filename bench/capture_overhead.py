"""Capture and steering overhead of actlab's core vs a plain forward / generate, raw torch hooks, HF
output_hidden_states and (where importable) nnsight — all in one process, every method timed right next to the
baseline (paired A/B rounds, the order alternating), medians of the per-pair ratios.

  python bench/capture_overhead.py [--batch 4 --seq 128 --new-tokens 64 --repeats 7] [--device cuda]
  python bench/capture_overhead.py --model tiny-gpt2 --batch 1 --seq 16 --threads 1 --calls 50  # per-call overhead
  python bench/capture_overhead.py --short                # smoke run: tiny-gpt2 1x16, few rounds, no generate

Each method is paired with its own baseline run in every round (baseline then method, or method then baseline,
alternating), so a load change between methods does not enter a ratio. Per pair: wall-clock ratio, the ratio of
this thread's CPU time (less sensitive to other processes on a shared box; equals wall on an idle one at 1 thread)
and the minor page faults per call (fresh memory the call touched). ``A/A`` pairs the baseline with itself: the
noise floor of the run. Targets (issue 22): record every resid_post <= 1.10x plain (tiny-gpt2 1x16), <= 1.02x
(SmolLM2 4x128, 1 thread); generate with one Add <= 1.02x plain generate.

Like for like: the raw-hook baseline keeps the same tensors the recording returns ("kept"); "dropped" keeps none
(what keeping costs: fresh memory per layer instead of reused buffers). HF's output_hidden_states installs
permanent capture hooks on the model it first runs on, so it runs on a copy here (the other methods' model stays
hook-free).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import time

import torch

_RUSAGE = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def corpus_ids(tok, n: int) -> torch.Tensor:
    """Real English text from Python's bundled documentation topics (always present, PSF licence)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    return ids[:n]


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def sample(fn, calls: int) -> tuple[float, float, float]:
    """(wall s, this thread's CPU s, minor page faults) per call of ``fn``, over ``calls`` calls."""
    f0 = resource.getrusage(_RUSAGE).ru_minflt
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    _sync()
    t1, c1 = time.perf_counter(), time.thread_time()
    return (t1 - t0) / calls, (c1 - c0) / calls, (resource.getrusage(_RUSAGE).ru_minflt - f0) / calls


def paired_rounds(methods: dict, base: str, repeats: int, warmup: int = 1, calls: int = 1,
                  aa: bool = True) -> dict[str, dict[str, list[float]]]:
    """Every round times each method next to a baseline run (``base`` first in even pairs, second in odd ones; the
    method order rotates per round). Returns per method: wall, cpu, faults (per call) and the per-pair ratios
    ``x_wall`` and ``x_cpu``; ``A/A`` (with ``aa``) is the baseline paired with itself."""
    fns = dict(methods)
    if aa:
        fns["A/A: baseline again"] = methods[base]
    names = [k for k in fns if k != base]
    out = {k: {"wall": [], "cpu": [], "faults": [], "x_wall": [], "x_cpu": []} for k in [base, *names]}
    for fn in fns.values():   # one untimed call each: lazy initialisation out of the first pair
        fn()
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for j, k in enumerate(order):
            first_base = (r + j) % 2 == 0
            a = sample(fns[base], calls) if first_base else None
            m = sample(fns[k], calls)
            if a is None:
                a = sample(fns[base], calls)
            if r < warmup:
                continue
            for key, v in (("wall", m[0]), ("cpu", m[1]), ("faults", m[2])):
                out[k][key].append(v)
            for key, v in (("wall", a[0]), ("cpu", a[1]), ("faults", a[2])):
                out[base][key].append(v)
            out[k]["x_wall"].append(m[0] / a[0])
            out[k]["x_cpu"].append(m[1] / a[1] if a[1] > 0 else float("nan"))
    return out


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def report(title: str, res: dict[str, dict[str, list[float]]], base: str) -> list[dict]:
    """Print one row per method: median wall, paired wall ratio [quartiles], paired CPU ratio, faults per call."""
    print(f"\n{title}")
    print(f"  {'method':<46} {'median ms':>10} {'x base wall [q1-q3]':>22} {'x base cpu':>11} {'faults/call':>12}")
    rows = []
    for k, r in res.items():
        row = {"method": k, "median_s": statistics.median(r["wall"]), "min_s": min(r["wall"]),
               "cpu_s": statistics.median(r["cpu"]), "faults": statistics.median(r["faults"])}
        if k == base:
            ratio = f"{'1':>6} {'':15}"
            cpu = f"{'1':>11}"
        else:
            row.update(x_paired=statistics.median(r["x_wall"]), x_q1=_q(r["x_wall"], 0.25),
                       x_q3=_q(r["x_wall"], 0.75), x_cpu=statistics.median(r["x_cpu"]))
            ratio = f"{row['x_paired']:6.3f} [{row['x_q1']:.3f}-{row['x_q3']:.3f}]"
            cpu = f"{row['x_cpu']:11.3f}"
        rows.append(row)
        print(f"  {k:<46} {1e3 * row['median_s']:10.3f} {ratio:>22} {cpu} {row['faults']:12.0f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--gen-prompt", type=int, default=16, help="prompt length for the generate benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="paired rounds (each method next to a baseline run)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--only-generate", action="store_true")
    ap.add_argument("--calls", type=int, default=1, help="calls per timed sample (tiny models: 20-100)")
    ap.add_argument("--methods", default="", help="comma-separated substrings: time only the capture methods "
                                                  "whose names contain one (the baseline always runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--short", action="store_true", help="tiny-gpt2 1x16, 1 thread, 5 rounds of 20 calls, no generate")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.short:
        a.model, a.batch, a.seq, a.threads, a.repeats, a.warmup, a.calls = "tiny-gpt2", 1, 16, 1, 5, 1, 20
        a.skip_generate = True
    torch.set_num_threads(a.threads)
    import actlab
    from actlab import Add

    m = actlab.load_model(a.model, device=a.device)
    hf = m.module
    vocab = hf.get_input_embeddings().weight.shape[0]
    ids = (corpus_ids(m.tokenizer, a.batch * a.seq) % vocab).reshape(a.batch, a.seq).to(a.device)
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sites = [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
    mods = dict(hf.named_modules())
    layers = [mods[m.sitemap.resolve(s).module] for s in sites]   # the block modules, whatever the architecture
    n = m.n_layers
    base = "HF forward, no hooks (baseline)"
    print(f"model {m.name}, batch {a.batch} x {a.seq} tokens, {a.threads} threads, {a.device}, torch {torch.__version__}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    results = {}

    if not a.only_generate:
        def plain():
            with torch.no_grad():
                return hf(**enc, use_cache=False).logits

        def raw_hooks(keep: bool = True):
            out = []
            fn = (lambda mod, i, o: out.append(o[0] if isinstance(o, tuple) else o)) if keep else (lambda mod, i, o: None)
            hs = [l.register_forward_hook(fn) for l in layers]
            try:
                with torch.no_grad():
                    hf(**enc, use_cache=False)
            finally:
                for h in hs:
                    h.remove()
            return out

        hf_copy = copy.deepcopy(hf)   # HF's capture hooks stay on the model they first run on: not the baseline's

        def hidden_states():
            with torch.no_grad():
                return hf_copy(**enc, use_cache=False, output_hidden_states=True).hidden_states

        def call():
            with torch.no_grad():
                return m(enc, use_cache=False).logits

        def recording_block():
            with torch.no_grad(), m.recording(sites) as rec:
                hf(**enc, use_cache=False)
            return rec.to_dict()

        methods = {base: plain,
                   f"torch forward hooks x{n}, outputs kept": raw_hooks,
                   f"torch forward hooks x{n}, nothing kept": lambda: raw_hooks(False),
                   "HF output_hidden_states (on a copy)": hidden_states,
                   "actlab Model.__call__ (input checks)": call,
                   f"actlab record {n} resid_post (full pass)": lambda: m.record(enc, sites=sites, stop_early=False),
                   f"actlab record {n} resid_post (stop early)": lambda: m.record(enc, sites=sites),
                   f"actlab recording block, {n} resid_post": recording_block}
        try:
            import nnsight

            lm = nnsight.TransformersModel(copy.deepcopy(hf).eval(), tokenizer=m.tokenizer, task="text-generation")

            def nnsight_trace():
                with torch.no_grad(), lm.trace(dict(enc), use_cache=False):
                    saved = nnsight.save([lm.model.layers[i].output for i in range(n)])
                return list(saved)

            methods[f"nnsight trace .output x{n}"] = nnsight_trace
        except Exception as e:  # peer not installed here
            print(f"(nnsight not measured: {type(e).__name__}: {e})")
        if a.methods:
            keep = [s.strip() for s in a.methods.split(",") if s.strip()]
            methods = {k: f for k, f in methods.items() if k == base or any(s in k for s in keep)}

        ref = raw_hooks()
        got = m.record(enc, sites=sites, stop_early=False)
        assert all(torch.equal(ref[i], got[s]) for i, s in enumerate(sites)), "actlab capture differs from raw hooks"
        res = paired_rounds(methods, base, a.repeats, a.warmup, a.calls)
        results["capture"] = report(f"1. capture every resid_post ({a.repeats} paired rounds x {a.calls} calls; "
                                    f"load {os.getloadavg()[0]:.1f})", res, base)

    if not a.skip_generate:
        g_ids = ids[:, : a.gen_prompt]
        g_enc = {"input_ids": g_ids, "attention_mask": torch.ones_like(g_ids)}
        mid = n // 2
        v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
        v = (v / v.norm() * 8.0).to(a.device)
        kw = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
                  pad_token_id=m.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)

        def gen_plain():
            with torch.no_grad():
                return hf.generate(**g_enc, **kw)

        def gen_raw():
            h = layers[mid].register_forward_hook(lambda mod, i, o: o + v if not isinstance(o, tuple) else (o[0] + v, *o[1:]))
            try:
                with torch.no_grad():
                    return hf.generate(**g_enc, **kw)
            finally:
                h.remove()

        def gen_actlab():
            with torch.no_grad(), m.intervene({f"blocks.{mid}.resid_post": Add(v)}):
                return hf.generate(**g_enc, **kw)

        assert torch.equal(gen_raw(), gen_actlab()), "actlab steering differs from the raw hook"
        gbase = "HF generate, plain (baseline)"
        gm = {gbase: gen_plain, "raw forward hook Add": gen_raw, "actlab intervene Add": gen_actlab}
        res = paired_rounds(gm, gbase, max(3, a.repeats // 2), 1)
        results["generate"] = report(f"2. greedy generate {a.new_tokens} tokens, prompt {a.batch} x {a.gen_prompt}, "
                                     f"one Add at blocks.{mid}.resid_post (load {os.getloadavg()[0]:.1f})", res, gbase)
    print(f"load after {os.getloadavg()[0]:.1f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
