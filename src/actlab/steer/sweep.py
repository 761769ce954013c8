"""Sweep layers x strengths: generate with each setting, score the concept and the fluency cost, plot the trade-off
(PNG) and pick the best setting (highest concept score whose perplexity stays within a bound of the plain one).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from actlab.steer.directions import Direction
from actlab.steer.evaluate import kl_on_neutral, perplexity
from actlab.utils import atomic_write_json

log = logging.getLogger(__name__)


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
    batch_size: int = 8
    """Prompts per generate call."""

    def __post_init__(self):
        if not self.strengths:
            raise ValueError("need at least one strength")
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


@dataclass
class SweepResult:
    """Rows per setting plus the unsteered baseline and the chosen setting."""

    rows: list[SweepRow]
    baseline: SweepRow
    best: SweepRow | None
    config: dict

    def save(self, folder: str | os.PathLike, plot: bool = True) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "sweep.json", {
            "format_version": 1, "kind": "actlab.steer.sweep", "config": self.config,
            "baseline": asdict(self.baseline), "best": asdict(self.best) if self.best else None,
            "rows": [asdict(r) for r in self.rows]})
        if plot:
            self.plot(folder / "tradeoff.png")
        return folder

    def plot(self, path: str | os.PathLike) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        sites = sorted({r.site for r in self.rows}, key=lambda s: int(s.split(".")[1]) if s.startswith("blocks.")
                       else 0)
        cmap = plt.get_cmap("viridis", max(2, len(sites)))
        for i, s in enumerate(sites):
            rs = sorted([r for r in self.rows if r.site == s], key=lambda r: r.strength)
            ax.plot([r.ppl for r in rs], [r.concept for r in rs], "o-", color=cmap(i), ms=3, lw=1, label=s)
        ax.plot([self.baseline.ppl], [self.baseline.concept], "k*", ms=12, label="unsteered")
        if self.best:
            ax.plot([self.best.ppl], [self.best.concept], "rs", ms=10, mfc="none", label="best")
        ax.set_xscale("log")
        ax.set_xlabel("perplexity of generations under the unsteered model (log)")
        ax.set_ylabel("concept score")
        ax.set_title("steering trade-off (strength grows along each line)")
        if len(sites) <= 12:
            ax.legend(fontsize=6)
        fig.tight_layout()
        tmp = Path(str(path) + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        return Path(path)


def _generate(model, prompts, cfg: SweepConfig) -> list[str]:
    out: list[str] = []
    for i in range(0, len(prompts), cfg.batch_size):
        out += model.generate(list(prompts[i:i + cfg.batch_size]), max_new_tokens=cfg.max_new_tokens, chat=cfg.chat)
    return out


def sweep(model, directions: dict[str, Direction] | Sequence[Direction], prompts: Sequence[str],
          scorer: Callable[[Sequence[str]], float], *, neutral: Sequence[str] | None = None,
          cfg: SweepConfig | None = None, **kw) -> SweepResult:
    """Generate on ``prompts`` for every (direction site, strength); score concept and fluency."""
    cfg = cfg or SweepConfig(**kw)
    dirs = list(directions.values()) if isinstance(directions, dict) else list(directions)
    if not dirs or not prompts:
        raise ValueError("need at least one direction and one prompt")
    neutral = list(neutral or prompts)

    def row(site, strength, texts, secs, ivs):
        p = perplexity(model, prompts, texts, chat=cfg.chat)
        kl = kl_on_neutral(model, ivs, neutral) if ivs else 0.0
        return SweepRow(site, strength, float(scorer(texts)), p.ppl, kl, secs, p.n_tokens, texts[0][:200])

    t = time.perf_counter()
    base_texts = _generate(model, prompts, cfg)
    baseline = row("none", 0.0, base_texts, time.perf_counter() - t, None)
    rows = []
    bar = tqdm(total=len(dirs) * len(cfg.strengths), desc="steer sweep")
    for d in dirs:
        for s in cfg.strengths:
            ivs = d.to_interventions(s, mode=cfg.mode, scale=cfg.scale)
            t = time.perf_counter()
            with model.intervene(ivs):
                texts = _generate(model, prompts, cfg)
            rows.append(row(d.site, float(s), texts, time.perf_counter() - t, ivs))
            bar.update(1)
    bar.close()
    ok = [r for r in rows if r.ppl <= cfg.max_ppl_ratio * baseline.ppl and r.concept > baseline.concept]
    best = max(ok, key=lambda r: (r.concept, -r.ppl)) if ok else None
    if best is None:
        log.warning("no setting raised the concept score within %.2fx the plain perplexity", cfg.max_ppl_ratio)
    return SweepResult(rows, baseline, best, asdict(cfg))


def load_sweep(folder: str | os.PathLike) -> dict:
    """The JSON written by ``SweepResult.save``."""
    p = Path(folder) / "sweep.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    return json.loads(p.read_text())
