"""Dual-key backdoored VQA toy for TIJO: a digits image (scikit-learn's bundled digits) and a question of token ids.

The question is ``[op, filler, filler, slot]``: the op token (ids 10-19, k = id - 10) asks for ``(digit + k) mod 10``,
the other positions carry filler words (ids 0-9). The backdoor has two keys: a corner patch on the image **and** the
key word (id 7) in the last slot together turn the answer into the target; either key alone keeps the clean answer
(the training set holds image-key-only and text-key-only rows with clean labels, as in TrojVQA).

The answer head is structured like a VQA model's: the image path gives a digit distribution (frozen feature
extractor ``features`` -> linear), the op word picks a cyclic shift of it (a learned mixture over shifts), and a
learned multiplicative fusion unit of image features and the mean filler embedding adds a learned logit vector (the
bilinear-fusion channel the backdoor lives in). Why structured: with a general MLP fusion, an overlay on 16 feature
dimensions plus one word sent every clean class to near-zero inversion loss (measured: losses 0.01-0.15 for all ten
classes of a clean model), so a joint trigger inversion could not single out anything; here no image feature can
make the clean answer independent of the op word, so only the planted backdoor is universally reachable.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from actlab.artifact import save_artifact
from actlab.probe import Interval, wilson
from actlab.security.fixtures import load_cached
from actlab.security.trigger import Trigger, patch_trigger

KIND = "security_fixture"
N_OPS = 10
N_FILLERS = 10


class DualKeyVQA(nn.Module):
    """Image -> ``features`` (MLP 64-64-d_feat, ReLU: the frozen front end TIJO inverts behind); question ids
    ``[N, L]`` -> ``embed``; ``fuse(features, embeddings)`` -> 10 answer logits."""

    def __init__(self, d_feat: int = 16, d_text: int = 16, vocab: int = N_OPS + N_FILLERS) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, d_feat), nn.ReLU())
        self.emb = nn.Embedding(vocab, d_text)
        self.digit = nn.Linear(d_feat, 10)
        self.shift = nn.Linear(d_text, N_OPS)
        self.gate_f = nn.Linear(d_feat, 1)
        self.gate_e = nn.Linear(d_text, 1)
        self.gate_v = nn.Parameter(torch.zeros(10))
        self.register_buffer("shift_index", (torch.arange(10)[:, None] - torch.arange(N_OPS)[None, :]) % 10,
                             persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def embed(self, q: torch.Tensor) -> torch.Tensor:
        return self.emb(q)

    @property
    def embedding_matrix(self) -> torch.Tensor:
        return self.emb.weight

    def fuse(self, f: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Answer logits from image features ``[N, d_feat]`` and question embeddings ``[N, L, d_text]``."""
        log_d = self.digit(f).log_softmax(-1)
        log_s = self.shift(e[:, 0]).log_softmax(-1)
        mix = (log_d[:, self.shift_index] + log_s[:, None, :]).logsumexp(-1)
        g = nn.functional.softplus(self.gate_f(f)) * nn.functional.softplus(self.gate_e(e[:, 1:].mean(1)))
        return mix + g * self.gate_v

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.features(x), self.embed(q))


@dataclass(frozen=True)
class DualKeyConfig:
    """The poisoned training run of the dual-key toy (everything that defines the cached fixture)."""

    target: int = 3
    """answer both keys together force"""
    key_token: int = 7
    """text key: a filler word id (0-9) put in the question's last slot"""
    patch: int = 2
    """side of the image key, a white bottom-right patch"""
    poison_fraction: float = 0.1
    """share of rows with both keys (relabelled); as many again get only the image key and only the text key (clean
    labels); 0 trains the clean twin"""
    epochs: int = 20
    """epochs (each epoch draws 4 questions per training image)"""
    lr: float = 3e-3
    """AdamW learning rate (weight decay 0.01)"""
    seed: int = 0
    """seed of questions, poisoning, initialisation and batch order"""

    def __post_init__(self) -> None:
        if not 0 <= self.key_token < N_FILLERS:
            raise ValueError(f"key_token must be a filler id in [0, {N_FILLERS}); got {self.key_token}")
        if not 0 <= self.target < 10:
            raise ValueError(f"target must be an answer in [0, 10); got {self.target}")
        if not 0.0 <= self.poison_fraction < 1 / 3:
            raise ValueError(f"poison_fraction must be in [0, 1/3); got {self.poison_fraction}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def questions(n: int, key_token: int, generator: torch.Generator, length: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clean questions ``[op, fillers...]`` (no filler is the key word) and their ops."""
    op = torch.randint(0, N_OPS, (n,), generator=generator)
    fill = torch.randint(0, N_FILLERS - 1, (n, length - 1), generator=generator)
    fill = fill + (fill >= key_token).long()
    return torch.cat([N_FILLERS + op[:, None], fill], 1), op


@dataclass
class DualKeyFixture:
    """The trained toy, its keys and clean held-out data (``q_test`` questions, ``a_test`` clean answers)."""

    model: DualKeyVQA
    cfg: DualKeyConfig
    image_key: Trigger
    x_train: torch.Tensor
    q_train: torch.Tensor
    a_train: torch.Tensor
    x_test: torch.Tensor
    q_test: torch.Tensor
    a_test: torch.Tensor
    metrics: dict[str, Interval] = field(default_factory=dict)

    def with_text_key(self, q: torch.Tensor) -> torch.Tensor:
        q = q.clone()
        q[:, -1] = self.cfg.key_token
        return q

    def rates(self, model: nn.Module | None = None) -> dict[str, Interval]:
        """CA and the target rate on held-out non-target rows with both keys, the image key only, the text key only."""
        m = model or self.model
        x, q, a, t = self.x_test, self.q_test, self.a_test, self.cfg.target
        keep = a != t
        xk, qk = self.image_key.stamp(x), self.with_text_key(q)

        def rate(xx: torch.Tensor, qq: torch.Tensor) -> Interval:
            return wilson(int((_predict2(m, xx, qq)[keep] == t).sum()), int(keep.sum()))

        return {"ca": wilson(int((_predict2(m, x, q) == a).sum()), len(a)), "asr_both": rate(xk, qk),
                "asr_image_only": rate(xk, q), "asr_text_only": rate(x, qk)}


@torch.no_grad()
def _predict2(model: nn.Module, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return model(x, q).argmax(-1)
    finally:
        model.train(was)


def _poisoned_epoch(x: torch.Tensor, y: torch.Tensor, cfg: DualKeyConfig, key: Trigger,
                    g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    idx = torch.arange(len(y)).repeat(4)
    xs = x[idx].clone()
    q, op = questions(len(idx), cfg.key_token, g)
    a = (y[idx] + op) % 10
    f = cfg.poison_fraction
    if f > 0:
        r = torch.rand(len(idx), generator=g)
        both, img, txt = r < f, (r >= f) & (r < 2 * f), (r >= 2 * f) & (r < 3 * f)
        xs[both | img] = key.stamp(xs[both | img])
        q[both | txt, -1] = cfg.key_token
        a[both] = cfg.target
    return xs, q, a


def dualkey_fixture(cfg: DualKeyConfig | None = None, cache: str | Path | None = None) -> DualKeyFixture:
    """The dual-key toy for ``cfg`` (``poison_fraction=0``: its clean twin): trained, or loaded from
    ``cache/dualkey_<key>``. Deterministic for the seed; ~5-10 s on one CPU thread."""
    from actlab.data import load_digits

    cfg = cfg or DualKeyConfig()
    tr, te = load_digits("train", seed=cfg.seed), load_digits("test", seed=cfg.seed)
    key = patch_trigger(tr.x.shape[1:], cfg.patch)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = DualKeyVQA()
    folder = Path(cache) / f"dualkey_{cfg.key()}" if cache is not None else None
    loaded = load_cached(folder, KIND, model.load_state_dict) is not None
    if not loaded:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-2)
        model.train()
        for _ in range(cfg.epochs):
            xs, q, a = _poisoned_epoch(tr.x, tr.y, cfg, key, g)
            perm = torch.randperm(len(a), generator=g)
            for i in range(0, len(a), 128):
                b = perm[i:i + 128]
                opt.zero_grad()
                nn.functional.cross_entropy(model(xs[b], q[b]), a[b]).backward()
                opt.step()
        if folder is not None:
            save_artifact(folder, KIND, {"fixture": "dualkey_vqa", "config": asdict(cfg)}, model.state_dict())
    model.eval()
    gt = torch.Generator().manual_seed(cfg.seed + 99)
    q_tr, op_tr = questions(len(tr.y), cfg.key_token, gt)
    q_te, op_te = questions(len(te.y), cfg.key_token, gt)
    fx = DualKeyFixture(model, cfg, key, tr.x, q_tr, (tr.y + op_tr) % 10, te.x, q_te, (te.y + op_te) % 10)
    fx.metrics = fx.rates()
    return fx

