"""Recipe: how induction heads form under clamps (arXiv 2404.07129, training-dynamics.md §1).

A 2-layer attention-only transformer learns ``[noise][A][A][noise]`` sequences; the loss on the second copy drops
abruptly when an induction circuit (previous-token head in layer 0 feeding an induction head in layer 1) forms. The
recipe trains one run per clamp, same seed and data order: ``none`` (baseline), ``identity`` (its own value, must
reproduce the baseline exactly), ``prev_token`` (layer-0 patterns clamped to the exact previous-token pattern, which
should make the phase change earlier) and ``zero`` (layer-0 attention output zeroed, which prevents it).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict

import torch

from actlab.core.interventions import Fn
from actlab.train.configs import InductionConfig
from actlab.train.toy import ATTN_OUT, PATTERN, AttnOnly, head_scores, repeated_pairs, repeated_sequences

log = logging.getLogger(__name__)

CLAMPS = ("none", "identity", "prev_token", "zero")


def clamp_interventions(clamp: str) -> dict:
    """The ``model.intervene`` mapping of one clamp (layer 0 = the first layer); ``a+b`` applies both."""
    from actlab.train.clamps import PrevTokenPattern, ZeroClamp

    out: dict = {}
    for part in clamp.split("+"):
        if part == "none":
            continue
        if part == "identity":
            out[PATTERN.format(i=0)] = Fn(fn=lambda a, c: a)
        elif part == "prev_token":
            out[PATTERN.format(i=0)] = PrevTokenPattern()
        elif part == "zero":
            out[ATTN_OUT.format(i=0)] = ZeroClamp()
        else:
            raise ValueError(f"unknown clamp {part!r} in {clamp!r}; expected one of {CLAMPS} (joined with '+')")
    return out


def make_model(cfg: InductionConfig):
    """A fresh seeded attention-only toy wrapped as an actlab ``Model`` (trainable)."""
    from actlab import Model

    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(cfg.seed)
        mod = AttnOnly(cfg.vocab, cfg.d_model, cfg.n_heads, 2, cfg.context)
    return Model(mod.train(), None, name="attn-only-toy")


def masked_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions in ``mask``."""
    lp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, :-1]
    return -(lp * m).sum() / m.sum().clamp(min=1)


def train_induction(cfg: InductionConfig, clamp: str = "none", grad: str | None = None) -> dict:
    """One run; returns ``{"steps", "loss", "first_loss", "second_loss", "induction", "prev_token", "onset"}``.

    ``onset``: the first evaluated step whose second-copy loss is below ``cfg.onset_fraction`` of the first-copy
    loss (None if never). The clamp is active during training and evaluation (``grad`` = ``cfg.grad``).
    """
    model = make_model(cfg)
    ivs = clamp_interventions(clamp)
    opt = torch.optim.Adam(model.module.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    ge = torch.Generator().manual_seed(cfg.seed + 2)
    ev = repeated_sequences(cfg.eval_batch, cfg.context, cfg.vocab, cfg.min_len, cfg.max_len, ge)
    probe = repeated_pairs(cfg.eval_batch, cfg.max_len, cfg.vocab, ge)
    out = {"clamp": clamp, "steps": [], "loss": [], "first_loss": [], "second_loss": [], "induction": [],
           "prev_token": [], "onset": None}
    grad = grad or ("through" if clamp == "identity" else cfg.grad)
    with model.intervene(ivs, grad=grad):
        for step in range(cfg.steps + 1):
            if step % cfg.eval_every == 0 or step == cfg.steps:
                _evaluate(model, ev, probe, cfg, step, out)
            if step == cfg.steps:
                break
            x = repeated_sequences(cfg.batch, cfg.context, cfg.vocab, cfg.min_len, cfg.max_len, g).ids
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out["loss"].append(loss.item())
    return out


@torch.no_grad()
def _evaluate(model, ev, probe, cfg: InductionConfig, step: int, out: dict) -> None:
    logits = model(ev.ids)
    f, s = masked_loss(logits, ev.ids, ev.first).item(), masked_loss(logits, ev.ids, ev.second).item()
    sc = head_scores(model, probe, cfg.max_len)
    out["steps"].append(step)
    out["first_loss"].append(f)
    out["second_loss"].append(s)
    out["induction"].append(max(sc["induction"][1]))
    out["prev_token"].append(max(sc["prev_token"][0]))
    if out["onset"] is None and s < cfg.onset_fraction * f:
        out["onset"] = step
    log.info("step %d first %.3f second %.3f induction %.2f", step, f, s, out["induction"][-1])


def run_induction(cfg: InductionConfig, clamps: tuple[str, ...] = CLAMPS) -> dict:
    """Every clamp with the same seed and data; the report holds each run's curves and onset plus the checks:
    identity == baseline (exactly), prev_token onset earlier, zero clamp: second-copy loss stays at the first-copy
    level. Writes ``induction.json`` and ``induction.png`` into ``cfg.out`` when it is set."""
    runs = {c: train_induction(cfg, c) for c in clamps}
    rep: dict = {"config": asdict(cfg), "runs": runs, "chance_loss": math.log(cfg.vocab)}
    checks = {}
    if "none" in runs and "identity" in runs:
        checks["identity_reproduces_baseline"] = (runs["identity"]["loss"] == runs["none"]["loss"]
                                                  and runs["identity"]["second_loss"] == runs["none"]["second_loss"])
    if "none" in runs and "prev_token" in runs:
        a, b = runs["prev_token"]["onset"], runs["none"]["onset"]
        checks["prev_token_earlier"] = a is not None and (b is None or a < b)
    if "zero" in runs:
        z = runs["zero"]
        checks["zero_prevents"] = z["onset"] is None
        checks["zero_final_second_over_first"] = z["second_loss"][-1] / z["first_loss"][-1]
    rep["checks"] = checks
    if cfg.out:
        from actlab.train.report import plot_curves, write_json

        write_json(cfg.out, "induction.json", rep)
        plot_curves(cfg.out, "induction.png", {c: (r["steps"], r["second_loss"]) for c, r in runs.items()},
                    ylabel="loss on the repeated copy", title="induction-head formation under clamps",
                    hline=(rep["chance_loss"], "chance"))
    return rep
