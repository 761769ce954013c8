"""Massive activations (Sun et al., arXiv 2402.17762): detection, per-layer tables, ablation and attention sinks.

An entry ``h[t, c]`` of one sequence's hidden state ``h_l`` is *massive* when ``|h| > 100`` **and**
``|h| >= 1000 * median(|h_l|)``, the median taken over that sequence's T x D entries at that layer.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from actlab.core.interventions import Intervention, register_op

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

ABS_THRESHOLD = 100.0
REL_THRESHOLD = 1000.0


def seq_median(a_bpd: torch.Tensor) -> torch.Tensor:
    """Per-sequence (lower) median of ``|h|`` over all positions and channels: ``[b, p, d] -> [b]``."""
    flat = a_bpd.reshape(a_bpd.shape[0], -1)
    return flat.kthvalue((flat.shape[1] + 1) // 2, dim=1).values


def massive_mask(h: torch.Tensor, abs_threshold: float = ABS_THRESHOLD,
                 rel_threshold: float = REL_THRESHOLD) -> torch.Tensor:
    """Bool mask of massive entries of ``h`` ``[T, D]`` (one sequence) or ``[b, T, D]`` (median per sequence)."""
    if h.dim() not in (2, 3):
        raise ValueError(f"massive_mask expects [T, D] or [batch, T, D]; got shape {list(h.shape)}")
    a = h.detach().abs().float()
    a3 = a if a.dim() == 3 else a[None]
    med = seq_median(a3)[:, None, None]
    mask = (a3 > abs_threshold) & (a3 >= rel_threshold * med)
    return mask if h.dim() == 3 else mask[0]


def detect_massive(h: torch.Tensor, abs_threshold: float = ABS_THRESHOLD,
                   rel_threshold: float = REL_THRESHOLD) -> set[tuple[int, int]]:
    """The set of ``(position, channel)`` of massive entries in one sequence's hidden state ``[T, D]``."""
    if h.dim() != 2:
        raise ValueError(f"detect_massive expects one sequence [T, D]; got shape {list(h.shape)}")
    idx = massive_mask(h, abs_threshold, rel_threshold).nonzero().tolist()
    return {(int(t), int(c)) for t, c in idx}


@dataclass
class TopEntry:
    """One large activation: magnitude, signed value, sequence index, position, channel and token id."""

    magnitude: float
    value: float
    seq: int
    pos: int
    channel: int
    token: int


@dataclass
class LayerMassive:
    """Streaming massive-activation statistics of one site (one layer) over many sequences."""

    d: int
    top_k: int = 10
    abs_threshold: float = ABS_THRESHOLD
    rel_threshold: float = REL_THRESHOLD
    n_seq: int = 0
    top: list[TopEntry] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)          # top1 / median per sequence
    medians: list[float] = field(default_factory=list)         # median |h| per sequence
    top1: list[float] = field(default_factory=list)            # max |h| per sequence
    n_massive: list[int] = field(default_factory=list)         # massive entries per sequence
    channel_seqs: torch.Tensor | None = None                   # [d] sequences with a massive entry in channel c
    channel_sum: torch.Tensor | None = None                    # [d] sum of signed massive values
    channel_count: torch.Tensor | None = None                  # [d] number of massive entries
    positions: Counter = field(default_factory=Counter)       # position index -> massive entries
    tokens: Counter = field(default_factory=Counter)          # token id -> massive entries

    def __post_init__(self):
        self.channel_seqs = torch.zeros(self.d, dtype=torch.long)
        self.channel_sum = torch.zeros(self.d, dtype=torch.float64)
        self.channel_count = torch.zeros(self.d, dtype=torch.long)

    def update(self, h_bpd: torch.Tensor, ids_bp: torch.Tensor | None = None) -> None:
        """Consume a batch of full sequences ``[b, p, d]`` (no padding) with their token ids ``[b, p]``."""
        h = h_bpd.detach().float()
        b, p, d = h.shape
        a = h.abs()
        med = seq_median(a)
        rowmax = a.amax(-1)                                   # [b, p]
        # the k largest entries lie in the k positions with the largest row maxima: search only those rows
        kp = min(self.top_k, p)
        pos_k = rowmax.topk(kp, dim=1).indices                # [b, kp]
        sub = a.gather(1, pos_k[:, :, None].expand(-1, -1, d)).reshape(b, -1)
        top_v, top_j = sub.topk(min(self.top_k, sub.shape[1]), dim=1)
        top_pos = pos_k.gather(1, top_j // d)
        top_ch = top_j % d
        thr = torch.clamp(self.rel_threshold * med, min=0.0)
        cand = (rowmax > self.abs_threshold) & (rowmax >= thr[:, None])   # positions holding a massive entry
        self.ratios += (top_v[:, 0] / med.clamp_min(1e-30)).tolist()
        self.medians += med.tolist()
        self.top1 += top_v[:, 0].tolist()
        counts = torch.zeros(b, dtype=torch.long)
        if bool(cand.any()):
            rb, rp = cand.nonzero(as_tuple=True)
            rows = a[rb, rp]                                  # [n_cand, d]
            m = (rows > self.abs_threshold) & (rows >= thr[rb][:, None])
            ri, ch = m.nonzero(as_tuple=True)
            sb, sp = rb[ri], rp[ri]
            counts.index_add_(0, sb.cpu(), torch.ones(len(sb), dtype=torch.long))
            seq_ch = torch.zeros(b, d, dtype=torch.bool)
            seq_ch[sb.cpu(), ch.cpu()] = True
            self.channel_seqs += seq_ch.sum(0)
            vals = h[sb, sp, ch]
            self.channel_sum.index_add_(0, ch.cpu(), vals.double().cpu())
            self.channel_count.index_add_(0, ch.cpu(), torch.ones(len(ch), dtype=torch.long))
            self.positions.update(sp.tolist())
            if ids_bp is not None:
                self.tokens.update(ids_bp[sb, sp].tolist())
        self.n_massive += counts.tolist()
        vals = h[torch.arange(b, device=h.device)[:, None], top_pos, top_ch].tolist()
        new = []
        for r in range(b):
            for v, val, pos, ch_ in zip(top_v[r].tolist(), vals[r], top_pos[r].tolist(), top_ch[r].tolist()):
                tok = int(ids_bp[r, pos]) if ids_bp is not None else -1
                new.append(TopEntry(v, val, self.n_seq + r, pos, ch_, tok))
        self.top = sorted(self.top + new, key=lambda e: -e.magnitude)[: self.top_k]
        self.n_seq += b

    def channel_means(self) -> torch.Tensor:
        """Mean signed value of each channel's massive entries (NaN for channels never massive): ``[d]``."""
        m = self.channel_sum / self.channel_count.clamp_min(1)
        m[self.channel_count == 0] = float("nan")
        return m.float()

    def recurring_channels(self, min_frac: float = 0.5) -> list[int]:
        """Channels with a massive entry in at least ``min_frac`` of the sequences."""
        if self.n_seq == 0:
            return []
        return (self.channel_seqs >= min_frac * self.n_seq).nonzero().flatten().tolist()

    def summary(self, tokenizer=None) -> dict:
        """JSON-able per-layer summary (median over sequences of the per-sequence figures)."""
        def med(xs):
            return float(torch.tensor(xs).median()) if xs else float("nan")

        def tok(i):
            if tokenizer is None or i < 0:
                return str(i)
            return tokenizer.decode([i])

        return {
            "n_seq": self.n_seq,
            "top1_median": med(self.top1), "top1_max": max(self.top1) if self.top1 else float("nan"),
            "median_abs": med(self.medians), "ratio_median": med(self.ratios),
            "frac_seq_with_massive": sum(1 for n in self.n_massive if n > 0) / max(1, self.n_seq),
            "massive_per_seq": sum(self.n_massive) / max(1, self.n_seq),
            "recurring_channels": self.recurring_channels(),
            "top_positions": self.positions.most_common(5),
            "top_tokens": [(tok(t), n) for t, n in self.tokens.most_common(5)],
            "top": [{"magnitude": e.magnitude, "value": e.value, "seq": e.seq, "pos": e.pos, "channel": e.channel,
                     "token": tok(e.token)} for e in self.top],
        }


def first_massive_layer(summaries: list[dict], min_frac: float = 0.5) -> int | None:
    """Index of the first layer where at least ``min_frac`` of sequences hold a massive activation."""
    for i, s in enumerate(summaries):
        if s["frac_seq_with_massive"] >= min_frac:
            return i
    return None


def mask_channels(x: torch.Tensor, channels: list[int], value: float = 0.0) -> torch.Tensor:
    """Copy of ``x`` with the given channels (last dim) set to ``value``; use it to keep massive channels out of
    difference-of-means directions or per-tensor quantisation ranges."""
    out = x.clone()
    if channels:
        out[..., torch.as_tensor(channels, device=x.device)] = value
    return out


@register_op
@dataclass
class MassivePatch(Intervention):
    """Set massive entries (detected on the fly, same rule as ``massive_mask``) to 0 or to per-channel means.

    ``means`` ``[d]`` holds the mean massive value per channel (NaN: leave that channel's entries unchanged).
    """

    op: ClassVar[str] = "massive_patch"
    mode: str = "zero"
    means: torch.Tensor | None = None
    abs_threshold: float = ABS_THRESHOLD
    rel_threshold: float = REL_THRESHOLD

    def __post_init__(self):
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"MassivePatch.mode must be 'zero' or 'mean'; got {self.mode!r}")
        if self.mode == "mean" and self.means is None:
            raise ValueError("MassivePatch(mode='mean') needs means: the per-channel mean of massive values [d]")

    def edit(self, act, ctx):
        if act.dim() != 3:
            raise ValueError(f"MassivePatch needs a [batch, pos, d] site; {ctx.site!r} has shape {list(act.shape)}")
        from actlab.stats.quant import stats_threads

        with stats_threads(1, act.device):
            mask = massive_mask(act, self.abs_threshold, self.rel_threshold)
        if ctx.info is not None and not bool(ctx.info.valid_bp.all()):
            mask &= ctx.info.valid_bp.to(mask.device)[:, :, None]
        if self.mode == "zero":
            repl = torch.zeros((), dtype=act.dtype, device=act.device)
        else:
            mu = self.means.to(device=act.device, dtype=act.dtype)
            repl = torch.where(torch.isnan(mu), act, mu)
            mask &= ~torch.isnan(mu)
        return torch.where(mask, repl, act)


@dataclass
class AblationResult:
    """Perplexity (and mean |logit change|) with massive entries untouched, zeroed, and set to their means."""

    site: str
    ppl_base: float
    ppl_zero: float
    ppl_mean: float
    logit_change_zero: float
    logit_change_mean: float


def ablation_test(model: Model, site: str, ids: torch.Tensor, means: torch.Tensor, batch_size: int = 8,
                  progress: bool = False) -> AblationResult:
    """The bias hypothesis test: patch the massive entries at ``site`` to zero (perplexity should explode) and
    to their mean over many sequences (perplexity should barely move). Streams over batches of ``ids``."""
    from tqdm.auto import tqdm

    from actlab.stats.calibration import next_token_nll

    nll = {"base": 0.0, "zero": 0.0, "mean": 0.0}
    dlog = {"zero": 0.0, "mean": 0.0}
    n_tok = 0
    n_batches = 0
    with torch.no_grad():
        for s in tqdm(range(0, len(ids), batch_size), desc="ablation", unit="batch", disable=not progress,
                      leave=False):
            x = ids[s:s + batch_size].to(model.device)
            base = model(x, use_cache=False).logits.float()
            nll["base"] += next_token_nll(base, x)
            for mode in ("zero", "mean"):
                with model.intervene({site: MassivePatch(mode=mode, means=means)}):
                    lg = model(x, use_cache=False).logits.float()
                nll[mode] += next_token_nll(lg, x)
                dlog[mode] += float((lg - base).abs().mean())
            n_tok += x.shape[0] * (x.shape[1] - 1)
            n_batches += 1
    ppl = {k: math.exp(v / n_tok) for k, v in nll.items()}
    return AblationResult(site, ppl["base"], ppl["zero"], ppl["mean"], dlog["zero"] / n_batches,
                          dlog["mean"] / n_batches)


def attention_sink(model: Model, ids: torch.Tensor, sink_bp: torch.Tensor) -> list[float]:
    """Per layer, the mean attention mass (over heads and query positions after the first) that lands on the
    tokens marked in ``sink_bp`` ``[b, p]`` (e.g. the tokens holding massive activations).

    Reads the ``blocks.{i}.attn.pattern`` sites in one forward pass.
    """
    sites = [f"blocks.{i}.attn.pattern" for i in range(model.n_layers)]
    missing = [x for x in sites if x not in model.sites]
    if missing:
        raise ValueError(f"{model.name} ({model.family}) has no attention-pattern sites (e.g. {missing[0]!r}); "
                         f"attention_sink reads them")
    pats = model.record(ids.to(model.device), sites)  # [b, q, heads, k]
    sink = sink_bp.to(model.device).float()
    masses = []
    for s in sites:
        mass = (pats[s].float() * sink[:, None, None, :]).sum(-1)   # [b, q, heads]
        masses.append(float(mass[:, 1:].mean()))
    return masses
