"""Recipe: in-context few-shot classification with held-out classes, the setting of the induction-clamp paper
(arXiv 2404.07129, training-dynamics.md §1), with scikit-learn's bundled 8x8 digits as the class pool in place of
Omniglot (not available offline).

A sequence is ``x_1 l_1 x_2 l_2 ... x_n l_n x_q``: exemplar images of ``ways`` classes (``shots`` each, shuffled; bursty:
the query's class is always in the context) with labels drawn at random per sequence, then a query image of one of
those classes; the model predicts the query's label at the last position. Labels mean nothing across sequences, so
the task is solvable only in context: a previous-token head lets each label token carry its exemplar, and an
induction head at the query matches the query against those exemplars and copies the label. Training uses some
digit classes and their rotated and mirrored versions as further classes (many classes force a matcher that
transfers, as Omniglot's ~1,600 do; with the 7 plain training digits held-out accuracy stays at chance), evaluation
also the held-out digits, which the model never saw in any orientation. The clamps of ``induction.py`` apply
unchanged (same ``blocks.{i}`` / ``blocks.{i}.pattern`` sites).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import NamedTuple

import torch
from torch import nn

from actlab.train.configs import FewShotConfig
from actlab.train.toy import Attention

log = logging.getLogger(__name__)


class FewShotAttn(nn.Module):
    """Attention-only transformer over mixed tokens: images through a linear embedding, labels through a table,
    learned positions; the label logits are read at the last (query) position."""

    def __init__(self, d_img: int, n_labels: int, length: int, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2):
        super().__init__()
        self.img = nn.Linear(d_img, d_model)
        self.label = nn.Embedding(n_labels, d_model)
        self.pos = nn.Embedding(length, d_model)
        self.blocks = nn.ModuleList(Attention(d_model, n_heads) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, n_labels, bias=False)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``images [b, n + 1, d_img]`` (context exemplars, then the query), ``labels [b, n]`` -> logits ``[b, L]``."""
        b, n1, _ = images.shape
        if labels.shape != (b, n1 - 1):
            raise ValueError(f"labels must be [batch, {n1 - 1}] for {n1} images; got {list(labels.shape)}")
        e = self.img(images)
        x = torch.stack([e[:, :-1], self.label(labels)], 2).reshape(b, 2 * (n1 - 1), -1)
        x = torch.cat([x, e[:, -1:]], 1)
        x = x + self.pos(torch.arange(x.shape[1], device=x.device))
        for blk in self.blocks:
            x = x + blk(x)
        return self.unembed(x[:, -1])


class Episodes(NamedTuple):
    """A batch of few-shot sequences: ``images [b, n + 1, d]``, ``labels [b, n]``, ``target [b]`` (the query's label),
    ``match [b, n]`` (context items of the query's class)."""

    images: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    match: torch.Tensor


def sample_episodes(x: torch.Tensor, y: torch.Tensor, classes: list[int], batch: int, ways: int, shots: int,
                    n_labels: int, generator: torch.Generator) -> Episodes:
    """``batch`` sequences over ``classes`` of the pool ``(x [N, d], y [N])``: per row ``ways`` distinct classes with
    ``shots`` exemplars each and distinct random labels, then a query (a further exemplar of one of them)."""
    if ways > len(classes) or ways > n_labels:
        raise ValueError(f"ways={ways} needs at least that many classes ({len(classes)}) and labels ({n_labels})")
    idx = [(y == c).nonzero().flatten() for c in classes]
    if min(len(i) for i in idx) < shots + 1:
        raise ValueError(f"every class needs >= shots + 1 = {shots + 1} images; class sizes {[len(i) for i in idx]}")
    table = torch.nn.utils.rnn.pad_sequence(idx, batch_first=True, padding_value=-1)       # [C, max]
    cls = torch.rand(batch, len(classes), generator=generator).argsort(1)[:, :ways]         # [b, ways]
    labs = torch.rand(batch, n_labels, generator=generator).argsort(1)[:, :ways]            # [b, ways]
    rows = table[cls]                                                                       # [b, ways, max]
    pick = torch.rand(rows.shape, generator=generator).masked_fill(rows < 0, 2.0).argsort(-1)[..., :shots + 1]
    items = rows.gather(-1, pick)                                                           # distinct per class
    q = torch.randint(ways, (batch,), generator=generator)
    ctx = items[..., :shots].reshape(batch, -1)
    ctx_lab = labs[:, :, None].expand(-1, -1, shots).reshape(batch, -1)
    ctx_cls = torch.arange(ways)[None, :, None].expand(batch, -1, shots).reshape(batch, -1)
    perm = torch.rand(ctx.shape, generator=generator).argsort(1)
    ctx, ctx_lab, ctx_cls = ctx.gather(1, perm), ctx_lab.gather(1, perm), ctx_cls.gather(1, perm)
    query = items[torch.arange(batch), q, shots]
    images = x[torch.cat([ctx, query[:, None]], 1)]
    return Episodes(images, ctx_lab, labs[torch.arange(batch), q], ctx_cls == q[:, None])


def make_fewshot_model(cfg: FewShotConfig, d_img: int):
    """A fresh seeded few-shot toy wrapped as an actlab ``Model`` (trainable)."""
    from actlab import Model

    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        mod = FewShotAttn(d_img, cfg.n_labels, 2 * cfg.ways * cfg.shots + 1, cfg.d_model, cfg.n_heads)
    return Model(mod.train(), None, name="fewshot-attn-toy")


@torch.no_grad()
def evaluate(model, ep: Episodes) -> dict[str, float]:
    """In-context accuracy, and the induction head's signature: the layer-1 attention from the query onto the label
    tokens of its own class's exemplars minus that onto the other labels (per head, batch mean; the largest |.|).
    With two labels a head can also attend to the *other* class's label and output the remaining one, hence |.|."""
    site = "module:blocks.1.pattern"
    with model.recording([site]) as rec:
        logits = model.module(ep.images, ep.labels)
    p = rec[site][:, :, -1, 1:-1:2]                                    # query -> label tokens [b, h, n]
    m = ep.match[:, None].to(p.dtype)
    sel = ((p * m).sum(-1) - (p * (1 - m)).sum(-1)).mean(0)           # [h]
    return {"acc": float((logits.argmax(-1) == ep.target).double().mean()), "induction": float(sel.abs().max())}


def train_fewshot(cfg: FewShotConfig, clamp: str = "none", data=None) -> dict:
    """One run under a clamp of ``induction.clamp_interventions`` (``grad`` as in the induction recipe): curves of the
    training loss, in-context accuracy on training and held-out classes, query->label induction attention."""
    from actlab.train.induction import clamp_interventions

    x, y = data if data is not None else dihedral_digits(cfg.transforms)
    train_cls = [c + 10 * t for t in range(cfg.transforms) for c in range(cfg.train_classes)]
    held = list(range(cfg.train_classes, 10))                          # plain, never trained on in any orientation
    model = make_fewshot_model(cfg, x.shape[1])
    opt = torch.optim.Adam(model.module.parameters(), lr=cfg.lr)
    g, ge = torch.Generator().manual_seed(cfg.seed + 1), torch.Generator().manual_seed(cfg.seed + 2)
    ev_tr = sample_episodes(x, y, train_cls, cfg.eval_batch, cfg.ways, cfg.shots, cfg.n_labels, ge)
    ev_ho = sample_episodes(x, y, held, cfg.eval_batch, cfg.ways, cfg.shots, cfg.n_labels, ge)
    out = {"clamp": clamp, "steps": [], "loss": [], "acc_train_classes": [], "acc_heldout": [], "induction": [],
           "onset": None, "held_out_classes": held, "train_classes": train_cls}
    grad = "through" if clamp == "identity" else cfg.grad
    with model.intervene(clamp_interventions(clamp), grad=grad):
        for step in range(cfg.steps + 1):
            if step % cfg.eval_every == 0 or step == cfg.steps:
                a, h = evaluate(model, ev_tr), evaluate(model, ev_ho)
                out["steps"].append(step)
                out["acc_train_classes"].append(a["acc"])
                out["acc_heldout"].append(h["acc"])
                out["induction"].append(h["induction"])
                if out["onset"] is None and h["acc"] >= cfg.onset_acc:
                    out["onset"] = step
                log.info("step %d acc train-classes %.3f held-out %.3f", step, a["acc"], h["acc"])
            if step == cfg.steps:
                break
            ep = sample_episodes(x, y, train_cls, cfg.batch, cfg.ways, cfg.shots, cfg.n_labels, g)
            loss = nn.functional.cross_entropy(model.module(ep.images, ep.labels), ep.target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out["loss"].append(loss.item())
    return out


def dihedral_digits(transforms: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as standardised pixel vectors ``[N * transforms, 64]``; transform ``t`` of digit ``c`` is class
    ``c + 10 t`` (t < 4: rotation by t x 90 degrees; t >= 4: the same of the mirror image)."""
    from actlab.data import load_digits

    d = load_digits("all")
    img = d.x[:, 0]
    x = torch.cat([torch.rot90(img.flip(2) if t >= 4 else img, t % 4, (1, 2)).flatten(1) for t in range(transforms)])
    y = torch.cat([d.y + 10 * t for t in range(transforms)])
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-3), y


def run_fewshot(cfg: FewShotConfig, clamps: tuple[str, ...] = ("none", "prev_token", "zero")) -> dict:
    """Every clamp with the same seed and data; checks: held-out in-context accuracy rises from chance (1 / ways)
    to ``onset_acc`` without a clamp, the previous-token clamp reaches it no later, the zero clamp never.
    Writes ``fewshot.json`` and ``fewshot.png`` into ``cfg.out`` when it is set."""
    data = dihedral_digits(cfg.transforms)
    runs = {c: train_fewshot(cfg, c, data) for c in clamps}
    rep: dict = {"config": asdict(cfg), "runs": runs, "chance": 1.0 / cfg.ways}
    checks = {}
    if "none" in runs:
        checks["heldout_icl_emerges"] = runs["none"]["onset"] is not None
    if "none" in runs and "prev_token" in runs:
        a, b = runs["prev_token"]["onset"], runs["none"]["onset"]
        checks["prev_token_no_later"] = a is not None and (b is None or a <= b)
    if "zero" in runs:
        checks["zero_prevents"] = runs["zero"]["onset"] is None
    rep["checks"] = checks
    if cfg.out:
        from actlab.train.report import plot_curves, write_json

        write_json(cfg.out, "fewshot.json", rep)
        plot_curves(cfg.out, "fewshot.png", {c: (r["steps"], r["acc_heldout"]) for c, r in runs.items()},
                    ylabel="in-context accuracy, held-out classes", title="few-shot ICL on held-out digit classes",
                    hline=(rep["chance"], "chance"))
    return rep
