"""The static export's compact form of feature pages (issue 16: a few MB for a 16k-feature SAE).

A feature is first a small dict (``compact_feature``: examples as ``[start row, length, peak, [[i, act], ...]]``
over one shared table of the cache's token ids, promoted tokens as ids, numbers at the server's significant digits).
A shard of them is then packed into columns of unsigned integers (``Packer``: each number an exact decimal
``mantissa x 10^exponent``, zig-zag signed, every column stored byte plane by byte plane, so gzip sees runs of alike
bytes), gzipped, and carried as text at 15 bits per UTF-16 character (``b15``; the data file is UTF-16 with a BOM,
which browsers honour for scripts): 1.07 bytes of file per byte, where base64 takes 1.33. ``static/export.js``
reverses each step in the browser (``DecompressionStream('gzip')``, which works from ``file://``) and expands the
dicts into the served page's JSON, so the shown numbers are the server's."""
from __future__ import annotations

import gzip
import json
import math
from typing import Any

import numpy as np

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


def used_rows(n_rows: int, shards: dict[int, dict[int, dict]]) -> np.ndarray:
    """Which rows of the token table some exported example shows."""
    used = np.zeros(n_rows, dtype=bool)
    for feats in shards.values():
        for f in feats.values():
            for x in f["t"] + f["q"]:
                used[x[0]: x[0] + x[1]] = True
    return used


def rows_chunks(v: SaeView, used: np.ndarray) -> list[np.ndarray]:
    """The cache's token id per row in ``ROWS_CHUNK`` pieces, rows no example shows set to 0 (they pack to
    nearly nothing: a partial export carries only its own windows' tokens)."""
    toks = v.cache.row_table("tokens").numpy().astype(np.int64)
    toks = np.where(used, toks, 0)
    return [toks[i:i + ROWS_CHUNK] for i in range(0, len(toks), ROWS_CHUNK)]


def vocab(v: SaeView, ids: set[int]) -> dict[str, str]:
    """Text of every token id in ``ids`` (single-token decodes; a character split over tokens shows as U+FFFD)."""
    tok = v.tokenizer()
    return {str(t): v.piece(tok, t) for t in sorted(ids)}


# -- packing -----------------------------------------------------------------------------------------------
B15_BASE = 0x4E00       # 15-bit values as U+4E00..U+CDFF: no quote, backslash, line break or surrogate among them


def decimal(x: float, digits: int) -> tuple[int, int]:
    """``x`` (already rounded to ``digits`` significant digits) as integers ``(m, e)`` with ``x == m * 10**e`` as
    decimals, so the browser's ``m / 10**-e`` is the same double JSON would give. Non-finite -> 0."""
    if x == 0 or not math.isfinite(x):
        return 0, 0
    mant, exp = f"{x:.{digits - 1}e}".split("e")
    return int(mant.replace(".", "")), int(exp) - (digits - 1)


class Packer:
    """Named columns of unsigned integers; signed ones zig-zag coded, floats as decimal mantissa + exponent.
    ``pack()`` lays each column out byte plane by byte plane (all low bytes, then the next, ...) at the width its
    largest value needs, and returns the bytes and the spec ``[[name, count, width], ...]`` the reader needs."""

    def __init__(self) -> None:
        self.cols: dict[str, list[int]] = {}

    def u(self, name: str, v: int) -> None:
        if v < 0:
            raise ValueError(f"column {name}: {v} is negative; use i()")
        self.cols.setdefault(name, []).append(int(v))

    def i(self, name: str, v: int) -> None:
        self.u(name, 2 * v if v >= 0 else -2 * v - 1)

    def f(self, name: str, x: float, digits: int = 4) -> None:
        m, e = decimal(x, digits)
        self.i(name, m)
        self.i(name + "^", e)

    def pack(self) -> tuple[bytes, list[list]]:
        parts, spec = [], []
        for name, vals in self.cols.items():
            a = np.asarray(vals, dtype="<u8")
            w = max(1, (int(a.max()).bit_length() + 7) // 8) if a.size else 1
            if w > 6:
                raise ValueError(f"column {name}: value {int(a.max())} needs over 48 bits")
            parts.append(a.view(np.uint8).reshape(-1, 8)[:, :w].T.tobytes())
            spec.append([name, len(vals), w])
        return b"".join(parts), spec


def pack_shard(feats: dict[int, dict[str, Any]]) -> tuple[bytes, list[list], dict[str, Any]]:
    """Feature dicts of ``compact_feature`` (ascending ids) -> packed bytes, spec and the explanations / scores
    (JSON, keyed by id). ``static/export.js`` ``readShard`` reads the columns back in this same order."""
    p, extra = Packer(), {}
    for j in sorted(feats):
        f = feats[j]
        p.u("id", j)
        p.u("c", f["c"])
        p.f("m", f["m"], 5)
        p.f("m", f["u"], 5)
        p.u("hn", len(f["h"]))
        prev = 0
        for b, n in f["h"]:
            p.u("hb", b - prev)
            p.u("hc", n)
            prev = b
        p.u("nt", len(f["t"]))
        p.u("nq", len(f["q"]))
        for x in f["t"] + f["q"]:
            start, length, peak, acts = x[:4]
            p.u("es", start)
            p.u("el", length)
            p.u("ep", peak)
            p.u("ez", len(acts))
            prev = 0
            for i, a in acts:
                p.u("ei", i - prev)
                p.f("a", a)
                prev = i
            if len(x) > 4:
                p.i("eq", x[4])
        near = f.get("n", [])
        p.u("nn", len(near))
        for i, cs in near:
            p.u("ni", i)
            p.f("n", cs)
        pro = f.get("p")
        p.u("pp", 0 if pro is None else 1)
        if pro is not None:
            for ids, vals in ((pro[0], pro[1]), (pro[2], pro[3])):
                p.u("pn", len(ids))
                for t, v in zip(ids, vals):
                    p.u("pi", t)
                    p.f("p", v)
        if "e" in f:
            extra[str(j)] = {"e": f["e"], "s": f["s"]}
    data, spec = p.pack()
    return data, spec, extra


def pack_ints(name: str, vals: list[int]) -> tuple[bytes, list[list]]:
    p = Packer()
    p.cols[name] = [int(v) for v in vals]
    return p.pack()


def b15(data: bytes) -> str:
    """``data`` as text, 15 bits per character (U+4E00 + value; the last one zero-padded)."""
    n = len(data) * 8
    pad = (-n) % 15
    a = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    a = np.concatenate([a, np.zeros(pad, dtype=np.uint8)]).reshape(-1, 15).astype(np.uint32)
    vals = a @ (1 << np.arange(14, -1, -1, dtype=np.uint32))
    return (vals + B15_BASE).astype("<u2").tobytes().decode("utf-16-le")


def unb15(text: str, n: int) -> bytes:
    """Inverse of ``b15`` (``n`` bytes; the tests use it)."""
    vals = np.frombuffer(text.encode("utf-16-le"), dtype="<u2").astype(np.uint32) - B15_BASE
    bits = ((vals[:, None] >> np.arange(14, -1, -1, dtype=np.uint32)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits[: n * 8]).tobytes()


def packed(data: bytes, fmt: str, **extra: Any) -> dict[str, Any]:
    """The value of a packed data file: ``{"$pack": b15(gzip(data)), "n": gzipped bytes, "fmt": "json"|"bin"}``."""
    gz = gzip.compress(data, 9, mtime=0)
    return {"$pack": b15(gz), "n": len(gz), "fmt": fmt, **extra}


def packed_json(value: Any) -> dict[str, Any]:
    return packed(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), "json")
