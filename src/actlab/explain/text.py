"""Token ids to display pieces, and ``<< >>`` highlighting of token spans.

Byte-level BPE (GPT-2, SmolLM2, Llama 3) splits a multi-byte character over several tokens; each of them alone
decodes to U+FFFD. ``token_pieces`` decodes with the tokenizer itself, grouping such tokens until the group decodes
cleanly (at most 4, the longest UTF-8 sequence), so ``"".join(pieces)`` equals ``tokenizer.decode(ids)`` and a
highlighted span never cuts a character in half.
"""
from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"


def _decode(tokenizer, ids: Sequence[int]) -> str:
    try:
        return tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)
    except TypeError:   # a minimal tokenizer without the keyword
        return tokenizer.decode(list(ids))


def token_pieces(tokenizer, ids: Sequence[int]) -> tuple[list[str], list[int]]:
    """``(pieces, group)``: the text of each token (the whole character on the first token of a group, "" on the
    others) and, per token, the index of the first token of its group."""
    ids = [int(t) for t in ids]
    pieces, group = [""] * len(ids), list(range(len(ids)))
    i = 0
    while i < len(ids):
        m, s = 1, _decode(tokenizer, ids[i:i + 1])
        if REPLACEMENT in s:
            for k in range(2, 5):
                if i + k > len(ids):
                    break
                t = _decode(tokenizer, ids[i:i + k])
                if REPLACEMENT not in t:
                    m, s = k, t
                    break
        pieces[i] = s
        for q in range(i, i + m):
            group[q] = i
        i += m
    return pieces, group


def highlight(pieces: Sequence[str], group: Sequence[int], marked: Sequence[bool], open_: str = "<<",
              close: str = ">>") -> str:
    """The text with marked tokens wrapped in ``open_ ... close``; contiguous marked tokens share one span, and a
    token marked inside a multi-token character marks the whole character."""
    on = [False] * len(pieces)
    for q, m in enumerate(marked):
        if m:
            on[group[q]] = True
    out, inside = [], False
    for q, p in enumerate(pieces):
        if group[q] != q:   # continuation of a character: its text is on the group's first token
            continue
        if on[q] and not inside:
            out.append(open_)
            inside = True
        elif not on[q] and inside:
            out.append(close)
            inside = False
        out.append(p)
    if inside:
        out.append(close)
    return "".join(out)
