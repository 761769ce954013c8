"""End-to-end Latent Guard run behind ``actlab probe latent-guard``: fit the harmful/harmless centroids on a seeded
split of the instruction sets (the bundled ones by default), evaluate on the held-out instructions plain and under
jailbreak-style rewrites, save the guard as an artifact (``out/guard``, usable by ``actlab probe monitor``) and write
a report (markdown + ROC PNG + JSON) with AUROCs, bootstrap 95% intervals and Wilson intervals of the flag rates."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actlab.probe.latent_guard import JAILBREAK_TEMPLATES, evaluate_guard
from actlab.probe.report import fmt, roc_curve, write_report

if TYPE_CHECKING:
    from actlab.models import Model

GUARD_DIR = "guard"


@dataclass
class GuardConfig:
    """How a Latent Guard is fitted and evaluated."""

    n_train: int = 0
    """instructions per class for the centroids (0: two thirds of the smaller set); the rest are held out"""
    templates: str = ""
    """jailbreak rewrites of the held-out prompts, comma separated (empty: all of roleplay, fiction, override,
    prefix, authority)"""
    tau: float = 0.0
    """flag threshold on the score (the report gives flag rates at it)"""
    seed: int = 0
    """seed of the train/held-out split and of the bootstrap"""
    n_boot: int = 1000
    """bootstrap resamples for the AUROC intervals"""
    batch_size: int = 16
    """prompts per forward pass"""

    def __post_init__(self) -> None:
        bad = [t for t in self.template_list() if t not in JAILBREAK_TEMPLATES]
        if bad:
            raise ValueError(f"templates: unknown jailbreak template(s) {bad}; known: {sorted(JAILBREAK_TEMPLATES)}")
        if self.n_train < 0 or self.n_boot < 1 or self.batch_size < 1:
            raise ValueError(f"need n_train >= 0, n_boot >= 1, batch_size >= 1; got {self.n_train}, {self.n_boot}, "
                             f"{self.batch_size}")

    def template_list(self) -> list[str]:
        return [t.strip() for t in self.templates.split(",") if t.strip()] or list(JAILBREAK_TEMPLATES)


def default_guard_site(model: Model) -> str:
    """The middle block's output (harmfulness is linearly readable in the second half of SmolLM2's layers)."""
    return f"blocks.{model.n_layers // 2}.resid_post"


def run_latent_guard(model: Model, sites: Sequence[str], out: str | Path, cfg: GuardConfig | None = None, *,
                     harmful: Sequence[str] | None = None, harmless: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit and evaluate a Latent Guard on ``sites``; writes ``out/guard`` (artifact kind ``latent_guard``),
    ``report.md``, ``report.json`` and ``roc.png``. ``harmful``/``harmless`` default to actlab.steer's bundled sets."""
    from actlab.steer import load_instructions

    cfg = cfg or GuardConfig()
    sites = model.check_sites(list(sites))
    H = list(harmful) if harmful is not None else load_instructions("harmful")
    S = list(harmless) if harmless is not None else load_instructions("harmless")
    guard, ev = evaluate_guard(model, H, S, sites, n_train=cfg.n_train or None, templates=cfg.template_list(),
                               seed=cfg.seed, n_boot=cfg.n_boot, tau=cfg.tau, batch_size=cfg.batch_size)
    out = Path(out)
    guard.meta["config"] = asdict(cfg)
    guard.save(out / GUARD_DIR)
    res = {"model": model.name, "sites": sites, "config": asdict(cfg), "eval": ev.to_json(),
           "guard": str(out / GUARD_DIR)}
    per = ", ".join(f"{t} {v:.3f}" for t, v in ev.per_template.items())
    lines = [
        f"- sites: {', '.join(sites)} (last instruction token t_inst of the chat-templated prompt)",
        (f"- centroids from {ev.n_train // 2} harmful + {ev.n_train // 2} harmless instructions; "
        f"{ev.n_test} held out"),
        f"- held-out AUROC (plain): **{fmt(ev.auroc_plain)}** (bootstrap 95% interval)",
        f"- held-out AUROC under jailbreak-style rewrites (pooled): **{fmt(ev.auroc_rewrites)}**; per template: {per}",
        (f"- flagged at tau = {cfg.tau:g}: harmful rewrites {fmt(ev.flag_harmful_rewrites)}, harmless rewrites "
        f"{fmt(ev.flag_harmless_rewrites)} (Wilson 95% intervals; calibrate tau on rewritten harmless prompts)"),
        f"- guard artifact: `{GUARD_DIR}/` (monitor generation with `actlab probe monitor {out / GUARD_DIR} ...`)",
    ]
    write_report(out, f"Latent Guard on {model.name}", res, lines=lines,
                 figures={"roc.png": lambda ax: _draw_rocs(ax, ev.scores)})
    return res


def _draw_rocs(ax: Any, curves: dict) -> None:
    for name, (s, y) in curves.items():
        fpr, tpr = roc_curve(s, y)
        ax.plot(fpr, tpr, label=name, lw=2 if name == "plain" else 1)
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=7, loc="lower right")
