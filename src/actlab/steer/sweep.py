"""Sweep layers x strengths: generate with each setting, score the concept and the fluency cost, plot the trade-off
(PNG) and pick the best setting (highest concept score whose perplexity stays within a bound of the plain one).
"""
from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from actlab.artifact import atomic_write_bytes, atomic_write_json, folder_lock
from actlab.steer.directions import Direction
from actlab.steer.evaluate import completion_perplexity

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

BASE_LP_BYTES = 256 << 20
"""Keep the unsteered log-probabilities of the neutral prompts for the whole sweep when they fit in this many bytes."""


@dataclass
class SweepConfig:
    """A layers x strengths sweep."""

    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    """Strengths, in units given by ``scale``."""
    scale: str = "resid"
    """Units of a strength: resid (median residual norm at the site), unit or raw (see Direction.scaled)."""
    mode: str = "add"
    """add | norm_add | prompt_add (see Direction.to_interventions)."""
    max_new_tokens: int = 32
    """Tokens generated per prompt and setting."""
    chat: bool = False
    """Use the chat template for the prompts."""
    max_ppl_ratio: float = 2.0
    """The best setting must keep perplexity <= this times the unsteered generations' perplexity."""
    batch_size: int = 40
    """Rows (prompt x strength) per generate call; the strengths of a site run side by side in one batch."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.strengths:
            raise ValueError("need at least one strength")
        bad = [x for x in self.strengths if not math.isfinite(float(x))]
        if bad:
            raise ValueError(f"strengths {bad} are not finite; give finite numbers")
        if self.mode not in ("add", "norm_add", "prompt_add"):
            raise ValueError(f"sweep mode must be add, norm_add or prompt_add, got {self.mode!r}")
        if self.max_ppl_ratio <= 0:
            raise ValueError("max_ppl_ratio must be > 0")


@dataclass
class SweepRow:
    """One setting: site, strength, concept score, perplexity (under the unsteered model), KL on neutral prompts."""

    site: str
    strength: float
    concept: float
    ppl: float
    kl: float
    seconds: float
    n_tokens: int
    sample: str = ""


BEST_RULE = ("highest concept score among the settings whose perplexity is at most max_ppl_ratio x the unsteered "
             "generations' perplexity and whose concept score beats the unsteered one; ties: lower perplexity")


def qualifying(rows: Sequence[SweepRow], baseline: SweepRow, max_ppl_ratio: float) -> list[SweepRow]:
    """Settings whose perplexity is at most ``max_ppl_ratio`` x the unsteered one and whose concept score beats it."""
    return [r for r in rows if r.ppl <= max_ppl_ratio * baseline.ppl and r.concept > baseline.concept]


def pick_best(rows: Sequence[SweepRow], baseline: SweepRow, max_ppl_ratio: float) -> SweepRow | None:
    """The best setting by ``BEST_RULE`` (None when no setting qualifies)."""
    ok = qualifying(rows, baseline, max_ppl_ratio)
    return max(ok, key=lambda r: (r.concept, -r.ppl)) if ok else None


@dataclass
class SweepResult:
    """Rows per setting plus the unsteered baseline and the chosen setting (see ``BEST_RULE``)."""

    rows: list[SweepRow]
    baseline: SweepRow
    best: SweepRow | None
    config: dict
    directions: dict[str, Direction] = field(default_factory=dict)
    """The swept directions by site (``save`` writes the best one and its replayable interventions)."""

    def best_setting(self) -> dict:
        """What ``best.json`` holds: the chosen site, strength (with its scale and mode) and scores, and how it was
        chosen (the rule, the perplexity bound, how many settings qualified); ``best`` is None when none did."""
        bound = self.config.get("max_ppl_ratio", float("nan")) * self.baseline.ppl
        n_ok = len(qualifying(self.rows, self.baseline, self.config.get("max_ppl_ratio", float("nan"))))
        b = self.best
        return {"best": None if b is None else {
                    "site": b.site, "strength": b.strength, "scale": self.config.get("scale"),
                    "mode": self.config.get("mode"), "concept": b.concept, "ppl": b.ppl, "kl": b.kl,
                    "sample": b.sample},
                "chosen_by": {"rule": BEST_RULE, "max_ppl_ratio": self.config.get("max_ppl_ratio"),
                              "ppl_bound": bound, "baseline_concept": self.baseline.concept,
                              "baseline_ppl": self.baseline.ppl, "qualifying_settings": n_ok,
                              "settings": len(self.rows)}}

    def save(self, folder: str | os.PathLike, plot: bool = True) -> Path:
        """``sweep.json`` (every row), ``best.json`` (the best setting and how it was chosen), ``tradeoff.png`` and,
        when a setting qualified and its direction is known, ``best_direction/`` and ``best_interventions.json``
        (replayable with ``actlab generate --intervention``)."""
        folder = Path(folder)
        with folder_lock(folder, what="steer sweep save"):
            return self._save(folder, plot)

    def _save(self, folder: Path, plot: bool) -> Path:
        atomic_write_json(folder / "sweep.json", {
            "format_version": 1, "kind": "actlab.steer.sweep", "config": self.config,
            "baseline": asdict(self.baseline), "best": asdict(self.best) if self.best else None,
            "best_rule": BEST_RULE, "rows": [asdict(r) for r in self.rows]})
        atomic_write_json(folder / "best.json", {"format_version": 1, "kind": "actlab.steer.best",
                                                 **self.best_setting()})
        d = self.directions.get(self.best.site) if self.best else None
        if d is not None:
            d.save(folder / "best_direction")
            d.save_interventions(folder / "best_interventions.json", alpha=self.best.strength,
                                 mode=self.config.get("mode", "add"), scale=self.config.get("scale", "raw"))
        if plot:
            self.plot(folder / "tradeoff.png")
        return folder

    def figure(self):
        """The trade-off figure: concept score against perplexity, one line per site, each point labelled with its
        strength, the unsteered run and the best setting marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        sites = sorted({r.site for r in self.rows}, key=lambda s: int(s.split(".")[1]) if s.startswith("blocks.")
                       else 0)
        cmap = plt.get_cmap("viridis", max(2, len(sites)))
        for i, s in enumerate(sites):
            rs = sorted([r for r in self.rows if r.site == s], key=lambda r: r.strength)
            ax.plot([r.ppl for r in rs], [r.concept for r in rs], "o-", color=cmap(i), ms=3, lw=1, label=s)
            for r in rs:
                ax.annotate(f"{r.strength:g}", (r.ppl, r.concept), textcoords="offset points", xytext=(3, 3),
                            fontsize=6, color=cmap(i))
        ax.plot([self.baseline.ppl], [self.baseline.concept], "k*", ms=12, label="unsteered")
        if self.best:
            ax.plot([self.best.ppl], [self.best.concept], "rs", ms=10, mfc="none",
                    label=f"best: {self.best.site} x{self.best.strength:g}")
        ax.set_xscale("log")
        ax.set_xlabel("perplexity of generations under the unsteered model (log)")
        ax.set_ylabel("concept score")
        ax.set_title(f"steering trade-off (labels: strength, {self.config.get('scale', 'raw')} units)", fontsize=9)
        if len(sites) <= 12:
            ax.legend(fontsize=6)
        fig.tight_layout()
        return fig

    def plot(self, path: str | os.PathLike) -> Path:
        """Write :meth:`figure` as a PNG (atomically)."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        return atomic_write_bytes(path, buf.getvalue())


def _generate(model: Model, prompts, cfg: SweepConfig, direction: Direction | None = None,
              strengths: Sequence[float] = (0.0,)) -> list[str]:
    """Generations for every (strength, prompt), strength-major. The strengths of one direction run side by side:
    each batch of ``cfg.batch_size`` rows carries one strength per row (a per-row ``alpha``)."""
    rows = [(s, p) for s in strengths for p in prompts]
    out: list[str] = []
    for i in range(0, len(rows), cfg.batch_size):
        chunk = rows[i:i + cfg.batch_size]
        ps = [p for _, p in chunk]
        if direction is None:
            out += model.generate(ps, max_new_tokens=cfg.max_new_tokens, chat=cfg.chat)
            continue
        alphas = torch.tensor([s for s, _ in chunk], dtype=torch.float32)
        with model.intervene(direction.to_interventions(alphas, mode=cfg.mode, scale=cfg.scale)):
            out += model.generate(ps, max_new_tokens=cfg.max_new_tokens, chat=cfg.chat)
    return out


@torch.no_grad()
def _kl_per_strength(model: Model, d: Direction, enc: dict, base_lp: torch.Tensor | None, strengths: Sequence[float],
                     cfg: SweepConfig) -> list[float]:
    """Mean over the neutral prompts' real tokens of KL(plain || steered) for each strength, strengths batched
    side by side like the generations (the plain log-probabilities are computed once per sweep when they fit in
    ``BASE_LP_BYTES``, else per batch)."""
    n = enc["input_ids"].shape[0]
    rows = [(j, i) for j in range(len(strengths)) for i in range(n)]
    mask = enc["attention_mask"].bool()
    num = torch.zeros(len(strengths), dtype=torch.float64)
    den = torch.zeros(len(strengths), dtype=torch.float64)
    for c in range(0, len(rows), cfg.batch_size):
        js = torch.tensor([j for j, _ in rows[c:c + cfg.batch_size]])
        ii = torch.tensor([i for _, i in rows[c:c + cfg.batch_size]])
        alphas = torch.tensor([float(strengths[j]) for j in js.tolist()])
        sub = {k: v[ii] for k, v in enc.items()}
        with model.intervene(d.to_interventions(alphas, mode=cfg.mode, scale=cfg.scale)):
            st = torch.log_softmax(model(sub).logits.float(), -1)
        b = base_lp[ii] if base_lp is not None else torch.log_softmax(model(sub).logits.float(), -1)
        m = mask[ii]
        kl = (b.exp() * (b - st)).sum(-1) * m
        num.index_add_(0, js, kl.sum(1).double())
        den.index_add_(0, js, m.sum(1).double())
    return (num / den.clamp_min(1)).tolist()


def sweep(model: Model, directions: dict[str, Direction] | Sequence[Direction], prompts: Sequence[str],
          scorer: Callable[[Sequence[str]], float], *, neutral: Sequence[str] | None = None,
          cfg: SweepConfig | None = None, **kw) -> SweepResult:
    """Generate on ``prompts`` for every (direction site, strength); score concept and fluency.

    The strengths of one direction share batches (one strength per row), so a sweep costs about as much as
    ``len(directions)`` large-batch generations; ``SweepRow.seconds`` is the direction's time split evenly over
    its strengths."""
    cfg = cfg or SweepConfig(**kw)
    dirs = list(directions.values()) if isinstance(directions, dict) else list(directions)
    if not dirs or not prompts:
        raise ValueError("need at least one direction and one prompt")
    prompts, neutral = list(prompts), list(neutral or prompts)
    P, K = len(prompts), len(cfg.strengths)

    def ppl_of(nll, n):
        return math.exp(sum(nll) / sum(n)) if sum(n) else float("nan")

    t = time.perf_counter()
    base_texts = _generate(model, prompts, cfg)
    p = completion_perplexity(model, prompts, base_texts, chat=cfg.chat, batch_size=cfg.batch_size)
    baseline = SweepRow("none", 0.0, float(scorer(base_texts)), p.ppl, 0.0, time.perf_counter() - t, p.n_tokens,
                        base_texts[0][:200])
    enc = {k: v for k, v in model.tokenize(neutral).items()}
    base_lp = None
    vocab = getattr(model.config, "vocab_size", None) or 0
    if enc["input_ids"].numel() * vocab * 4 <= BASE_LP_BYTES:
        with torch.no_grad():
            base_lp = torch.log_softmax(model(enc).logits.float(), -1)
    rows = []
    bar = tqdm(total=len(dirs) * K, desc="steer sweep")
    for d in dirs:
        t = time.perf_counter()
        texts = _generate(model, prompts, cfg, d, cfg.strengths)
        secs = (time.perf_counter() - t) / K
        p = completion_perplexity(model, prompts * K, texts, chat=cfg.chat, batch_size=cfg.batch_size)
        kls = _kl_per_strength(model, d, enc, base_lp, cfg.strengths, cfg)
        for j, s in enumerate(cfg.strengths):
            sl = slice(j * P, (j + 1) * P)
            rows.append(SweepRow(d.site, float(s), float(scorer(texts[sl])), ppl_of(p.nll[sl], p.n_per_text[sl]),
                                 kls[j], secs, sum(p.n_per_text[sl]), texts[sl][0][:200]))
        bar.update(K)
    bar.close()
    best = pick_best(rows, baseline, cfg.max_ppl_ratio)
    if best is None:
        log.warning("no setting raised the concept score within %.2fx the plain perplexity", cfg.max_ppl_ratio)
    return SweepResult(rows, baseline, best, asdict(cfg), {d.site: d for d in dirs})


def load_sweep(folder: str | os.PathLike) -> dict:
    """The JSON written by ``SweepResult.save``."""
    from actlab.artifact import read_json

    return read_json(Path(folder) / "sweep.json", what="steer sweep")
