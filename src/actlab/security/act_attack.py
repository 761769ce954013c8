"""Adversarial attacks on activations and their scaling law (Fort, "Scaling Laws for Adversarial Attacks on Language
Model Activations"): the attacker sets the residual stream of the first ``a`` positions to free vectors and optimises
them (Adam, fixed budget) so that greedy decoding reproduces a random target sequence of length t (teacher forcing).
``t_max(a)`` is the longest target that succeeds (doubling, then bisection); the law is ``t_max = kappa * a`` and the
attack resistance ``chi = a * d * p / (t_max * log2 V)`` bits of input control per bit of output control."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from actlab.models import Model


def chi(a: int, d: int, t_max: int, vocab: int, bits: int = 16) -> float:
    """Attack resistance ``a * d * bits / (t_max * log2 vocab)``."""
    if t_max <= 0 or vocab < 2:
        raise ValueError(f"chi needs t_max > 0 and vocab >= 2; got t_max={t_max}, vocab={vocab}")
    return a * d * bits / (t_max * math.log2(vocab))


@dataclass
class AttackConfig:
    """Fixed optimisation budget (results depend on it: report it)."""

    site: str = "blocks.0.resid_pre"
    """where the first a positions are overwritten (the residual stream right after the embedding)"""
    steps: int = 200
    """Adam steps per attack"""
    lr: float = 0.1
    """Adam learning rate"""
    seed: int = 0
    """seed of the initial vectors and of the target sequences"""
    prefix: int = 0
    """clean tokens (the BOS, else token 0) kept before the attacked positions: real LMs treat position 0 as an
    attention sink whose state barely depends on its input, so attacking it there measures the sink, not the model"""


def attack(model: Model, a: int, targets: torch.Tensor, cfg: AttackConfig | None = None, *,
           return_vectors: bool = False) -> tuple:
    """Optimise ``a`` free activation vectors so the model greedily predicts every token of ``targets`` after them;
    returns (success, final CE), plus the vectors [a, d] with ``return_vectors``. ``targets`` empty: trivially
    successful."""
    cfg = cfg or AttackConfig()
    if a < 1:
        raise ValueError(f"the attack needs a >= 1 attacked positions; got {a}")
    t = len(targets)
    if t == 0:
        return (True, 0.0, torch.zeros(a, model.d_model)) if return_vectors else (True, 0.0)
    model.check_sites([cfg.site])
    d = model.d_model
    dev = model.device
    if cfg.prefix < 0:
        raise ValueError(f"prefix must be >= 0 clean tokens; got {cfg.prefix}")
    p = cfg.prefix
    tok = getattr(model, "tokenizer", None)
    bos = tok.bos_token_id if tok is not None and tok.bos_token_id is not None else 0
    filler = torch.cat([torch.full((p,), bos, dtype=torch.long), torch.zeros(a, dtype=torch.long)])
    ids = torch.cat([filler, targets[:-1].cpu()])[None].to(dev)
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    g = torch.Generator().manual_seed(cfg.seed + 7919 * a + t)
    A = torch.randn(a, d, generator=g).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([A], lr=cfg.lr)
    tg = targets.to(dev)

    def handler(act: torch.Tensor, ctx: Any) -> torch.Tensor:
        return torch.cat([act[:, :p], A[None].to(act.dtype).expand(act.shape[0], -1, -1), act[:, p + a:]], 1)

    loss = torch.tensor(float("inf"))
    ok = False
    with torch.enable_grad(), model.hooks({cfg.site: handler}):
        for _ in range(cfg.steps):
            logits = model(enc).logits[0, p + a - 1:p + a - 1 + t]
            loss = torch.nn.functional.cross_entropy(logits.float(), tg)
            ok = bool((logits.argmax(-1) == tg).all())
            if ok:
                break
            opt.zero_grad()
            loss.backward(inputs=[A])   # only the attacked vectors: no weight gradients computed or left behind
            opt.step()
    return (ok, float(loss.detach()), A.detach()) if return_vectors else (ok, float(loss.detach()))


def t_max(model: Model, a: int, cfg: AttackConfig | None = None, *, limit: int = 256) -> int:
    """Longest target length that succeeds (doubling then bisection) on one seeded random sequence (its prefixes)."""
    cfg = cfg or AttackConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    vocab = model.adapter.W_U.shape[-1]
    seq = torch.randint(3, int(vocab), (limit,), generator=g)
    lo, hi = 0, 1
    while hi <= limit and attack(model, a, seq[:hi], cfg)[0]:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attack(model, a, seq[:mid], cfg)[0]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class ScalingFit:
    """Least-squares line ``t_max = kappa * a + intercept`` with the centred R²."""

    kappa: float
    intercept: float
    r2: float
    a: list[int]
    t_max: list[int]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_scaling(a: Sequence[int], t: Sequence[int]) -> ScalingFit:
    """Fit the line; centred R² (1 - SS_res / SS_tot around the mean), since uncentred R² passes almost anything."""
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    if len(x) < 2 or float(x.std()) == 0:
        raise ValueError(f"a scaling fit needs >= 2 distinct a values; got {list(a)}")
    xm, ym = x.mean(), y.mean()
    k = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    b = float(ym - k * xm)
    ss_tot = float(((y - ym) ** 2).sum())
    r2 = 1 - float(((y - (k * x + b)) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0
    return ScalingFit(k, b, r2, list(a), list(t))


def random_decoder(vocab: int = 100, d_model: int = 64, layers: int = 2, init: float = 0.3, seed: int = 0) -> Model:
    """The spec's toy target: a random GPT-2 (eager attention) as an actlab Model. ``init`` is the weights' std; at
    GPT-2's default 0.02 the attacked positions barely reach later ones and every t_max is 1."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from actlab.models import wrap

    conf = GPT2Config(vocab_size=vocab, n_positions=256, n_embd=d_model, n_layer=layers, n_head=4,
                      initializer_range=init, bos_token_id=0, eos_token_id=0)
    conf._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return wrap(GPT2LMHeadModel(conf), None, name=f"random-gpt2-v{vocab}-d{d_model}")
