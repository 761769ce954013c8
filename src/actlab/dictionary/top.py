"""Top-activating contexts per feature from an activation store: the rows where a latent fires hardest, each shown
with the preceding tokens of its document (rebuilt from the store's doc/pos columns)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from actlab.dictionary.base import Dictionary


@dataclass
class Example:
    row: int
    """Store row of the highlighted token."""
    value: float
    """The latent's activation on it."""
    tokens: list[int]
    """Context token ids, the highlighted token last but ``after`` ones."""
    focus: int
    """Index of the highlighted token in ``tokens``."""


@torch.no_grad()
def top_examples(model: Dictionary, store, features: list[int] | None = None, n_features: int = 10,
                 top: int = 5, max_rows: int | None = 100_000, batch_size: int = 4096, before: int = 12,
                 after: int = 2) -> dict[int, list[Example]]:
    """Scan up to ``max_rows`` rows of ``model.cfg.site``; return the ``top`` examples of each feature (default:
    the ``n_features`` features that fire most often, ignoring dead ones)."""
    site = model.cfg.site
    if site not in store.sites:
        raise KeyError(f"the store at {store.path} has no site {site!r}; it holds {store.sites}")
    n_rows = len(store) if max_rows is None else min(len(store), max_rows)
    n = model.d_sae
    best_v = torch.full((top, n), -float("inf"))
    best_r = torch.full((top, n), -1, dtype=torch.long)
    fires = torch.zeros(n, dtype=torch.long)
    for start in range(0, n_rows, batch_size):
        rows = torch.arange(start, min(start + batch_size, n_rows))
        acts = model.encode(store.read(site, rows, dtype=torch.float32))
        fires += (acts > 0).sum(0)
        v, i = acts.topk(min(top, acts.shape[0]), dim=0)
        cat_v = torch.cat([best_v, v])
        cat_r = torch.cat([best_r, rows[i]])
        sel = cat_v.topk(top, dim=0).indices
        best_v, best_r = cat_v.gather(0, sel), cat_r.gather(0, sel)
    if features is None:
        features = [int(f) for f in fires.argsort(descending=True)[:n_features] if fires[f] > 0]
    out: dict[int, list[Example]] = {}
    for f in features:
        if not 0 <= f < n:
            raise IndexError(f"feature {f} out of range (the dictionary has {n} latents)")
        exs = []
        for v, r in zip(best_v[:, f].tolist(), best_r[:, f].tolist()):
            if r < 0 or v <= 0:
                continue
            exs.append(_context(store, r, v, before, after, n_rows))
        out[f] = exs
    return out


def _context(store, row: int, value: float, before: int, after: int, n_rows: int) -> Example:
    lo, hi = max(0, row - before), min(n_rows, row + after + 1)
    rows = torch.arange(lo, hi)
    doc, pos = store.doc_pos(rows)
    toks = store.tokens(rows)
    k = row - lo
    keep = [j for j in range(len(rows)) if doc[j] == doc[k] and pos[j] - pos[k] == j - k]
    return Example(row=row, value=value, tokens=[int(toks[j]) for j in keep], focus=keep.index(k))


def render(ex: Example, tokenizer, color: bool = True) -> str:
    """The context as text with the focus token highlighted (ANSI reverse video, or [[ ]] without colour)."""
    parts = []
    for j, t in enumerate(ex.tokens):
        s = tokenizer.decode([t]) if tokenizer is not None else f"<{t}>"
        s = s.replace("\n", "\\n")
        if j == ex.focus:
            s = f"\x1b[1;30;43m{s}\x1b[0m" if color else f"[[{s}]]"
        parts.append(s)
    return "".join(parts)


def store_tokenizer(store):
    """The tokenizer that made a store's tokens (from its manifest), else the bundled model's of the same name."""
    meta = store.manifest.get("tokenizer") or {}
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(meta["name_or_path"])
    except Exception:  # noqa: BLE001 - fall back to the bundled model's tokenizer
        from actlab import load_model
        return load_model((store.manifest.get("model") or {}).get("name", "")).tokenizer
