"""InverTune (arXiv 2506.12411) for a CLIP-like image encoder: target identification by adversarial simulation,
trigger inversion by gradient optimisation, clustering-guided activation tuning; needs only a little unlabelled clean
data (labels for the attack are the model's own zero-shot predictions).

1. Untargeted L2 PGD on each clean image's zero-shot prediction; count the classes the flipped images land in. A
   backdoor target attracts a disproportionate share: the estimate is the class with the largest count, scored by
   the anomaly index of the counts, ``(max - median) / (1.4826 MAD)``.
2. A universal additive trigger ``delta`` (L2 norm <= ``trigger_norm``) is optimised so that the embeddings of
   stamped clean images align with the target caption, guided by the activations it induces: minimise
   ``1 - cos(E(clip(x + delta)), T_t) - trigger_act * D(h(x + delta), h(x)) + trigger_l1 |delta|_1`` with D
   ``activation_divergence`` of the encoder's hidden activations.
3. 2-means clustering of the encoder's hidden activations of clean and stamped images; the units whose centroids
   differ most are the backdoor-related ones. A copy of the encoder is fine-tuned on the clean set so that stamped
   images' activations on those units and their embeddings move back to the clean image's (frozen original), while
   clean embeddings stay put: ``MSE(h'(x+d)[U], h(x)[U]) + MSE(E'(x+d), E(x)) + w_clean MSE(E'(x), E(x))``.
   Steps 2-3 repeat (our addition) while a trigger re-inverted on the tuned encoder still works (rate >= stop_rate).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actlab.probe import Interval, wilson
from actlab.security.scan import anomaly_index


@dataclass
class InverTuneConfig:
    """Attack budget, trigger bound and tuning weights (the paper leaves them to the user; values calibrated on the
    digits CLIP toy)."""

    eps: float = 0.75
    """L2 radius of the untargeted PGD (images in [0, 1], 8x8)"""
    pgd_steps: int = 10
    """PGD steps (step size eps / 4)"""
    logit_scale: float = 30.0
    """inverse temperature of the zero-shot logits the PGD attacks"""
    threshold: float = 2.0
    """anomaly index of the landing counts above which the largest class is called a backdoor target"""
    trigger_norm: float = 2.0
    """L2 bound of the universal additive trigger (the full 2x2 white patch on a dark corner has norm 2)"""
    trigger_steps: int = 200
    """Adam steps of the trigger inversion"""
    trigger_lr: float = 0.05
    """Adam learning rate of the trigger"""
    trigger_l1: float = 0.03
    """weight of the trigger's L1 norm (sum over pixels): favours small, local triggers over dense universal
    adversarial perturbations (with 0, a norm-2 trigger reached 0.99 on the backdoored toy and 0.7 on its clean twin
    without touching the patch, and tuning against it left the real backdoor at ASR 0.59)"""
    trigger_act: float = 0.0
    """weight of the activation-guidance term: the objective subtracts ``trigger_act * activation_divergence(h(x +
    delta), h(x))`` (the encoder's ``hidden`` layer), rewarding triggers that shift the hidden activations of every
    stamped image the same way (see ``activation_divergence``)"""
    units: float = 0.25
    """share of hidden units the clustering marks as backdoor-related"""
    tune_steps: int = 150
    """Adam steps of the activation tuning"""
    tune_lr: float = 1e-3
    """Adam learning rate of the tuning"""
    w_clean: float = 1.0
    """weight of keeping clean embeddings where they were"""
    rounds: int = 3
    """most invert-then-tune rounds: after a round the trigger is inverted again on the tuned encoder, and another
    round runs only while that trigger still sends >= stop_rate of the clean set to the target (our addition, not
    the paper's: one round left the planted ASR at 0.27 on one of three fixture seeds, a second round took it to 0)"""
    stop_rate: float = 0.5
    """a re-inverted trigger below this rate means no backdoor is left to remove: stop (tuning against a dense
    adversarial perturbation instead raised the planted ASR from 0.06 to 0.17 on another seed)"""
    batch_size: int = 64
    """images per step"""
    seed: int = 0
    """seed of initialisation and batches"""


@dataclass
class TargetEstimate:
    """Landing counts of flipped adversarial images per class, the estimated target and its anomaly index."""

    counts: list[int]
    flipped: int
    n: int
    target: int
    anomaly_index: float
    flagged: bool

    @property
    def shares(self) -> list[float]:
        return [c / max(1, self.flipped) for c in self.counts]

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "shares": self.shares, "flipped": self.flipped, "n": self.n,
                "target": self.target, "anomaly_index": self.anomaly_index, "flagged": self.flagged}


@dataclass
class InverTuneResult:
    """The three steps' outputs: estimate, inverted trigger (and its success rate on the clean set on the original
    encoder), selected units with the clustering's clean/stamped purity, and the tuned encoder."""

    estimate: TargetEstimate
    delta: torch.Tensor
    trigger_rate: float
    units: list[int]
    purity: float
    encoder: nn.Module
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"estimate": self.estimate.to_json(), "trigger_norm": float(self.delta.norm()),
                "trigger_rate_on_clean_set": self.trigger_rate, "units": self.units, "cluster_purity": self.purity,
                **self.extra}


def _check(x: torch.Tensor, text: torch.Tensor, encoder: nn.Module | None = None) -> None:
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"clean images must be a non-empty [N, C, H, W] batch; got {list(x.shape)}")
    if text.dim() != 2 or len(text) < 3:
        raise ValueError(f"text must be [n_classes >= 3, d] caption embeddings; got {list(text.shape)}")
    if encoder is not None:
        with torch.no_grad():
            d = encoder(x[:1]).shape[-1]
        if d != text.shape[1]:
            raise ValueError(f"caption embeddings have width {text.shape[1]} but the image encoder embeds into {d}: "
                             f"embed the captions with the text model the encoder was trained against")


def _frozen(encoder: nn.Module) -> nn.Module:
    enc = copy.deepcopy(encoder).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


def _l2_project(d: torch.Tensor, radius: float) -> torch.Tensor:
    n = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d * (radius / n).clamp(max=1.0).view(-1, *[1] * (d.dim() - 1))


def identify_target(encoder: nn.Module, text: torch.Tensor, x: torch.Tensor,
                    cfg: InverTuneConfig | None = None) -> TargetEstimate:
    """Step 1: untargeted L2 PGD against each image's zero-shot prediction; histogram of landing classes."""
    cfg = cfg or InverTuneConfig()
    _check(x, text, encoder)
    enc = _frozen(encoder)
    with torch.no_grad():
        y = (enc(x) @ text.T).argmax(-1)
    d = torch.zeros_like(x, requires_grad=True)
    for _ in range(cfg.pgd_steps):
        loss = nn.functional.cross_entropy(cfg.logit_scale * enc((x + d).clamp(0, 1)) @ text.T, y)
        grad, = torch.autograd.grad(loss, d)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        d = _l2_project(d.detach() + cfg.eps / 4 * grad, cfg.eps).requires_grad_(True)
    with torch.no_grad():
        land = (enc((x + d).clamp(0, 1)) @ text.T).argmax(-1)
    flip = land != y
    counts = torch.bincount(land[flip], minlength=len(text))
    ai = anomaly_index((-counts).tolist())
    t = int(counts.argmax())
    return TargetEstimate(counts.tolist(), int(flip.sum()), len(x), t, ai, ai > cfg.threshold)


def activation_divergence(h_stamped: torch.Tensor, h_clean: torch.Tensor) -> torch.Tensor:
    """Guidance term of the trigger inversion: the squared shift of the batch-mean activation, relative to the clean
    mean's size, ``||mean(h_s) - mean(h_c)||^2 / ||mean(h_c)||^2`` (the reference code's per-layer "impact" of a
    trigger, squared so it is smooth; zero when stamped activations equal the clean ones). A backdoor trigger moves
    every stamped image's activations the same way (the paper's backdoor activation pattern); the inversion maximises
    it."""
    if h_stamped.shape != h_clean.shape or h_clean.dim() < 2:
        raise ValueError(f"stamped and clean activations must be equal-shape [N, ...] batches; got "
                         f"{list(h_stamped.shape)} and {list(h_clean.shape)}")
    mc = h_clean.flatten(1).mean(0)
    return (h_stamped.flatten(1).mean(0) - mc).pow(2).sum() / mc.pow(2).sum().clamp_min(1e-12)


def invert_trigger(encoder: nn.Module, text: torch.Tensor, x: torch.Tensor, target: int,
                   cfg: InverTuneConfig | None = None) -> tuple[torch.Tensor, float]:
    """Step 2: a universal additive trigger (L2 <= trigger_norm) aligning stamped embeddings with the target
    caption; returns (delta [C, H, W], share of ``x`` sent to the target)."""
    cfg = cfg or InverTuneConfig()
    _check(x, text, encoder)
    if not 0 <= target < len(text):
        raise ValueError(f"target {target} is not one of the {len(text)} captions")
    enc = _frozen(encoder)
    g = torch.Generator().manual_seed(cfg.seed)
    guided = cfg.trigger_act != 0
    if guided and not (hasattr(enc, "hidden") and hasattr(enc, "embed_hidden")):
        raise ValueError(f"trigger_act={cfg.trigger_act} needs an encoder with hidden(x) and embed_hidden(h) "
                         f"(the activations the guidance term reads); {type(encoder).__name__} has not")
    delta = (0.01 * torch.randn(x.shape[1:], generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=cfg.trigger_lr)
    for _ in range(cfg.trigger_steps):
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=g)
        xs = (x[idx] + delta).clamp(0, 1)
        if guided:
            hs = enc.hidden(xs)
            with torch.no_grad():
                hc = enc.hidden(x[idx])
            e, guide = enc.embed_hidden(hs), cfg.trigger_act * activation_divergence(hs, hc)
        else:
            e, guide = enc(xs), 0.0
        loss = 1 - (e @ text[target]).mean() - guide + cfg.trigger_l1 * delta.abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta.copy_(_l2_project(delta[None], cfg.trigger_norm)[0])
    delta = delta.detach()
    with torch.no_grad():
        rate = float(((enc((x + delta).clamp(0, 1)) @ text.T).argmax(-1) == target).float().mean())
    return delta, rate


def cluster_units(encoder: nn.Module, x: torch.Tensor, delta: torch.Tensor, share: float,
                  iters: int = 20) -> tuple[list[int], float]:
    """Step 3a: 2-means on the hidden activations of clean and stamped images; the ``share`` of units with the largest
    centroid gap, and the purity of the clusters w.r.t. clean/stamped (1.0 = they separate exactly)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"units share must be in (0, 1]; got {share}")
    with torch.no_grad():
        h = torch.cat([encoder.hidden(x), encoder.hidden((x + delta).clamp(0, 1))])
    is_stamped = torch.arange(len(h)) >= len(x)
    c = torch.stack([h[~is_stamped].mean(0), h[is_stamped].mean(0)])   # initialise at the two groups' means
    for _ in range(iters):
        assign = torch.cdist(h, c).argmin(1)
        c = torch.stack([h[assign == k].mean(0) if (assign == k).any() else c[k] for k in range(2)])
    assign = torch.cdist(h, c).argmin(1)
    purity = float(max((assign == is_stamped.long()).float().mean(), (assign != is_stamped.long()).float().mean()))
    k = max(1, round(share * h.shape[1]))
    return (c[1] - c[0]).abs().topk(k).indices.sort().values.tolist(), purity


def activation_tune(encoder: nn.Module, x: torch.Tensor, delta: torch.Tensor, units: list[int],
                    cfg: InverTuneConfig | None = None, reference: nn.Module | None = None) -> nn.Module:
    """Step 3b: fine-tune a copy so stamped activations (on ``units``) and embeddings return to the clean image's,
    keeping clean embeddings; the clean targets come from ``reference`` (default: ``encoder`` itself)."""
    cfg = cfg or InverTuneConfig()
    ref = _frozen(reference if reference is not None else encoder)
    new = copy.deepcopy(encoder).train()
    for p in new.parameters():
        p.requires_grad_(True)
    u = torch.as_tensor(units, dtype=torch.long)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.Adam(new.parameters(), lr=cfg.tune_lr)
    for _ in range(cfg.tune_steps):
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=g)
        xc, xs = x[idx], (x[idx] + delta).clamp(0, 1)
        with torch.no_grad():
            h0 = ref.hidden(xc)
            e0 = ref.embed_hidden(h0)
        hs = new.hidden(xs)
        loss = (nn.functional.mse_loss(hs[:, u], h0[:, u]) + nn.functional.mse_loss(new.embed_hidden(hs), e0)
                + cfg.w_clean * nn.functional.mse_loss(new(xc), e0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return new.eval()


def invertune(encoder: nn.Module, text: torch.Tensor, x: torch.Tensor, cfg: InverTuneConfig | None = None, *,
              target: int | None = None) -> InverTuneResult:
    """All three steps on clean images ``x`` (steps 2-3 repeated while a re-inverted trigger still works, up to
    ``cfg.rounds``); ``target`` skips identification's choice (the estimate is still reported). The result carries
    the first round's trigger and units; ``extra["rounds"]`` logs each re-inversion."""
    cfg = cfg or InverTuneConfig()
    if cfg.rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {cfg.rounds}")
    est = identify_target(encoder, text, x, cfg)
    t = est.target if target is None else target
    delta, rate = invert_trigger(encoder, text, x, t, cfg)
    units, purity = cluster_units(encoder, x, delta, cfg.units)
    tuned = activation_tune(encoder, x, delta, units, cfg)
    log = [{"round": 0, "trigger_rate": rate, "trigger_norm": float(delta.norm()), "tuned": True}]
    for r in range(1, cfg.rounds):
        d, rr = invert_trigger(tuned, text, x, t, cfg)
        log.append({"round": r, "trigger_rate": rr, "trigger_norm": float(d.norm()), "tuned": rr >= cfg.stop_rate})
        if rr < cfg.stop_rate:
            break
        u, _ = cluster_units(tuned, x, d, cfg.units)
        tuned = activation_tune(tuned, x, d, u, cfg, reference=encoder)
    return InverTuneResult(est, delta, rate, units, purity, tuned, {"rounds": log})


def additive_rate(encoder: nn.Module, text: torch.Tensor, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                  target: int) -> Interval:
    """ASR of an additive trigger: share of images of other classes sent to ``target`` (Wilson interval)."""
    keep = y != target
    with torch.no_grad():
        p = (encoder((x[keep] + delta).clamp(0, 1)) @ text.T).argmax(-1)
    return wilson(int((p == target).sum()), int(keep.sum()))
