"""The static export's compact form of a feature page (issue 16: a few MB for a 16k-feature SAE): examples as
``[start row, length, peak, [[i, act], ...]]`` (non-zero activations only) over one shared table of the cache's
token ids (``rows``, chunked) and one table of token texts (``vocab``); histogram bins and promoted tokens sparse or
as ids; explanations and top tokens of nearest features come from the feature list the page loads anyway.
``static/export.js`` expands it into the served page's JSON."""
from __future__ import annotations

from typing import Any

from actlab.web.features import N_NEAREST, N_TOKENS, SaeView, rounded

ROWS_CHUNK = 16384      # token ids per rows file
SHARD = 256             # features per data file


def _ex(x, quantile: bool) -> list:
    acts = rounded(x.acts, 4)
    sparse = [[i, a] for i, a in enumerate(acts) if a != 0]
    out = [x.start, len(x.tokens), x.peak, sparse]
    return out + [x.quantile] if quantile else out


def compact_feature(v: SaeView, j: int, vocab_ids: set[int]) -> dict[str, Any]:
    """Feature ``j`` compactly; adds the token ids its promoted tokens need to ``vocab_ids``."""
    c = v.cache
    top, quant = v.examples(j)
    out: dict[str, Any] = {"c": int(c.count[j]), "m": rounded([float(c.max[j])], 5)[0],
                           "u": rounded([float(c.mean_active[j])], 5)[0],
                           "h": [[b, n] for b, n in enumerate(c.hist[j].tolist()) if n],
                           "t": [_ex(x, False) for x in top], "q": [_ex(x, True) for x in quant]}
    ex = v.explanations.get(j)
    if ex:
        out["e"], out["s"] = ex.get("explanation"), ex.get("scores", {})
    dec = v.decoder
    if dec is not None and dec.shape[0] > 1:
        out["n"] = [[i, rounded([cs], 4)[0]] for i, cs in v.nearest(j, N_NEAREST)]
    if dec is not None and v.shared.available:
        m = v.shared.get()
        if dec.shape[1] == m.adapter.d_model:
            from actlab.explain import promoted_tokens
            from actlab.models import Unsupported

            try:
                p = promoted_tokens(m, dec[j], N_TOKENS)
                out["p"] = [p.top_ids, rounded(p.top_values), p.bottom_ids, rounded(p.bottom_values)]
                vocab_ids.update(p.top_ids + p.bottom_ids)
            except Unsupported:
                pass
    return out


def rows_chunks(v: SaeView) -> list[list[int]]:
    toks = v.cache.row_table("tokens").tolist()
    return [toks[i:i + ROWS_CHUNK] for i in range(0, len(toks), ROWS_CHUNK)]


def vocab(v: SaeView, ids: set[int]) -> dict[str, str]:
    """Text of every token id in ``ids`` (single-token decodes; a character split over tokens shows as U+FFFD)."""
    tok = v.tokenizer()
    return {str(t): v.piece(tok, t) for t in sorted(ids)}
