"""``actlab security invert``: TIJO on the dual-key VQA toy or InverTune on the CLIP-like toy (backdoored, or its clean
twin as a control), each writing a report folder (report.md, report.json, PNGs) with CA/ASR and Wilson 95% intervals."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actlab.probe import fmt, write_report

METHODS = ("tijo", "invertune")


@dataclass
class InvertRunConfig:
    """Backdoor inversion (and, for InverTune, removal) on a planted-backdoor toy."""

    method: str = "tijo"
    """tijo (dual-key VQA toy: joint feature + word trigger inversion) or invertune (CLIP-like toy: target
    identification, trigger inversion, activation tuning)"""
    clean: bool = False
    """run on the clean twin of the fixture (a control: nothing should be flagged)"""
    steps: int = 0
    """optimisation steps (TIJO: per target; InverTune: trigger inversion); 0 = the method's default"""
    lam: float = 0.05
    """TIJO: weight of the feature-mask L1 norm"""
    trigger_l1: float = 0.03
    """InverTune: weight of the trigger's L1 norm"""
    trigger_act: float = 0.0
    """InverTune: weight of the activation-guidance term (shift of the hidden activations the trigger induces)"""
    tune_steps: int = 150
    """InverTune: activation-tuning steps"""
    pairs: int = 400
    """TIJO: clean (image, question) pairs the inversion sees"""
    seed: int = 0
    """seed of fixture and optimisation"""
    cache: str = ""
    """folder caching trained fixtures (empty: actlab's cache dir)"""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; use one of {', '.join(METHODS)}")
        if self.steps < 0 or self.tune_steps < 1 or self.pairs < 1:
            raise ValueError(f"need steps >= 0, tune_steps >= 1, pairs >= 1; got {self.steps}, {self.tune_steps}, "
                             f"{self.pairs}")

    def cache_folder(self) -> str:
        from actlab.utils import cache_dir

        return self.cache or str(cache_dir() / "security_fixtures")


def run_invert(cfg: InvertRunConfig, out: str | Path) -> dict[str, Any]:
    """Dispatch on ``cfg.method``."""
    return (_run_tijo if cfg.method == "tijo" else _run_invertune)(cfg, out)


def _run_tijo(cfg: InvertRunConfig, out: str | Path) -> dict[str, Any]:
    from actlab.security.dualkey import DualKeyConfig, dualkey_fixture
    from actlab.security.tijo import TijoConfig, invert_dual, tijo

    fx = dualkey_fixture(DualKeyConfig(poison_fraction=0.0 if cfg.clean else 0.1, seed=cfg.seed),
                         cache=cfg.cache_folder())
    tc = TijoConfig(lam=cfg.lam, seed=cfg.seed, **({"steps": cfg.steps} if cfg.steps else {}))
    x, q = fx.x_train[:cfg.pairs], fx.q_train[:cfg.pairs]
    r = tijo(fx.model, x, q, 10, tc, held_out=(fx.x_test, fx.q_test, fx.a_test))
    vis = invert_dual(fx.model, x, q, r.target, tc, text=False)
    txt = invert_dual(fx.model, x, q, r.target, tc, visual=False)
    rates = fx.rates()
    res = {"config": asdict(cfg), "fixture": {"clean_twin": cfg.clean, "target": fx.cfg.target,
                                              "key_token": fx.cfg.key_token,
                                              **{k: v.to_json() for k, v in rates.items()}},
           "tijo": r.to_json(), "ablations": {"visual_only": vis.to_json(), "text_only": txt.to_json()}}

    def bars(ax: Any) -> None:
        ax.bar(range(10), r.losses, color=["tab:red" if t == r.target else "tab:gray" for t in range(10)])
        ax.set_xlabel("candidate target answer")
        ax.set_ylabel("joint inversion loss")

    planted = "none (clean twin)" if cfg.clean else f"answer {fx.cfg.target}, word {fx.cfg.key_token}"
    lines = [(f"- flagged: **{r.flagged}** (anomaly index {r.anomaly_index:.2f}, threshold {tc.threshold:g}; lowest "
             f"loss {min(r.losses):.3f}, must be < {tc.max_loss:g})"),
             f"- lowest-loss target: answer {r.target}, projected word {r.best.token} (planted: {planted})",
             f"- inverted trigger ASR on held-out pairs: {fmt(r.asr)}",
             (f"- unimodal ablations for that target: visual only loss {vis.loss:.3f}, text only loss {txt.loss:.3f} "
             f"(joint {r.best.loss:.3f})"), "",
             "| fixture (held-out pairs) | rate (95% CI) |", "|---|---|"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in rates.items()]
    write_report(out, "TIJO joint trigger inversion on the dual-key VQA toy", res, lines=lines,
                 figures={"losses.png": bars})
    return res


def _run_invertune(cfg: InvertRunConfig, out: str | Path) -> dict[str, Any]:
    from actlab.security.clip_toy import ClipConfig, clip_backdoor
    from actlab.security.invertune import InverTuneConfig, additive_rate, invertune

    fx = clip_backdoor(ClipConfig(poison_fraction=0.0 if cfg.clean else 0.1, seed=cfg.seed),
                       cache=cfg.cache_folder())
    ic = InverTuneConfig(trigger_l1=cfg.trigger_l1, trigger_act=cfg.trigger_act, tune_steps=cfg.tune_steps, seed=cfg.seed,
                         **({"trigger_steps": cfg.steps} if cfg.steps else {}))
    r = invertune(fx.encoder, fx.text, fx.x_val, ic)
    t = r.estimate.target
    rows = {"original": (fx.ca(), fx.asr(), additive_rate(fx.encoder, fx.text, fx.x_test, fx.y_test, r.delta, t)),
            "after activation tuning": (fx.ca(r.encoder), fx.asr(r.encoder),
                                        additive_rate(r.encoder, fx.text, fx.x_test, fx.y_test, r.delta, t))}
    res = {"config": asdict(cfg), "fixture": {"clean_twin": cfg.clean, "target": fx.cfg.target},
           "invertune": r.to_json(), "trigger_corner_share": float(r.delta[0, -2:, -2:].norm() /
                                                                  r.delta.norm().clamp_min(1e-12)),
           "results": {n: {"ca": ca.to_json(), "asr_planted": asr.to_json(), "asr_inverted": inv.to_json()}
                       for n, (ca, asr, inv) in rows.items()}}

    def hist(ax: Any) -> None:
        ax.bar(range(len(r.estimate.counts)), r.estimate.counts,
               color=["tab:red" if i == t else "tab:gray" for i in range(len(r.estimate.counts))])
        ax.set_xlabel("class the adversarial image lands in")
        ax.set_ylabel("flipped images")

    def trig(ax: Any) -> None:
        v = float(r.delta.abs().max().clamp_min(1e-6))
        im = ax.imshow(r.delta[0].numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_title(f"inverted additive trigger, target {t}")
        ax.figure.colorbar(im, ax=ax)

    planted = "none (clean twin)" if cfg.clean else f"class {fx.cfg.target}, bottom-right 2x2 patch"
    lines = [(f"- target estimate: class {t} ({r.estimate.counts[t]} of {r.estimate.flipped} flipped images), "
             f"anomaly index {r.estimate.anomaly_index:.2f}, flagged **{r.estimate.flagged}** (planted: {planted})"),
             (f"- inverted trigger: L2 norm {float(r.delta.norm()):.2f}, share on the planted corner "
             f"{res['trigger_corner_share']:.2f}, rate on the clean set {r.trigger_rate:.3f}"),
             f"- clustering purity (clean vs stamped activations) {r.purity:.2f}, {len(r.units)} units tuned", "",
             "| encoder | zero-shot CA (95% CI) | ASR planted patch | ASR inverted trigger |", "|---|---|---|---|"]
    lines += [f"| {n} | {fmt(ca)} | {fmt(asr)} | {fmt(inv)} |" for n, (ca, asr, inv) in rows.items()]
    write_report(out, "InverTune on the CLIP-like digits toy", res, lines=lines,
                 figures={"landing.png": hist, "trigger.png": trig})
    return res
