"""A planted corpus for the explain tests: words drawn at random, latent 0 active (graded) exactly on "apple",
latent 1 on number words; a word-level tokenizer (one token per word, decoded with a leading space)."""
from __future__ import annotations

import torch

from actlab.explain import CacheConfig, NeuronLatents, TensorRows, build_cache

WORDS = ["the", "a", "red", "green", "tree", "grows", "in", "garden", "we", "eat", "banana", "pear", "very",
         "apple", "one", "two", "three", "seven", "nine", "cake"]
APPLE = WORDS.index("apple")
NUMBERS = [WORDS.index(w) for w in ("one", "two", "three", "seven", "nine")]


class WordTokenizer:
    def decode(self, ids, **kw):
        return "".join(" " + WORDS[int(i)] for i in ids)


def planted_cache(folder, n_docs=40, doc_len=100, seed=0, graded=True, exclude=()):
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([i for i, w in enumerate(WORDS) if w not in exclude])
    tok = allowed[torch.randint(0, len(allowed), (n_docs * doc_len,), generator=g)]
    x = torch.zeros(tok.numel(), 3)
    apple = tok == APPLE
    x[apple, 0] = torch.rand(int(apple.sum()), generator=g) * 9 + 1 if graded else 1.0
    num = torch.isin(tok, torch.tensor(NUMBERS))
    x[num, 1] = 1.0
    x[:, 2] = 0.0
    doc = torch.arange(tok.numel()) // doc_len
    pos = torch.arange(tok.numel()) % doc_len
    c = build_cache(TensorRows(x, tok, doc, pos, batch_rows=512), NeuronLatents(3, "planted"), folder,
                    CacheConfig(progress=False, shard_entries=300))
    return c, x, tok
