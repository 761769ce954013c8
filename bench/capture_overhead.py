"""Capture and steering overhead of actlab's core vs a plain forward / generate, raw torch hooks, HF
output_hidden_states and (where importable) nnsight — all in one process, timed interleaved, median of repeats.

  python bench/capture_overhead.py [--batch 4 --seq 128 --new-tokens 64 --repeats 7] [--device cuda]
  python bench/capture_overhead.py --model tiny-gpt2 --batch 1 --seq 16 --threads 1 --calls 50  # per-call overhead
  python bench/capture_overhead.py --short                # smoke run: tiny-gpt2 1x16, few rounds, no generate

Prints ratio = method / plain baseline (median of per-round paired ratios). Targets (issue 2): record every
resid_post <= 1.05 x plain forward; generate with one Add <= 1.05 x plain generate.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def corpus_ids(tok, n: int) -> torch.Tensor:
    """Real English text from Python's bundled documentation topics (always present, PSF licence)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    return ids[:n]


def timed_rounds(methods: dict, repeats: int, warmup: int, calls: int = 1) -> dict[str, list[float]]:
    """Every round runs every method ``calls`` times, rotating the start; returns per-round seconds per call."""
    names = list(methods)
    times = {k: [] for k in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            for _ in range(calls):
                methods[k]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / calls
            if r >= warmup:
                times[k].append(dt)
    return times


def report(title: str, times: dict[str, list[float]], base: str) -> list[dict]:
    rows = []
    print(f"\n{title}")
    print(f"  {'method':<46} {'median s':>9} {'x base (paired)':>16}")
    for k, ts in times.items():
        paired = statistics.median(t / b for t, b in zip(ts, times[base]))
        rows.append({"method": k, "median_s": statistics.median(ts), "min_s": min(ts), "x_paired": paired})
        print(f"  {k:<46} {statistics.median(ts):9.3f} {paired:16.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--gen-prompt", type=int, default=16, help="prompt length for the generate benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--calls", type=int, default=1, help="calls per timed sample (tiny models: 20-100)")
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

    def plain():
        with torch.no_grad():
            return hf(**enc, use_cache=False).logits

    def raw_hooks():
        out = []
        hs = [l.register_forward_hook(lambda mod, i, o: out.append(o[0] if isinstance(o, tuple) else o)) for l in layers]
        try:
            with torch.no_grad():
                hf(**enc, use_cache=False)
        finally:
            for h in hs:
                h.remove()
        return out

    def hidden_states():
        with torch.no_grad():
            return hf(**enc, use_cache=False, output_hidden_states=True).hidden_states

    def record_full():
        return m.record(enc, sites=sites, stop_early=False)

    def record_early():
        return m.record(enc, sites=sites)

    methods = {"HF forward, no hooks (baseline)": plain, f"torch forward hooks x{m.n_layers}": raw_hooks,
               "HF output_hidden_states": hidden_states, f"actlab record {m.n_layers} resid_post (full pass)": record_full,
               f"actlab record {m.n_layers} resid_post (stop early)": record_early}
    try:
        import copy

        import nnsight

        lm = nnsight.TransformersModel(copy.deepcopy(hf).eval(), tokenizer=m.tokenizer, task="text-generation")
        n_layers = m.n_layers

        def nnsight_trace():
            with torch.no_grad(), lm.trace(dict(enc), use_cache=False):
                saved = nnsight.save([lm.model.layers[i].output for i in range(n_layers)])
            return list(saved)

        methods["nnsight trace .output x30"] = nnsight_trace
    except Exception as e:  # peer not installed here
        print(f"(nnsight not measured: {type(e).__name__}: {e})")

    ref = raw_hooks()
    got = record_full()
    assert all(torch.equal(ref[i], got[s]) for i, s in enumerate(sites)), "actlab capture differs from raw hooks"
    import os
    print(f"model {m.name}, batch {a.batch} x {a.seq} tokens, {a.threads} threads, {a.device}, torch {torch.__version__}; "
          f"load {os.getloadavg()[0]:.1f}")
    results = {"capture": report("1. capture every resid_post", timed_rounds(methods, a.repeats, a.warmup, a.calls),
                                 "HF forward, no hooks (baseline)")}

    if not a.skip_generate:
        g_ids = ids[:, : a.gen_prompt]
        g_enc = {"input_ids": g_ids, "attention_mask": torch.ones_like(g_ids)}
        mid = m.n_layers // 2
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
        gm = {"HF generate, plain (baseline)": gen_plain, "raw forward hook Add": gen_raw, "actlab intervene Add": gen_actlab}
        results["generate"] = report(f"2. greedy generate {a.new_tokens} tokens, prompt {a.batch} x {a.gen_prompt}, "
                                     f"one Add at blocks.{mid}.resid_post",
                                     timed_rounds(gm, max(3, a.repeats // 2), 1), "HF generate, plain (baseline)")
    print(f"load after {os.getloadavg()[0]:.1f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
