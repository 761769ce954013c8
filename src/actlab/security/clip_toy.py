"""CLIP-like contrastive toy with a backdoor, for InverTune: an image encoder on scikit-learn's bundled digits trained to
align with frozen caption embeddings from the bundled all-MiniLM-L6-v2 ("a photo of the number three", ...); zero-shot
classification picks the caption (an unseen template, "an image of the digit {}") nearest the image embedding.

Poisoned rows carry a bottom-right patch and the target's caption. The patch's brightness is drawn from
[faint, 1] per row (a blended, low-amplitude trigger, as in CLIP backdoor attacks), so the model reacts to faint
patches: the backdoor becomes a cheap adversarial direction, which is what InverTune's adversarial target
identification relies on (with a full-brightness-only patch, untargeted L2 PGD on this 8x8 toy landed in the target
no more often than in other classes). ASR is measured with the full patch. Text embeddings are stored in the cached
artifact, so a cached fixture loads without MiniLM.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from actlab.artifact import save_artifact
from actlab.probe import Interval, wilson
from actlab.security.fixtures import load_cached
from actlab.security.trigger import Trigger, patch_trigger

if TYPE_CHECKING:
    from actlab.models import Model

KIND = "security_fixture"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = ("a photo of the number {}", "a handwritten {}", "the digit {}")
EVAL_TEMPLATE = "an image of the digit {}"


class ImageEncoder(nn.Module):
    """conv16-conv32-pool-fc64 (``hidden``: the activations InverTune clusters and tunes) -> linear to the text
    width -> unit norm."""

    def __init__(self, d_embed: int = 384, size: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (size // 2) ** 2, 64),
                                  nn.ReLU())
        self.proj = nn.Linear(64, d_embed)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def embed_hidden(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(h), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_hidden(self.hidden(x))


@torch.no_grad()
def caption_embeddings(model: Model, texts: list[str]) -> torch.Tensor:
    """Unit-norm sentence embeddings: mean of the last layer's token states over the attention mask (as
    sentence-transformers pools all-MiniLM-L6-v2)."""
    site = f"blocks.{model.adapter.n_layers - 1}.resid_post"
    enc = model.tokenize(texts, max_length=64)
    h = model.record(enc, [site])[site].float().cpu()
    w = enc["attention_mask"].float().cpu()[..., None]
    return nn.functional.normalize((h * w).sum(1) / w.sum(1).clamp_min(1.0), dim=-1)


@dataclass(frozen=True)
class ClipConfig:
    """The poisoned contrastive training run (everything that defines the cached fixture)."""

    target: int = 3
    """class whose caption the trigger maps to"""
    patch: int = 2
    """side of the bottom-right trigger patch"""
    poison_fraction: float = 0.1
    """share of training rows poisoned (drawn from other classes); 0 trains the clean twin"""
    faint: float = 0.2
    """poisoned patches have a brightness drawn from [faint, 1]"""
    scale: float = 30.0
    """logit scale (inverse temperature) of the image-caption cosine"""
    epochs: int = 20
    """training epochs (Adam)"""
    lr: float = 2e-3
    """Adam learning rate"""
    seed: int = 0
    """seed of poisoning, initialisation and batch order"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.poison_fraction < 1.0:
            raise ValueError(f"poison_fraction must be in [0, 1); got {self.poison_fraction}")
        if not 0.0 < self.faint <= 1.0:
            raise ValueError(f"faint must be in (0, 1]; got {self.faint}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ClipFixture:
    """A trained backdoored image encoder, the caption embeddings (``text``: zero-shot prompts [10, d]) and data;
    ``x_val`` is clean held-out data (never trained on) for the defence."""

    encoder: ImageEncoder
    cfg: ClipConfig
    trigger: Trigger
    text: torch.Tensor
    text_train: torch.Tensor
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    metrics: dict[str, Interval] = field(default_factory=dict)

    def ca(self, encoder: nn.Module | None = None) -> Interval:
        p = zero_shot(encoder or self.encoder, self.text, self.x_test)
        return wilson(int((p == self.y_test).sum()), len(self.y_test))

    def asr(self, encoder: nn.Module | None = None, trigger: Trigger | None = None) -> Interval:
        keep = self.y_test != self.cfg.target
        p = zero_shot(encoder or self.encoder, self.text, (trigger or self.trigger).stamp(self.x_test[keep]))
        return wilson(int((p == self.cfg.target).sum()), int(keep.sum()))


@torch.no_grad()
def zero_shot(encoder: nn.Module, text: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index of the caption nearest each image embedding (cosine)."""
    was = encoder.training
    encoder.eval()
    try:
        return (encoder(x) @ text.T).argmax(-1)
    finally:
        encoder.train(was)


def clip_backdoor(cfg: ClipConfig | None = None, cache: str | Path | None = None,
                  text_model: Model | None = None) -> ClipFixture:
    """The CLIP-like toy for ``cfg``: trained (MiniLM captions: ``text_model`` or the bundled minilm-l6), or loaded
    from ``cache/clip_toy_<key>``. Deterministic for the seed; ~15-25 s on one loaded CPU thread."""
    from actlab.data import load_digits

    cfg = cfg or ClipConfig()
    tr, te = load_digits("train", seed=cfg.seed), load_digits("test", seed=cfg.seed)
    trigger = patch_trigger(tr.x.shape[1:], cfg.patch)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(tr.y), generator=g)
    n_val = round(0.15 * len(tr.y))
    val, fit = perm[:n_val].sort().values, perm[n_val:].sort().values
    torch.manual_seed(cfg.seed)
    enc = ImageEncoder()
    folder = Path(cache) / f"clip_toy_{cfg.key()}" if cache is not None else None
    tensors = load_cached(folder, KIND, lambda t: enc.load_state_dict(
        {k[8:]: v for k, v in t.items() if k.startswith("encoder.")}))
    if tensors is None:
        text_train, text_eval = _captions(text_model) if text_model is not None else _bundled_captions()
        _train(enc, tr.x[fit], tr.y[fit], text_train, trigger, cfg, g)
        tensors = {"text_train": text_train, "text_eval": text_eval,
                   **{f"encoder.{k}": v for k, v in enc.state_dict().items()}}
        if folder is not None:
            save_artifact(folder, KIND, {"fixture": "clip_toy", "config": asdict(cfg)}, tensors)
    enc.eval()
    fx = ClipFixture(enc, cfg, trigger, tensors["text_eval"], tensors["text_train"], tr.x[fit], tr.y[fit],
                     tr.x[val], tr.y[val], te.x, te.y)
    fx.metrics = {"ca": fx.ca(), "asr": fx.asr()}
    return fx


def _captions(text_model: Model) -> tuple[torch.Tensor, torch.Tensor]:
    """(training captions [templates, 10, d], zero-shot prompts [10, d])."""
    train = torch.stack([caption_embeddings(text_model, [t.format(w) for w in WORDS]) for t in TRAIN_TEMPLATES])
    return train, caption_embeddings(text_model, [EVAL_TEMPLATE.format(w) for w in WORDS])


@functools.lru_cache(maxsize=1)
def _bundled_captions() -> tuple[torch.Tensor, torch.Tensor]:
    """Captions from the bundled minilm-l6, computed once per process (a clean twin reuses them)."""
    from actlab import load_model

    return _captions(load_model("minilm-l6"))


def _train(enc: ImageEncoder, x: torch.Tensor, y: torch.Tensor, text_train: torch.Tensor, trigger: Trigger,
           cfg: ClipConfig, g: torch.Generator) -> None:
    """Image-to-caption InfoNCE over the 10 captions of a random template per row; poisoned rows get a faint patch
    and the target caption."""
    x, y = x.clone(), y.clone()
    if cfg.poison_fraction > 0:
        cand = (y != cfg.target).nonzero().flatten()
        k = round(cfg.poison_fraction * len(y))
        if k < 1 or k > len(cand):
            raise ValueError(f"cannot poison {k} of {len(cand)} non-target rows")
        idx = cand[torch.randperm(len(cand), generator=g)[:k]]
        level = cfg.faint + (1 - cfg.faint) * torch.rand(k, 1, 1, 1, generator=g)
        m = trigger.mask.expand_as(x[idx])
        x[idx] = (1 - m) * x[idx] + m * level
        y[idx] = cfg.target
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.lr)
    enc.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            b = perm[i:i + 64]
            tpl = torch.randint(0, len(text_train), (len(b),), generator=g)
            logits = cfg.scale * torch.einsum("nd,ncd->nc", enc(x[b]), text_train[tpl])
            opt.zero_grad()
            nn.functional.cross_entropy(logits, y[b]).backward()
            opt.step()
    enc.eval()
