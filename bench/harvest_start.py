"""Harvest start: time until the first packed context is ready, growing tokenizer chunks vs one 256-document chunk.

``actlab.data.pack.iter_contexts`` tokenizes documents in chunks that grow from 8 to ``chunk_docs`` (256), so the
first batch of a harvest (and a GPU forward) can start after a few documents. Baseline, same run: the same iterator
with the chunks fixed at 256 documents from the start (what it did before), i.e. the first context waits for the whole
first chunk. Also prints the time for all contexts (the throughput must not drop). SmolLM2's tokenizer, demo corpus.

    python bench/harvest_start.py [--contexts 512 --repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from actlab import load_model
from actlab.data import demo_corpus, load_texts
from actlab.data import pack


def run(tok, docs, n: int, grow: bool) -> tuple[float, float]:
    """(seconds to the first context, seconds to ``n`` contexts)."""
    t0, first = time.perf_counter(), None
    it = pack.iter_contexts(tok, docs, 128, seed=0) if grow else _fixed(tok, docs)
    for i, _ in enumerate(it):
        if first is None:
            first = time.perf_counter() - t0
        if i + 1 == n:
            break
    return first, time.perf_counter() - t0


def _fixed(tok, docs, chunk: int = 256, L: int = 128):
    """The previous ``iter_contexts`` (every chunk ``chunk`` documents), line for line: same contexts, later start."""
    order = pack.doc_order(len(docs), 0)
    buf_ids: list[int] = []
    buf_doc: list[int] = []
    buf_pos: list[int] = []
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        for d, toks in zip(idx, pack.doc_tokens(tok, [docs[i] for i in idx])):
            buf_ids += toks
            buf_doc += [d] * len(toks)
            buf_pos += range(len(toks))
        n_full = len(buf_ids) // L
        if n_full:
            cut = n_full * L
            ids = torch.tensor(buf_ids[:cut], dtype=torch.long).view(n_full, L)
            dd = torch.tensor(buf_doc[:cut], dtype=torch.long).view(n_full, L)
            pp = torch.tensor(buf_pos[:cut], dtype=torch.long).view(n_full, L)
            del buf_ids[:cut], buf_doc[:cut], buf_pos[:cut]
            for i in range(n_full):
                yield ids[i], dd[i], pp[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    tok = load_model("smollm2-135m-instruct").tokenizer
    docs = load_texts(demo_corpus())
    res = {True: [], False: []}
    for _ in range(a.repeats):   # interleaved
        for grow in (False, True):
            res[grow].append(run(tok, docs, a.contexts, grow))
    for grow, name in ((False, "fixed 256-document chunks (before)"), (True, "growing chunks 8 -> 256 (now)")):
        f = statistics.median(r[0] for r in res[grow])
        t = statistics.median(r[1] for r in res[grow])
        print(f"{name:36s} first context {f * 1e3:7.1f} ms   {a.contexts} contexts {t:.2f} s "
              f"({a.contexts * 128 / t:,.0f} tok/s)")
    f0, f1 = (statistics.median(r[0] for r in res[g]) for g in (False, True))
    print(f"first-context latency ratio (now / before) = {f1 / f0:.3f}   (median of {a.repeats} interleaved repeats)")


if __name__ == "__main__":
    main()
