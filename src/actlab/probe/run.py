"""End-to-end probe runs behind ``actlab probe train|eval|monitor``: collect activations, cross-validate, fit,
save the probe artifact and write a report (markdown + ROC PNG + JSON)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actlab.probe.acts import POSITIONS, probe_acts
from actlab.probe.evaluate import cross_validate, evaluate
from actlab.probe.linear import METHODS, LinearProbe, fit_probe
from actlab.probe.monitor import Monitorable, MonitorResult, monitor_generate, monitor_sites
from actlab.probe.report import fmt, write_report

if TYPE_CHECKING:
    from actlab.models import Model

PROBE_DIR = "probe"


@dataclass
class ProbeConfig:
    """How a probe is trained and evaluated."""

    method: str = "logistic"
    """logistic (L2, sklearn's objective), mean_diff or lda"""
    position: str = "last"
    """token whose activation is probed: last, mean (over real tokens) or t_inst (last instruction token; chat)"""
    chat: bool = False
    """wrap texts in the model's chat template"""
    C: float = 1.0
    """inverse L2 strength of the logistic probe"""
    shrinkage: float = 1e-3
    """covariance shrinkage of the LDA probe (0..1)"""
    folds: int = 5
    """cross-validation folds"""
    n_boot: int = 1000
    """bootstrap resamples for the 95% interval"""
    seed: int = 0
    """seed of the folds, the bootstrap and the controls"""
    batch_size: int = 16
    """texts per forward pass"""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; use one of {', '.join(METHODS)}")
        if self.position not in POSITIONS:
            raise ValueError(f"position={self.position!r}; use one of {', '.join(POSITIONS)}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2; got {self.folds}")


def _xy(model: Model, positive: Sequence[str], negative: Sequence[str], site: str,
        cfg: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    if not positive or not negative:
        raise ValueError(f"a probe needs both classes: got {len(positive)} positive and {len(negative)} negative texts")
    acts = probe_acts(model, list(positive) + list(negative), site, position=cfg.position, chat=cfg.chat,
                      batch_size=cfg.batch_size)[site]
    return acts, torch.tensor([1] * len(positive) + [0] * len(negative))


def train(model: Model, positive: Sequence[str], negative: Sequence[str], site: str, out: str | Path,
          cfg: ProbeConfig | None = None) -> tuple[LinearProbe, dict[str, Any]]:
    """Cross-validate on positive (1) vs negative (0) texts at ``site``, fit on all, save ``out/probe`` + report."""
    cfg = cfg or ProbeConfig()
    model.check_sites([site])
    x, y = _xy(model, positive, negative, site, cfg)
    fit_kw = {"C": cfg.C} if cfg.method == "logistic" else {"shrinkage": cfg.shrinkage} if cfg.method == "lda" else {}
    cv = cross_validate(x, y, cfg.method, folds=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot, **fit_kw)
    probe = fit_probe(x, y, cfg.method, site=site, position=cfg.position, model=model.name,
                      meta={"chat": cfg.chat, "n": len(y), "cv_auroc": cv.auroc.to_json()}, **fit_kw)
    out = Path(out)
    probe.save(out / PROBE_DIR)
    res = {"site": site, "model": model.name, "config": asdict(cfg), "cv": cv.to_json(), "probe": str(out / PROBE_DIR)}
    write_report(out, f"Probe {cfg.method} at {site} ({model.name})", res, lines=[
        f"- {cfg.folds}-fold cross-validated AUROC: **{fmt(cv.auroc)}** (bootstrap 95% interval), n = {len(y)}",
        f"- balanced accuracy at threshold 0: {cv.balanced_accuracy:.3f}",
        (f"- controls: shuffled labels AUROC {cv.controls['shuffled_labels_auroc']:.3f}, random direction AUROC "
         f"{cv.controls['random_direction_auroc']:.3f}"),
        f"- probe artifact: `{PROBE_DIR}/` (position {cfg.position}, chat {cfg.chat})"],
        figures={"roc.png": lambda ax: _roc(ax, cv.scores, y, "cross-validated")})
    return probe, res


def _roc(ax: Any, s: torch.Tensor, y: torch.Tensor, name: str) -> None:
    from actlab.probe.report import roc_curve

    fpr, tpr = roc_curve(s, y)
    ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(loc="lower right")


def eval_probe(model: Model, probe: LinearProbe, positive: Sequence[str], negative: Sequence[str], out: str | Path,
               *, n_boot: int = 1000, batch_size: int = 16) -> dict[str, Any]:
    """AUROC (bootstrap interval) of a saved probe on held-out texts, with a report in ``out``."""
    cfg = ProbeConfig(method=probe.method, position=probe.position, chat=bool(probe.meta.get("chat", False)),
                      batch_size=batch_size)
    if model.d_model is not None and model.d_model != probe.d_model:
        raise ValueError(f"probe has d_model={probe.d_model} ({probe.model}, {probe.site}) but {model.name} has "
                         f"d_model={model.d_model}")
    x, y = _xy(model, positive, negative, probe.site, cfg)
    ev = evaluate(probe, x, y, n_boot=n_boot)
    res = {"site": probe.site, "model": model.name, "probe_model": probe.model, "eval": ev.to_json()}
    write_report(out, f"Probe evaluation at {probe.site} ({model.name})", res, lines=[
        f"- held-out AUROC: **{fmt(ev.auroc)}** (bootstrap 95% interval), n = {ev.n}",
        f"- balanced accuracy at threshold {probe.threshold:g}: {ev.balanced_accuracy:.3f}"],
        figures={"roc.png": lambda ax: _roc(ax, ev.scores, ev.labels, "held-out")})
    return res


def monitor(model: Model, probe: Monitorable, prompts: Sequence[str], out: str | Path | None = None, *,
            max_new_tokens: int = 32, stop_above: float | None = None, chat: bool = False) -> MonitorResult:
    """Generate with the probe (or Latent Guard) as a monitor; with ``out``, write the score streams (JSON, PNG,
    markdown)."""
    res = monitor_generate(model, list(prompts), probe, max_new_tokens=max_new_tokens, stop_above=stop_above,
                           chat=chat)
    if out is not None:
        def draw(ax: Any) -> None:
            for i in range(res.scores.shape[0]):
                ax.plot(res.scores[i].tolist(), marker=".", label=f"prompt {i}")
            if stop_above is not None:
                ax.axhline(stop_above, ls="--", color="r", label="stop")
            ax.set_xlabel("generation step")
            ax.set_ylabel("probe score")
            ax.legend(fontsize=7)

        write_report(out, f"Probe monitor at {', '.join(monitor_sites(probe))} ({model.name})",
                     {"prompts": list(prompts), "stop_above": stop_above, **res.to_json()},
                     lines=[f"- prompt {i}: stopped at step {s}" if s >= 0 else f"- prompt {i}: never crossed"
                            for i, s in enumerate(res.stopped_at)], figures={"scores.png": draw})
    return res

