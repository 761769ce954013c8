"""End-to-end security runs behind ``actlab security unlearn|scan`` on the BadNets digits fixture, each writing a
report folder (report.md, report.json, PNGs) with CA/ASR and their Wilson 95% intervals."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from actlab.probe import fmt, write_report
from actlab.security.fixtures import BackdoorConfig, BackdoorFixture, digits_backdoor
from actlab.security.scan import ScanConfig, mask_overlap, scan
from actlab.security.ssd import select_ssd, ssd


@dataclass
class FixtureArgs:
    """Which planted-backdoor fixture to build (or load from the cache)."""

    poison_fraction: float = 0.1
    """share of the training set poisoned"""
    patch: int = 2
    """side of the corner trigger patch, pixels"""
    target: int = 0
    """backdoor target class"""
    seed: int = 0
    """fixture seed"""
    cache: str = ""
    """folder caching trained fixtures (empty: actlab's cache dir)"""

    def build(self) -> BackdoorFixture:
        from actlab.utils import cache_dir

        cache = self.cache or str(cache_dir() / "security_fixtures")
        return digits_backdoor(BackdoorConfig(target=self.target, poison_fraction=self.poison_fraction,
                                              patch=self.patch, seed=self.seed), cache=cache)


@dataclass
class UnlearnConfig(FixtureArgs):
    """Corrective unlearning with SSD: a share of the poisoned rows is identified and forgotten."""

    identified: float = 0.25
    """share of the poisoned training rows the developer identified (the forget set)"""
    alpha: float = 0.0
    """SSD selection weighting; 0 = choose alpha/lambda on held-out retain data under --ca-budget (default path)"""
    lam: float = 1.0
    """SSD dampening constant (used with a fixed --alpha)"""
    ca_budget: float = 0.02
    """largest accuracy drop on held-out retain data the selection may accept"""

    def __post_init__(self) -> None:
        if not 0.0 < self.identified <= 1.0:
            raise ValueError(f"identified must be in (0, 1]; got {self.identified}")
        if self.alpha < 0 or self.lam <= 0 or self.ca_budget < 0:
            raise ValueError(f"need alpha >= 0, lam > 0, ca_budget >= 0; got {self.alpha}, {self.lam}, "
                             f"{self.ca_budget}")


def _finetune_epoch_seconds(fx: BackdoorFixture) -> float:
    """Wall time of one epoch of fine-tuning the fixture on its retain data (the cost SSD is compared with)."""
    import copy

    from actlab.security.fixtures import train_classifier

    m = copy.deepcopy(fx.model)
    keep = ~fx.poisoned
    t0 = time.perf_counter()
    train_classifier(m, fx.x_train[keep], fx.y_train[keep], epochs=1, lr=1e-3, batch_size=fx.cfg.batch_size, seed=0)
    return time.perf_counter() - t0


def unlearn(cfg: UnlearnConfig, out: str | Path) -> dict[str, Any]:
    """Forget ``identified`` of the poisoned rows with SSD; report CA/ASR before, with the paper's defaults, and
    after (selected or fixed alpha/lambda), plus SSD wall time vs one fine-tuning epoch."""
    fx = cfg.build()
    idx = fx.poisoned.nonzero().flatten()
    k = round(cfg.identified * len(idx))
    if k < 1:
        raise ValueError(f"identified={cfg.identified} of {len(idx)} poisoned rows leaves an empty forget set")
    g = torch.Generator().manual_seed(cfg.seed)
    f = idx[torch.randperm(len(idx), generator=g)[:k]]
    xf, yf = fx.x_train[f], fx.y_train[f]
    rows = {"original": (fx.ca(), fx.asr())}
    default, _ = ssd(fx.model, xf, yf, fx.x_train, fx.y_train)
    rows["ssd defaults (alpha 10, lambda 1)"] = (fx.ca(default), fx.asr(default))
    t0 = time.perf_counter()
    if cfg.alpha > 0:
        model, stats = ssd(fx.model, xf, yf, fx.x_train, fx.y_train, alpha=cfg.alpha, lam=cfg.lam)
        chosen: dict[str, Any] = {"alpha": cfg.alpha, "lambda": cfg.lam, "selected": stats.to_json()}
        name = f"ssd alpha {cfg.alpha:g}, lambda {cfg.lam:g}"
    else:
        model, sel = select_ssd(fx.model, xf, yf, fx.x_train, fx.y_train, fx.x_val, fx.y_val,
                                ca_budget=cfg.ca_budget)
        chosen = sel.to_json()
        name = f"ssd selected (alpha {sel.alpha:g}, lambda {sel.lam:g})"
    ssd_s = time.perf_counter() - t0
    rows[name] = (fx.ca(model), fx.asr(model))
    ft_s = _finetune_epoch_seconds(fx)
    res = {"config": asdict(cfg), "forget_set": k, "poisoned": len(idx),
           "results": {n: {"ca": ca.to_json(), "asr": asr.to_json()} for n, (ca, asr) in rows.items()},
           "chosen": chosen, "ssd_seconds": ssd_s, "finetune_epoch_seconds": ft_s}

    def draw(ax: Any) -> None:
        names = list(rows)
        xs = torch.arange(len(names)).float()
        for j, (metric, color) in enumerate((("CA", "tab:blue"), ("ASR", "tab:red"))):
            v = [rows[n][j] for n in names]
            ax.bar(xs + (j - 0.5) * 0.38, [i.value for i in v], 0.38, color=color, label=metric,
                   yerr=[[i.value - i.lo for i in v], [i.hi - i.value for i in v]], capsize=3)
        ax.set_xticks(xs.tolist(), [n.replace(" (", "\n(") for n in names], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.legend()

    lines = [f"Forget set: {k} of {len(idx)} poisoned training rows identified ({cfg.identified:.0%}).", "",
             "| model | CA (95% CI) | ASR (95% CI) |", "|---|---|---|"]
    lines += [f"| {n} | {fmt(ca)} | {fmt(asr)} |" for n, (ca, asr) in rows.items()]
    lines += ["", f"SSD (selection included) {ssd_s:.2f} s vs one fine-tuning epoch {ft_s:.2f} s."]
    write_report(out, "SSD corrective unlearning on the BadNets digits fixture", res, lines=lines,
                 figures={"ca_asr.png": draw})
    return res


@dataclass
class ScanRunConfig(FixtureArgs, ScanConfig):
    """Trigger scan of the BadNets digits fixture."""


def run_scan(cfg: ScanRunConfig, out: str | Path) -> dict[str, Any]:
    """Scan every class for a small trigger; report the anomaly index, the flagged class, its inverted mask and the
    inverted trigger's ASR (Wilson interval) and overlap with the planted patch."""
    fx = cfg.build()
    sc = ScanConfig(**{k: getattr(cfg, k) for k in ScanConfig.__dataclass_fields__})
    r = scan(fx.model, fx.x_val, 10, sc, y_clean=fx.y_val)
    overlap = mask_overlap(r.trigger, fx.trigger)
    res = {"config": asdict(cfg), "scan": r.to_json(), "planted_target": fx.cfg.target,
           "overlap_with_planted_patch": overlap, "fixture": {"ca": fx.ca().to_json(), "asr": fx.asr().to_json()}}

    def bars(ax: Any) -> None:
        ax.bar(range(len(r.l1)), r.l1, color=["tab:red" if i == r.target else "tab:gray" for i in range(len(r.l1))])
        ax.set_xlabel("candidate target class")
        ax.set_ylabel("inverted mask L1")

    def mask(ax: Any) -> None:
        im = ax.imshow(r.trigger.mask[0].numpy(), cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"inverted mask, class {r.target}")
        ax.figure.colorbar(im, ax=ax)

    write_report(out, "Trigger scan of the BadNets digits fixture", res, lines=[
        f"- flagged: **{r.flagged}** (anomaly index {r.anomaly_index:.2f}, threshold {cfg.threshold:g})",
        f"- most suspicious class: {r.target} (planted: {fx.cfg.target})",
        f"- inverted trigger ASR on held-out images: {fmt(r.asr)}",
        f"- overlap of the inverted mask's top pixels with the planted patch: {overlap:.2f}",
        f"- fixture: CA {fmt(fx.ca())}, ASR {fmt(fx.asr())}"],
        figures={"mask_l1.png": bars, "mask.png": mask})
    return res


@dataclass
class AttackRunConfig:
    """Activation-attack scaling law on the random toy decoder (or --model)."""

    positions: str = "1,2,4"
    """attacked positions a, comma separated"""
    steps: int = 100
    """Adam steps per attack (the budget: results depend on it)"""
    lr: float = 0.1
    """Adam learning rate"""
    limit: int = 64
    """longest target tried"""
    prefix: int = 0
    """clean tokens (BOS) before the attacked positions; use 1 on real LMs (position 0 is an attention sink)"""
    bits: int = 16
    """bits per activation value in chi"""
    seed: int = 0
    """seed of targets and initial vectors"""


def run_attack(cfg: AttackRunConfig, out: str | Path, model: Any = None) -> dict[str, Any]:
    """t_max for each a, the linear fit (centred R²) and chi; report with a t_max-vs-a plot."""
    import math

    from actlab.security.act_attack import AttackConfig, chi, fit_scaling, random_decoder, t_max

    a_list = [int(x) for x in cfg.positions.split(",") if x.strip()]
    if not a_list or min(a_list) < 1:
        raise ValueError(f"--positions must list attacked positions >= 1; got {cfg.positions!r}")
    m = model if model is not None else random_decoder(seed=cfg.seed)
    ac = AttackConfig(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, prefix=cfg.prefix)
    ts = [t_max(m, a, ac, limit=cfg.limit) for a in a_list]
    vocab = int(m.adapter.W_U.shape[-1])
    fit = fit_scaling(a_list, ts) if len(set(a_list)) > 1 else None
    chis = [chi(a, m.d_model, t, vocab, cfg.bits) if t > 0 else math.inf for a, t in zip(a_list, ts)]
    res = {"config": asdict(cfg), "model": m.name, "d_model": m.d_model, "vocab": vocab, "a": a_list, "t_max": ts,
           "chi": chis, "fit": fit.to_json() if fit else None}

    def draw(ax: Any) -> None:
        ax.plot(a_list, ts, "o", label="t_max")
        if fit:
            xs = [0, max(a_list)]
            ax.plot(xs, [fit.kappa * x + fit.intercept for x in xs], "--",
                    label=f"fit kappa={fit.kappa:.2f}, R²={fit.r2:.3f}")
        ax.set_xlabel("attacked positions a")
        ax.set_ylabel("longest controlled target t_max")
        ax.legend()

    lines = [f"Model {m.name} (d = {m.d_model}, V = {vocab}); budget {cfg.steps} Adam steps at lr {cfg.lr}.", "",
             "| a | t_max | chi (bits in per bit out) |", "|---|---|---|"]
    lines += [f"| {a} | {t} | {c:.1f} |" for a, t, c in zip(a_list, ts, chis)]
    if fit:
        lines += ["", f"t_max = {fit.kappa:.2f} a + {fit.intercept:.2f} (centred R² {fit.r2:.3f})"]
    write_report(out, "Activation attack scaling law", res, lines=lines, figures={"t_max.png": draw})
    return res
