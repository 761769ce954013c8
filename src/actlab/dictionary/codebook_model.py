"""Codebook features inside a model: a ``CodebookLayer`` spliced at a site (``model.intervene``), trained jointly with
the model on next-token loss plus the codes' autoencoding loss, code forcing during ``generate()`` (steering), and
the finite-state-machine toy of the paper (states recovered as codes)."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from actlab.dictionary.codebook import CodebookLayer

if TYPE_CHECKING:
    from actlab.models import Model


def splice(layer: CodebookLayer, force: int | None = None, where: str = "all"):
    """An edit ``(act, ctx) -> act`` snapping the site's activation to its codes; with ``force`` the code is put
    among the selected ones (replacing the lowest-ranked) at every position (``where="all"``) or only at the last
    position of each forward call (``"last"``: the prompt's last token, then each new token in ``generate()``)."""
    if where not in ("all", "last"):
        raise ValueError(f"where={where!r}; use 'all' or 'last'")
    if force is not None and not 0 <= force < layer.codes.shape[0]:
        raise IndexError(f"code {force} out of range: the codebook has {layer.codes.shape[0]} codes")

    def edit(act, ctx):
        x = act.to(layer.codes.dtype)
        old, layer.forced = layer.forced, None
        try:
            plain = layer(x)
            if force is None:
                return plain.to(act.dtype)
            layer.forced = force
            forced = layer(x)
        finally:
            layer.forced = old
        if where == "last":
            forced = torch.cat([plain[:, :-1], forced[:, -1:]], 1)
        return forced.to(act.dtype)
    return edit


@contextlib.contextmanager
def forcing(model: Model, site: str, layer: CodebookLayer, code: int, where: str = "last") -> Iterator[None]:
    """Generate (or run) with the codebook spliced at ``site`` and ``code`` forced (see :func:`splice`)."""
    with model.intervene({site: splice(layer, code, where)}):
        yield


@dataclass
class JointResult:
    layer: CodebookLayer
    history: list[float] = field(default_factory=list)
    """LM cross-entropy (codebook in place) per step."""
    ae_history: list[float] = field(default_factory=list)
    """Autoencoding loss of the codes per step."""


def lm_loss(model: Model, batch: torch.Tensor, site: str | None = None, layer: CodebookLayer | None = None,
            ) -> torch.Tensor:
    """Mean next-token cross-entropy of ``batch [b, n]`` (every position), with the codebook spliced at ``site``."""
    ivs = {site: splice(layer)} if layer is not None else {}
    with model.intervene(ivs):
        logits = model({"input_ids": batch, "attention_mask": torch.ones_like(batch)}, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())


def train_joint(model: Model, site: str, batches: Sequence[torch.Tensor], *, n_codes: int = 256, k: int = 8,
                lr: float = 1e-3, code_lr: float = 5e-3, aeloss: float = 1.0, train_model: bool = True,
                layer: CodebookLayer | None = None, seed: int = 0, replace_every: int = 50,
                layernorm: bool = False, bypass: bool = False) -> JointResult:
    """Insert a codebook at ``site`` and fine-tune it with the model (the paper's recipe: LM loss plus the codes'
    autoencoding loss, straight-through gradient to the model below, dead codes replaced from recent inputs).
    ``bypass=True`` trains the same way with the site left as it is (the un-quantised baseline)."""
    d = model.record(batches[0][:1], sites=[site])[site].shape[-1]
    layer = layer or CodebookLayer(d, n_codes, k=k, seed=seed, dead_after=replace_every, layernorm=layernorm)
    params = [{"params": layer.parameters(), "lr": code_lr}]
    if train_model:
        model.module.requires_grad_(True)
        params.append({"params": [p for p in model.module.parameters() if p.requires_grad], "lr": lr})
    opt = torch.optim.Adam(params)
    g = torch.Generator().manual_seed(seed)
    res = JointResult(layer)
    recent: list[torch.Tensor] = []

    def keep(act, ctx):
        recent[:] = [act.detach().reshape(-1, act.shape[-1])]
        return act if bypass else layer(act.to(layer.codes.dtype)).to(act.dtype)

    model.module.train()
    try:
        for step, batch in enumerate(batches):
            with torch.enable_grad(), model.intervene({site: keep}):
                logits = model({"input_ids": batch, "attention_mask": torch.ones_like(batch)}, use_cache=False).logits
                ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
                ae = layer.aeloss(recent[0])
                loss = ce + aeloss * ae
            opt.zero_grad()
            loss.backward()
            opt.step()
            res.history.append(float(ce.detach()))
            res.ae_history.append(float(ae.detach()))
            if replace_every and step % replace_every == replace_every - 1:
                layer.replace_dead(recent[0], g)
    finally:
        model.module.eval()
        model.module.requires_grad_(False)
    return res


# -- the finite-state-machine toy ---------------------------------------------------------------------------
@dataclass
class FSM:
    """A random FSM over ``n_states`` states, each with ``n_edges`` successors; a walk's tokens are its states
    (state s is the byte ``first + s``)."""

    n_states: int = 10
    n_edges: int = 3
    seed: int = 0
    first: str = "a"
    succ: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        rng = random.Random(self.seed)
        if not self.succ:
            self.succ = [rng.sample(range(self.n_states), self.n_edges) for _ in range(self.n_states)]

    def walk(self, n: int, rng: random.Random) -> list[int]:
        s = [rng.randrange(self.n_states)]
        while len(s) < n:
            s.append(rng.choice(self.succ[s[-1]]))
        return s

    def text(self, states: Sequence[int]) -> str:
        return "".join(chr(ord(self.first) + s) for s in states)


def purity(codes: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of tokens whose code's majority label is their own label (code -> state purity)."""
    right = 0
    for c in codes.unique():
        lab = labels[codes == c]
        right += int(torch.bincount(lab).max())
    return right / max(1, len(labels))


# -- a codebook fine-tune on text, saved and reloaded (the CLI's work) ---------------------------------------
CODEBOOK_KIND = "dictionary.codebook"


LOSS_TOLERANCE = 0.10
"""Relative held-out loss increase a codebook model may have over the original: the project's reading of the spec's
"modest degradation" (the same bound as the FSM toy's check)."""


@dataclass
class CodebookTrainConfig:
    """Fine-tuning of one codebook at a site of a model, on packed text contexts."""

    site: str = "blocks.0.resid_post"
    """Where the codebook sits (its output replaces the activation)."""
    codes: int = 256
    """Codebook size."""
    k: int = 8
    """Codes combined per activation."""
    layernorm: bool = False
    """Compare (and build codes) after a LayerNorm of the activation. The snapped output then lives in the normalised
    space, which a pretrained model downstream does not expect: keep it off unless the model trains with it."""
    init: str = "kmeans"
    """How the codes start: kmeans (of the site's activations on the training text), sample (random activations) or
    random (Gaussian; the first forward is then far from the original model)."""
    init_contexts: int = 64
    """Training contexts recorded to initialise the codes."""
    train_model: bool = False
    """Also fine-tune the model's weights (at ``lr``); by default only the codebook trains."""
    steps: int = 200
    """Training steps (one batch each)."""
    batch_size: int = 8
    context_length: int = 64
    lr: float = 1e-5
    """Model learning rate (with --train-model)."""
    code_lr: float = 1e-3
    """Codebook learning rate."""
    eval_contexts: int = 16
    """Held-out contexts (not trained on) for the loss report."""
    seed: int = 0

    def __post_init__(self):
        if min(self.codes, self.k, self.steps, self.batch_size, self.context_length, self.eval_contexts,
               self.init_contexts) < 1:
            raise ValueError("codes, k, steps, batch_size, context_length, eval_contexts and init_contexts must be "
                             ">= 1")
        if self.k > self.codes:
            raise ValueError(f"k={self.k} must be <= codes={self.codes}")
        if self.init not in ("kmeans", "sample", "random"):
            raise ValueError(f"init={self.init!r}; use kmeans, sample or random")


def fine_tune(model: Model, texts: Sequence[str], cfg: CodebookTrainConfig) -> tuple[JointResult, dict]:
    """Pack ``texts``, hold out ``eval_contexts``, initialise the codes from the site's activations (``cfg.init``),
    train, and report the held-out loss of the original model, with random codes, with the initialised codebook
    (``loss_codebook_untrained``) and after training; returns (result, report)."""
    from actlab.data import pack_contexts

    model.check_sites([cfg.site])
    ids = pack_contexts(model.tokenizer, texts, cfg.context_length, seed=cfg.seed).input_ids.to(model.device)
    if len(ids) <= cfg.eval_contexts:
        raise ValueError(f"{len(ids)} contexts of {cfg.context_length} tokens: need more than eval_contexts="
                         f"{cfg.eval_contexts} (give more text or lower --context-length)")
    held, train = ids[:cfg.eval_contexts], ids[cfg.eval_contexts:]
    g = torch.Generator().manual_seed(cfg.seed)
    batches = [train[torch.randint(0, len(train), (cfg.batch_size,), generator=g)] for _ in range(cfg.steps)]
    with torch.no_grad():
        before = float(lm_loss(model, held))
        d = model.record(held[:1], sites=[cfg.site])[cfg.site].shape[-1]
        layer = CodebookLayer(d, cfg.codes, k=cfg.k, seed=cfg.seed, layernorm=cfg.layernorm)
        random_codes = float(lm_loss(model, held, cfg.site, layer))
        if cfg.init != "random":
            sample = train[:cfg.init_contexts]
            acts = model.record({"input_ids": sample, "attention_mask": torch.ones_like(sample)}, sites=[cfg.site],
                                dtype=torch.float32)[cfg.site]
            layer.init_codes(acts, cfg.init, generator=g)
        untrained = float(lm_loss(model, held, cfg.site, layer))
    res = train_joint(model, cfg.site, batches, lr=cfg.lr, code_lr=cfg.code_lr, layer=layer, seed=cfg.seed,
                      train_model=cfg.train_model)
    with torch.no_grad():
        after = float(lm_loss(model, held, cfg.site, res.layer))
    return res, {"loss_original": before, "loss_codebook_random": random_codes, "loss_codebook_untrained": untrained,
                 "loss_codebook_trained": after, "init": cfg.init, "train_contexts": len(train),
                 "held_out_contexts": len(held),
                 "within_tolerance": after <= (1 + LOSS_TOLERANCE) * before, "tolerance": LOSS_TOLERANCE}


def save_codebook(layer: CodebookLayer, folder, site: str, extra: dict | None = None):
    """An ``actlab.artifact`` folder (kind ``dictionary.codebook``): the codes and how to rebuild the layer."""
    from actlab.artifact import save_artifact

    cfg = {"site": site, "n_codes": int(layer.codes.shape[0]), "d": int(layer.codes.shape[1]), "k": layer.k,
           "similarity": layer.similarity, "layernorm": layer.ln is not None, **(extra or {})}
    return save_artifact(folder, CODEBOOK_KIND, cfg, {"codes": layer.codes.detach().float().contiguous()})


def load_codebook(folder) -> tuple[CodebookLayer, str, dict]:
    """(layer, site, config) from a folder written by :func:`save_codebook`."""
    from actlab.artifact import load_artifact

    art = load_artifact(folder, CODEBOOK_KIND)
    c = art.config
    layer = CodebookLayer(c["d"], c["n_codes"], k=c["k"], similarity=c["similarity"], layernorm=c["layernorm"])
    with torch.no_grad():
        layer.codes.copy_(art.tensors["codes"])
    return layer, c["site"], c
