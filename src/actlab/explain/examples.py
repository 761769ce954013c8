"""Examples of a latent from its cache: windows around activating tokens, sampled ``top`` / ``random`` /
equal-count ``quantiles``, train and test sets disjoint, and non-activating examples (random contexts, or
"neighbour" hard negatives: where the latents with the nearest decoder directions fire and this one does not).

Windows never cross a document (rows of one document with consecutive positions form a run) and activating windows
of one latent never overlap: they are chosen greedily from the highest activation down, so every example is a
distinct piece of text and no test example repeats a training one.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

import torch

from actlab.explain.cache import LatentCache
from actlab.explain.text import highlight, token_pieces

SAMPLERS = ("top", "random", "quantiles")
NEGATIVES = ("random", "neighbour")


@dataclass
class ExampleConfig:
    """How examples are built and sampled (spec defaults: 32-token windows, 40 train, 50 + 50 test, 10 bins)."""

    ctx_len: int = 32
    """Tokens per window (fewer only when the document is shorter)."""
    after: int = 8
    """Tokens kept after the peak token when the document allows (the rest of the window precedes it)."""
    n_train: int = 40
    """Training (explainer) examples."""
    n_test: int = 50
    """Activating test (scorer) examples, sampled across quantiles, disjoint from the training ones."""
    n_non_activating: int = 50
    """Non-activating test examples."""
    train_type: str = "quantiles"
    """top | random | quantiles (equal-count rank bins of the examples' max activation)."""
    n_quantiles: int = 10
    """Bins for the quantiles sampler."""
    max_examples: int = 10_000
    """Activating windows considered per latent, highest first (the spec's cap); quantiles are over these."""
    negatives: str = "random"
    """random | neighbour (hard negatives from the nearest latents by decoder cosine)."""
    n_neighbours: int = 10
    """Nearest latents searched for neighbour negatives."""
    seed: int = 0
    """Seed of every random choice."""

    def __post_init__(self) -> None:
        if self.train_type not in SAMPLERS:
            raise ValueError(f"train_type must be one of {SAMPLERS}; got {self.train_type!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}; got {self.negatives!r}")
        if self.ctx_len < 1 or not 0 <= self.after < self.ctx_len or self.n_quantiles < 1 or self.max_examples < 1:
            raise ValueError(f"need ctx_len >= 1, 0 <= after < ctx_len, n_quantiles >= 1, max_examples >= 1; got "
                             f"{self.ctx_len}, {self.after}, {self.n_quantiles}, {self.max_examples}")


@dataclass
class Example:
    """A window of tokens with the latent's value on each (``acts``, 0 where inactive)."""

    latent: int
    start: int
    """Cache row of the first token."""
    tokens: list[int]
    acts: list[float]
    doc: int
    kind: str = "activating"
    """activating | random | neighbour."""
    quantile: int = -1
    """Rank bin of ``max_act`` among the latent's examples (0 = lowest; -1 for non-activating)."""
    source_latent: int = -1
    """For neighbour negatives: the latent whose example this is."""
    peak: int = -1
    """Index in the window of the token it was placed around (-1: none)."""

    @property
    def max_act(self) -> float:
        return max(self.acts) if self.acts else 0.0

    @property
    def focus(self) -> int:
        """Index of the token the window was placed around, else of the highest activation in it."""
        if self.peak >= 0:
            return self.peak
        return max(range(len(self.acts)), key=self.acts.__getitem__) if self.acts else 0

    def text(self, tokenizer, marked: list[bool] | None = None) -> str:
        """The window as text, ``marked`` tokens (default: none) in ``<< >>``."""
        pieces, group = token_pieces(tokenizer, self.tokens)
        return highlight(pieces, group, marked or [False] * len(self.tokens))

    def highlighted(self, tokenizer, fraction: float = 0.0) -> str:
        """The window with tokens whose activation is > ``fraction`` x the window max (and > 0) highlighted."""
        m = self.max_act
        return self.text(tokenizer, [a > 0 and a >= fraction * m for a in self.acts])


@dataclass
class ExampleSet:
    """A latent's sampled examples."""

    latent: int
    train: list[Example]
    test: list[Example]
    non_activating: list[Example]
    n_candidates: int
    """Activating windows found in the cache."""
    config: dict = field(default_factory=dict)


class Runs:
    """Rows of one document with consecutive positions: bounds of the run each row is in (build once per cache
    and pass as ``runs=`` to the samplers; building is O(rows))."""

    def __init__(self, cache: LatentCache):
        doc, pos = cache.row_table("doc"), cache.row_table("pos")
        new = torch.ones(doc.numel(), dtype=torch.bool)
        new[1:] = (doc[1:] != doc[:-1]) | (pos[1:] != pos[:-1] + 1)
        starts = new.nonzero().squeeze(1)
        ends = torch.cat([starts[1:], torch.tensor([doc.numel()])])
        rid = new.long().cumsum(0) - 1
        self.lo, self.hi = starts[rid], ends[rid]
        self.doc, self.tokens = doc, cache.row_table("tokens")

    def window(self, peak: int, ctx_len: int, after: int) -> tuple[int, int]:
        lo, hi = int(self.lo[peak]), int(self.hi[peak])
        n = min(ctx_len, hi - lo)
        start = min(max(peak - (n - 1 - min(after, n - 1)), lo), hi - n)
        return start, start + n


def _example(runs: Runs, dense: torch.Tensor, j: int, span: tuple[int, int], kind: str, src: int = -1) -> Example:
    s, e = span
    return Example(j, s, runs.tokens[s:e].tolist(), dense[s:e].tolist(), int(runs.doc[s]), kind, source_latent=src)


def activating_windows(cache: LatentCache, j: int, cfg: ExampleConfig | None = None, runs: Runs | None = None,
                       limit: int | None = None) -> list[Example]:
    """Non-overlapping windows around latent ``j``'s activations, highest first (``limit``: stop after that many),
    each with its rank ``quantile`` among all windows found."""
    cfg = cfg or ExampleConfig()
    runs = runs or Runs(cache)
    rows, vals = cache.latent(j)
    dense = cache.dense(j)
    starts: list[int] = []
    ends: list[int] = []
    out: list[Example] = []
    for r in rows[torch.argsort(vals, descending=True, stable=True)].tolist():
        s, e = runs.window(r, cfg.ctx_len, cfg.after)
        k = bisect.bisect_left(starts, s)
        if (k < len(starts) and starts[k] < e) or (k > 0 and ends[k - 1] > s):
            continue
        starts.insert(k, s)
        ends.insert(k, e)
        out.append(_example(runs, dense, j, (s, e), "activating"))
        out[-1].peak = r - s
        if limit is not None and len(out) >= limit:
            break
    out.sort(key=lambda x: -x.max_act)
    for b, part in enumerate(_bins(list(range(len(out)))[::-1], cfg.n_quantiles)):
        for i in part:
            out[i].quantile = b
    return out


def _bins(items: list, n: int) -> list[list]:
    """``items`` cut into ``n`` equal-count consecutive bins (sizes differ by at most one; empty bins dropped)."""
    q, r = divmod(len(items), n)
    out, i = [], 0
    for b in range(n):
        size = q + (1 if b < r else 0)
        if size:
            out.append(items[i:i + size])
        i += size
    return out


def sample(examples: list[Example], n: int, how: str, rng: random.Random, n_quantiles: int = 10) -> list[Example]:
    """``n`` examples: the ``top`` ones, ``random`` ones, or ``quantiles`` (evenly over equal-count rank bins of
    max activation; every non-empty bin contributes when ``n`` >= the number of bins)."""
    if how not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {how!r}")
    if n >= len(examples):
        return list(examples)
    if how == "top":
        return sorted(examples, key=lambda x: -x.max_act)[:n]
    if how == "random":
        return rng.sample(examples, n)
    ranked = sorted(examples, key=lambda x: x.max_act)
    bins = _bins(ranked, n_quantiles)
    per, extra = divmod(n, len(bins))
    picked: list[Example] = []
    for b, part in enumerate(bins):
        picked += rng.sample(part, min(len(part), per + (1 if b < extra else 0)))
    if len(picked) < n:   # small bins: fill from what is left
        left = [x for x in ranked if all(x is not p for p in picked)]
        picked += rng.sample(left, n - len(picked))
    return picked


def random_negatives(cache: LatentCache, j: int, n: int, cfg: ExampleConfig, rng: random.Random,
                     runs: Runs | None = None, tries: int = 50) -> list[Example]:
    """``n`` windows at random rows where latent ``j`` is zero on every token (non-overlapping)."""
    runs = runs or Runs(cache)
    dense = cache.dense(j)
    out: list[Example] = []
    taken: set[int] = set()
    for _ in range(n * tries):
        if len(out) >= n or cache.n_rows == 0:
            break
        s, e = runs.window(rng.randrange(cache.n_rows), cfg.ctx_len, cfg.after)
        if bool((dense[s:e] > 0).any()) or taken.intersection(range(s, e)):
            continue
        taken.update(range(s, e))
        out.append(_example(runs, dense, j, (s, e), "random"))
    return out


def neighbour_negatives(cache: LatentCache, j: int, n: int, decoder: torch.Tensor, cfg: ExampleConfig,
                        runs: Runs | None = None) -> list[Example]:
    """Hard negatives: top windows of the ``cfg.n_neighbours`` latents nearest to ``j`` by decoder cosine, kept
    where latent ``j`` is zero on every token, taken round-robin over the neighbours."""
    from actlab.explain.effects import nearest_features

    runs = runs or Runs(cache)
    dense = cache.dense(j)
    lists = []
    for nb, _ in nearest_features(decoder, j, cfg.n_neighbours):
        exs = [x for x in activating_windows(cache, nb, cfg, runs) if not any(v > 0 for v in dense[
            x.start: x.start + len(x.tokens)].tolist())]
        for x in exs:
            x.kind, x.source_latent, x.latent, x.quantile, x.peak = "neighbour", nb, j, -1, -1
            x.acts = dense[x.start: x.start + len(x.tokens)].tolist()
        lists.append(exs)
    out: list[Example] = []
    seen: set[int] = set()
    while len(out) < n and any(lists):
        for exs in lists:
            while exs:
                x = exs.pop(0)
                if not seen.intersection(range(x.start, x.start + len(x.tokens))):
                    seen.update(range(x.start, x.start + len(x.tokens)))
                    out.append(x)
                    break
            if len(out) >= n:
                break
    return out


def build_examples(cache: LatentCache, j: int, cfg: ExampleConfig | None = None,
                   decoder: torch.Tensor | None = None) -> ExampleSet:
    """Train, test and non-activating examples of latent ``j`` (train and test disjoint windows)."""
    from dataclasses import asdict

    cfg = cfg or ExampleConfig()
    rng = random.Random(cfg.seed * 1_000_003 + j)
    runs = Runs(cache)
    cands = activating_windows(cache, j, cfg, runs, limit=cfg.max_examples)
    train = sample(cands, cfg.n_train, cfg.train_type, rng, cfg.n_quantiles)
    ids = {id(x) for x in train}
    rest = [x for x in cands if id(x) not in ids]
    test = sample(rest, cfg.n_test, "quantiles", rng, cfg.n_quantiles)
    if cfg.negatives == "neighbour":
        if decoder is None:
            raise ValueError("neighbour negatives need the latents' decoder directions (a dictionary or directions "
                             "source); use negatives='random'")
        neg = neighbour_negatives(cache, j, cfg.n_non_activating, decoder, cfg, runs)
    else:
        neg = random_negatives(cache, j, cfg.n_non_activating, cfg, rng, runs)
    return ExampleSet(j, train, test, neg, len(cands), asdict(cfg))
