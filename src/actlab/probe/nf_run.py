"""End-to-end neurofeedback run behind ``actlab probe neurofeedback``: labelled sentences (bundled, offline), states
at one site, target axes, then reporting vs N (with a shuffled-label control) and explicit/implicit control on each
axis; writes report.md, report.json and reporting.png / control.png (chance level drawn)."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actlab.probe.nf_data import NF_DATASETS, nf_sentences
from actlab.probe.nf_prompts import FORMATS
from actlab.probe.nf_tasks import nf_explicit, nf_implicit, nf_reporting, nf_setup
from actlab.probe.report import write_report

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}={text!r}: expected comma-separated integers") from None


@dataclass
class NFConfig:
    """The neurofeedback paradigm's tasks (probes.md §3) on one site."""

    dataset: str = "sentiment"
    """labelled sentences: sentiment (bundled, 50 + 50) or harmful (actlab.steer's instructions, 24 + 24)"""
    site: str = ""
    """site of the sentence states (default: the middle block's resid_post)"""
    pooling: str = "mean"
    """sentence representation: mean (over its tokens, the paper's) or last token"""
    fmt: str = "chat"
    """reporting prompt: chat (multi-turn chat template) or plain (few-shot text); control always uses chat"""
    axes: str = "lr,pc1,pc2,pc32"
    """target axes: lr (logistic-regression axis of the dataset label) and pc<k> (k-th principal component)"""
    n_shots: str = "0,4,16,64"
    """in-context example counts N for reporting"""
    seeds: int = 3
    """context samples (seeds) per N for reporting"""
    n_test: int = 32
    """held-out sentences (half per dataset label); the rest is the train split"""
    shuffled: bool = True
    """add a shuffled-label control at the largest N (no label information: reporting falls to the model's prior,
    which on a semantic axis can sit above chance)"""
    control_shots: str = "0,16,64"
    """N for explicit and implicit control (empty: no control tasks)"""
    control_seeds: int = 1
    """context samples per N for control"""
    n_samples: int = 8
    """explicit control: sentences sampled per target"""
    n_given: int = 16
    """implicit control: held-out sentences read per target"""
    temperature: float = 0.7
    """explicit control: sampling temperature"""
    max_new_tokens: int = 24
    """explicit control: longest sentence written"""
    split_seed: int = 0
    """seed of the train/held-out split"""
    n_boot: int = 1000
    """bootstrap resamples for the 95% intervals"""
    batch_size: int = 8
    """query suffixes per forward pass"""

    def __post_init__(self) -> None:
        if self.dataset not in NF_DATASETS:
            raise ValueError(f"dataset={self.dataset!r}; use one of {', '.join(NF_DATASETS)}")
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"pooling={self.pooling!r}; use mean or last")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt={self.fmt!r}; use one of {', '.join(FORMATS)}")
        for a in self.axis_list():
            if a != "lr" and not (a.startswith("pc") and a[2:].isdigit() and int(a[2:]) >= 1):
                raise ValueError(f"axes: unknown axis {a!r}; use lr or pc<k> (k >= 1)")
        if not self.axis_list() or not self.shot_list():
            raise ValueError("need at least one axis and one N")
        if min(self.shot_list() + self.control_list()) < 0 or min(self.seeds, self.n_boot, self.batch_size) < 1:
            raise ValueError("N must be >= 0; seeds, n_boot and batch_size >= 1")
        if self.control_list() and (self.n_samples < 2 or self.n_given < 2 or self.control_seeds < 1):
            raise ValueError("control needs n_samples >= 2, n_given >= 2 and control_seeds >= 1")

    def axis_list(self) -> list[str]:
        return [a.strip() for a in self.axes.split(",") if a.strip()]

    def shot_list(self) -> list[int]:
        return _ints(self.n_shots, "n_shots")

    def control_list(self) -> list[int]:
        return _ints(self.control_shots, "control_shots")


def _summ(points: list[Any], key: str, chance: float) -> dict[str, Any]:
    """Per N: every seed's interval, the mean over seeds, and whether every seed's interval lies above chance."""
    out: dict[str, Any] = {}
    for p in points:
        e = out.setdefault(str(p.n_shots), {"per_seed": []})
        e["per_seed"].append(getattr(p, key).to_json())
    for e in out.values():
        e["mean"] = float(np.mean([v["value"] for v in e["per_seed"]]))
        e["all_above_chance"] = all(v["lo"] > chance for v in e["per_seed"])
    return out


def run_neurofeedback(model: Model, out: str | Path, cfg: NFConfig | None = None) -> dict[str, Any]:
    """Run the tasks of ``cfg`` and write the report folder; returns the report's JSON content."""
    cfg = cfg or NFConfig()
    site = model.check_sites(cfg.site or f"blocks.{model.n_layers // 2}.resid_post")[0]
    texts, y = nf_sentences(cfg.dataset)
    axes = cfg.axis_list()
    pcs = [int(a[2:]) for a in axes if a != "lr"]
    t0 = time.perf_counter()
    s = nf_setup(model, texts, y, site, pooling=cfg.pooling, n_test=cfg.n_test, pcs=pcs, seed=cfg.split_seed)
    res: dict[str, Any] = {"model": model.name, "site": site, "config": asdict(cfg), "chance": {"auroc": 0.5,
                           "accuracy": "the majority rate of the held-out labels (per axis: accuracy_chance)",
                           "d": 0.0}, "n_train": len(s.train), "n_test": len(s.test), "axes": {}}
    seeds, shots, cshots = list(range(cfg.seeds)), cfg.shot_list(), cfg.control_list()
    lines = [f"- model {model.name}, site {site}, sentence states: {cfg.pooling} pooling; dataset {cfg.dataset} "
             f"({len(s.train)} train / {len(s.test)} held-out sentences, split seed {cfg.split_seed})",
             f"- reporting: {cfg.fmt} prompt, score = log p('1') - log p('0') at the answer position; AUROC and "
             f"accuracy (score > 0) on held-out sentences, {cfg.seeds} context seeds; chance: AUROC 0.5, accuracy the "
             "held-out majority rate (labels are cut at the train median)",
             "- control: Cohen's d of the projection under target 1 vs 0 (chance 0); explicit = states of the "
             "sentences it wrote, implicit = states of given held-out sentences; 95% bootstrap intervals", "",
             "| axis | var | held-out labels = dataset label | " + " | ".join(f"AUROC N={n}" for n in shots)
             + (" | shuffled N=max" if cfg.shuffled else "") + " |",
             "|---" * (3 + len(shots) + cfg.shuffled) + "|"]
    for a in axes:
        log.info("neurofeedback: axis %s (%.0f s)", a, time.perf_counter() - t0)
        rep = nf_reporting(model, s, a, shots, seeds, fmt=cfg.fmt, n_boot=cfg.n_boot, batch_size=cfg.batch_size)
        rate = float(s.labels[a][s.test].float().mean())
        r: dict[str, Any] = {"explained_variance": s.explained.get(a), "threshold": s.threshold[a],
                             "test_label_rate": rate, "accuracy_chance": max(rate, 1 - rate),
                             "agreement_with_dataset_label": float((s.labels[a][s.test] == s.y_data[s.test])
                                                                    .float().mean()),
                             "reporting": {"auroc": _summ(rep, "auroc", 0.5),
                                           "accuracy": _summ(rep, "accuracy", max(rate, 1 - rate)),
                                           "rate_1": {str(n): [p.rate_1 for p in rep if p.n_shots == n]
                                                      for n in shots}}}
        if cfg.shuffled:
            sh = nf_reporting(model, s, a, [max(shots)], seeds, fmt=cfg.fmt, shuffled=True, n_boot=cfg.n_boot,
                              batch_size=cfg.batch_size)
            r["reporting"]["shuffled"] = _summ(sh, "auroc", 0.5)
        if cshots:
            cs = list(range(cfg.control_seeds))
            ex = nf_explicit(model, s, a, cshots, cs, n_samples=cfg.n_samples, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, n_boot=cfg.n_boot)
            im = nf_implicit(model, s, a, cshots, cs, n_given=cfg.n_given, n_boot=cfg.n_boot,
                             batch_size=cfg.batch_size)
            r["explicit"] = {**_summ(ex, "d", 0.0), "label_match": {str(p.n_shots): p.label_match for p in ex},
                             "p": {str(p.n_shots): p.p for p in ex}, "texts": {str(p.n_shots): p.texts for p in ex}}
            r["implicit"] = {**_summ(im, "d", 0.0), "p": {str(p.n_shots): p.p for p in im}}
        res["axes"][a] = r
        au = r["reporting"]["auroc"]
        cells = [_cell(au[str(n)]) for n in shots] + ([_cell(r["reporting"]["shuffled"][str(max(shots))])]
                                                      if cfg.shuffled else [])
        var = "-" if s.explained.get(a) is None else f"{s.explained[a]:.3f}"
        lines.append(f"| {a} | {var} | {r['agreement_with_dataset_label']:.2f} | " + " | ".join(cells) + " |")
    if cshots:
        lines += ["", "| axis | " + " | ".join(f"explicit d N={n}" for n in cshots) + " | "
                  + " | ".join(f"implicit d N={n}" for n in cshots) + " |", "|---" * (1 + 2 * len(cshots)) + "|"]
        for a in axes:
            r = res["axes"][a]
            lines.append(f"| {a} | " + " | ".join(_cell(r["explicit"][str(n)], r["explicit"]["p"][str(n)])
                                                  for n in cshots) + " | "
                         + " | ".join(_cell(r["implicit"][str(n)], r["implicit"]["p"][str(n)]) for n in cshots) + " |")
    res["seconds"] = time.perf_counter() - t0
    lines += ["", "Cells: the mean over seeds, then each seed's 95% interval; * = every seed's interval excludes "
              "chance (above it); control cells add the permutation p-value (the last seed's)."]
    figs = {"reporting.png": lambda ax: _draw(ax, res, shots, "reporting", 0.5, "held-out AUROC")}
    if cshots:
        figs["control.png"] = lambda ax: _draw(ax, res, cshots, "implicit", 0.0, "Cohen's d", explicit=True)
    write_report(out, f"Neurofeedback on {model.name}", res, lines=lines, figures=figs)
    return res


def _cell(e: dict[str, Any], p: float | None = None) -> str:
    ivs = " ".join(f"[{v['lo']:.2f}, {v['hi']:.2f}]" for v in e["per_seed"])
    return f"{e['mean']:.2f}{'*' if e['all_above_chance'] else ''} {ivs}" + (f" p={p:.3g}" if p is not None else "")


def _draw(ax: Any, res: dict[str, Any], shots: list[int], task: str, chance: float, ylabel: str,
          explicit: bool = False) -> None:
    x = np.arange(len(shots))
    for k, (name, r) in enumerate(res["axes"].items()):
        for t, style in ((task, "-o"), ("explicit", "--s")) if explicit else ((task, "-o"),):
            e = r[t]["auroc"] if t == "reporting" else r[t]
            m = [e[str(n)]["mean"] for n in shots]
            lo = [min(v["lo"] for v in e[str(n)]["per_seed"]) for n in shots]
            hi = [max(v["hi"] for v in e[str(n)]["per_seed"]) for n in shots]
            xs = x + 0.06 * (k - len(res["axes"]) / 2)
            ax.errorbar(xs, m, yerr=[np.subtract(m, lo), np.subtract(hi, m)], fmt=style, color=f"C{k}",
                        label=f"{name} {t}" if explicit else name, capsize=2, ms=4)
    ax.axhline(chance, ls=":", color="0.4", label="chance")
    ax.set_xticks(x, [str(n) for n in shots])
    ax.set_xlabel("in-context examples N")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
