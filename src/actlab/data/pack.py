"""Tokenize documents and pack them into fixed-length contexts (no padding), keeping document ids and positions.

Documents are taken in a seeded random order, each tokenized without special tokens and prefixed by the
tokenizer's BOS token when it has one (``add_bos``); the token stream is cut into contexts of ``context_length``
tokens. A document may continue into the next context. The final tokens that do not fill a context are dropped.
``positions`` count from the document's first token (its BOS is position 0), so ``(doc, pos)`` maps every token
back to ``tokenize(docs[doc])``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch


@dataclass
class Packed:
    """Packed contexts: ``input_ids``, ``doc_ids`` (index into the docs given) and ``positions``, all [n_ctx, L]."""

    input_ids: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.input_ids.numel()


def doc_tokens(tokenizer, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
    """Token ids of each document as packing sees them (BOS first when ``add_bos`` and the tokenizer has one)."""
    bos = tokenizer.bos_token_id if add_bos else None
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [([bos] if bos is not None else []) + list(x) for x in ids]


def doc_order(n_docs: int, seed: int | None) -> list[int]:
    """The document order for a seed (None keeps the given order)."""
    if seed is None:
        return list(range(n_docs))
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_docs, generator=g).tolist()


def iter_contexts(tokenizer, docs: Sequence[str], context_length: int, seed: int | None = 0, add_bos: bool = True,
                  chunk_docs: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(input_ids [L], doc_ids [L], positions [L])`` one context at a time, tokenizing lazily (flat memory).
    Documents are tokenized in chunks that grow from 8 to ``chunk_docs``, so the first contexts come out after a
    few documents (a GPU harvest starts at once) and later chunks amortise the tokenizer's call."""
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1; got {context_length}")
    if tokenizer is None:
        raise ValueError("packing text needs a tokenizer; this model has none")
    order = doc_order(len(docs), seed)
    L = context_length
    buf_ids: list[int] = []
    buf_doc: list[int] = []
    buf_pos: list[int] = []
    start, size = 0, min(8, chunk_docs)
    while start < len(order):
        idx = order[start:start + size]
        start, size = start + size, min(2 * size, chunk_docs)
        for d, toks in zip(idx, doc_tokens(tokenizer, [docs[i] for i in idx], add_bos)):
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


def pack_contexts(tokenizer, docs: Iterable[str], context_length: int, seed: int | None = 0,
                  add_bos: bool = True, max_contexts: int | None = None) -> Packed:
    """All contexts (or the first ``max_contexts``) as one ``Packed``; raises if the docs fill no context."""
    docs = list(docs)
    rows = []
    for ctx in iter_contexts(tokenizer, docs, context_length, seed, add_bos):
        rows.append(ctx)
        if max_contexts is not None and len(rows) >= max_contexts:
            break
    if not rows:
        n = sum(len(t) for t in doc_tokens(tokenizer, docs, add_bos)) if docs else 0
        raise ValueError(f"the documents hold {n} tokens, fewer than one context of {context_length}")
    ids, dd, pp = (torch.stack(x) for x in zip(*rows))
    return Packed(ids, dd, pp)
