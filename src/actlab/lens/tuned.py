"""Tuned lens (Belrose et al. 2023, arXiv 2303.08112): one affine translator per layer, ``h -> h @ W + b`` before the
model's own read-out (final norm + unembedding), trained to minimise KL(final || lens) over tokens.

Translators start at the identity (``W = I``, ``b = 0``: the tuned lens starts as the logit lens); only they are
trained (the model is frozen). Data: texts packed into contexts and run through the model on the fly, or an
activation store holding the lens sites and the last layer's ``resid_post`` (the target distribution is read out
from it). Saved as an artifact folder of kind ``actlab.tuned_lens`` (cfg.json + weights.safetensors).
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from actlab.lens.logit_lens import kl_final_lens, resid_sites
from actlab.lens.readout import _require_head, readout

if TYPE_CHECKING:
    from actlab.models import Model
    from actlab.store import ActivationStore

log = logging.getLogger(__name__)
Tensor = torch.Tensor
KIND = "actlab.tuned_lens"


@dataclass
class TunedLensConfig:
    """How to train a tuned lens (also saved in its cfg.json and driving `actlab lens tuned`)."""

    layers: list[int] | None = None
    """Blocks to train a translator for (None: every block)."""
    site_kind: str = "resid_post"
    """Residual site read in each block: resid_post, resid_pre or resid_mid."""
    steps: int = 250
    """Optimizer steps."""
    batch_tokens: int = 512
    """Tokens per step (sampled uniformly from the cached training tokens; all of them when there are fewer)."""
    lr: float = 1e-3
    """Learning rate."""
    optimizer: str = "adam"
    """adam | sgd (SGD with Nesterov momentum 0.9, as the paper)."""
    weight_decay: float = 0.0
    """Decay of (W - I) and b towards the identity translator."""
    context_length: int = 64
    """Tokens per context when training from texts."""
    max_contexts: int = 256
    """Contexts taken from the texts (or rows / context_length from a store)."""
    eval_fraction: float = 0.1
    """Held-out share of the tokens on which KL before/after is reported."""
    seed: int = 0
    """Seed of the context order and token sampling."""

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {self.optimizer!r}")
        if self.site_kind not in ("resid_post", "resid_pre", "resid_mid"):
            raise ValueError(f"site_kind must be resid_post, resid_pre or resid_mid; got {self.site_kind!r}")
        if self.steps < 0 or self.batch_tokens < 1 or self.lr <= 0 or self.context_length < 1 or self.max_contexts < 1:
            raise ValueError("steps >= 0, batch_tokens >= 1, lr > 0, context_length >= 1 and max_contexts >= 1 "
                             f"are needed; got {self.steps}, {self.batch_tokens}, {self.lr}, {self.context_length}, "
                             f"{self.max_contexts}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1); got {self.eval_fraction}")


class TunedLens(nn.Module):
    """Per-site affine translators ``W [d, d]`` (identity at init) and ``b [d]`` (zero), keyed by site name."""

    def __init__(self, sites: Sequence[str], d_model: int, model_name: str = "", cfg: TunedLensConfig | None = None):
        super().__init__()
        if not sites:
            raise ValueError("a tuned lens needs at least one site")
        self.sites = list(sites)
        self.d_model = int(d_model)
        self.model_name = model_name
        self.cfg = cfg or TunedLensConfig()
        self.weight = nn.ParameterDict({self._key(s): nn.Parameter(torch.eye(d_model)) for s in self.sites})
        self.bias = nn.ParameterDict({self._key(s): nn.Parameter(torch.zeros(d_model)) for s in self.sites})
        self.metrics: dict[str, Any] = {}

    @staticmethod
    def _key(site: str) -> str:
        return site.replace(".", "_")

    @classmethod
    def for_model(cls, model: Model, sites: Sequence[str] | None = None, cfg: TunedLensConfig | None = None
                  ) -> TunedLens:
        """Identity translators for ``sites`` (default: cfg.layers' cfg.site_kind) of ``model``."""
        _require_head(model)
        cfg = cfg or TunedLensConfig()
        sites = list(sites) if sites is not None else resid_sites(model, cfg.layers, cfg.site_kind)
        model.check_sites(sites)
        return cls(sites, model.adapter.d_model, model.name, cfg)

    def has(self, site: str) -> bool:
        return site in self.sites

    def check_model(self, model: Model) -> None:
        if model.adapter.d_model != self.d_model:
            raise ValueError(f"the tuned lens was trained for d_model={self.d_model} ({self.model_name or '?'}); "
                             f"{model.name} has d_model={model.adapter.d_model}")

    def translate(self, site: str, h: Tensor) -> Tensor:
        """``h @ W_site + b_site`` (in the translator's dtype/device, returned in ``h``'s)."""
        if site not in self.sites:
            raise KeyError(f"the tuned lens has no translator for {site!r}; it has {self.sites}")
        k = self._key(site)
        W, b = self.weight[k], self.bias[k]
        return (h.to(W.dtype).to(W.device) @ W + b).to(h.dtype)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write an ``actlab.tuned_lens`` artifact folder (cfg.json + weights.safetensors)."""
        from actlab.artifact import save_artifact

        tensors = {}
        for s in self.sites:
            tensors[f"{s}.weight"] = self.weight[self._key(s)].detach()
            tensors[f"{s}.bias"] = self.bias[self._key(s)].detach()
        config = {"model": self.model_name, "d_model": self.d_model, "sites": self.sites, "train": asdict(self.cfg),
                  "metrics": self.metrics}
        return save_artifact(folder, KIND, config, tensors)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None) -> TunedLens:
        """Load a folder written by ``save`` (wrong kind, missing/corrupt/non-finite tensors: ArtifactError)."""
        from actlab.artifact import load_artifact

        art = load_artifact(folder, KIND, device=device)
        c = art.config
        lens = cls(c["sites"], c["d_model"], c.get("model", ""), TunedLensConfig(**c.get("train", {})))
        with torch.no_grad():
            for s in lens.sites:
                lens.weight[cls._key(s)].copy_(art.tensors[f"{s}.weight"])
                lens.bias[cls._key(s)].copy_(art.tensors[f"{s}.bias"])
        lens.metrics = c.get("metrics", {})
        return lens.to(device) if device is not None else lens


@contextlib.contextmanager
def _frozen_readout(model: Model) -> Iterator[None]:
    """Gradients flow through the final norm and unembedding to the translators, not into the model's weights."""
    ad = model.adapter
    params = [p for m in (ad.final_norm, ad.unembed) for p in m.parameters()]
    old = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(params, old):
            p.requires_grad_(r)


@torch.no_grad()
def _tokens_from_texts(model: Model, texts: Sequence[str], sites: list[str], final: str, cfg: TunedLensConfig
                       ) -> dict[str, Tensor]:
    """``{site: [n_tokens, d]}`` for the lens sites and the final residual, from packed contexts."""
    from actlab.data import pack_contexts

    packed = pack_contexts(model.tokenizer, list(texts), cfg.context_length, seed=cfg.seed,
                           max_contexts=cfg.max_contexts)
    want = list(dict.fromkeys([*sites, final]))
    out: dict[str, list[Tensor]] = {s: [] for s in want}
    bs = max(1, 4096 // cfg.context_length)
    for i in range(0, len(packed), bs):
        ids = packed.input_ids[i:i + bs]
        acts = model.record({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, want)
        for s in want:
            out[s].append(acts[s].reshape(-1, acts[s].shape[-1]).float().cpu())
    return {s: torch.cat(v) for s, v in out.items()}


def _tokens_from_store(store: ActivationStore, sites: list[str], final: str, cfg: TunedLensConfig
                       ) -> dict[str, Tensor]:
    want = list(dict.fromkeys([*sites, final]))
    missing = [s for s in want if s not in store.sites]
    if missing:
        raise KeyError(f"the activation store holds {store.sites}, not {missing}: a tuned lens trained from a store "
                       f"needs each lens site and the last block's {final.split('.', 2)[-1]} ({final}, its target)")
    n = min(len(store), cfg.max_contexts * cfg.context_length)
    g = torch.Generator().manual_seed(cfg.seed)
    rows = torch.randperm(len(store), generator=g)[:n].sort().values
    return {s: store.read(s, rows, dtype=torch.float32) for s in want}


def _kl(model: Model, lens: TunedLens, site: str, h: Tensor, target_logits: Tensor) -> Tensor:
    return kl_final_lens(target_logits, readout(model, lens.translate(site, h))).mean()


@torch.no_grad()
def _eval_kl(model: Model, lens: TunedLens, data: dict[str, Tensor], final: str, idx: Tensor,
             identity: bool = False) -> dict[str, float]:
    out = {}
    dev = next(model.adapter.unembed.parameters()).device
    for s in lens.sites:
        tot = 0.0
        for j in range(0, len(idx), 256):
            b = idx[j:j + 256]
            tgt = readout(model, data[final][b].to(dev))
            h = data[s][b].to(dev)
            lg = readout(model, h) if identity else readout(model, lens.translate(s, h))
            tot += float(kl_final_lens(tgt, lg).sum())
        out[s] = tot / max(1, len(idx))
    return out


def train_tuned_lens(model: Model, data: Sequence[str] | ActivationStore, cfg: TunedLensConfig | None = None, *,
                     sites: Sequence[str] | None = None, out: str | Path | None = None,
                     progress: bool = False) -> TunedLens:
    """Train translators for ``sites`` (default cfg.layers' cfg.site_kind) on texts or an activation store.

    Loss per step: sum over sites of mean over sampled tokens of KL(final || readout(translate(h))). Reports, on
    held-out tokens, the mean KL of the logit lens and of the trained lens per site in ``lens.metrics``. With
    ``out``, the folder is locked while training and the lens saved there at the end."""
    cfg = cfg or TunedLensConfig()
    _require_head(model)
    lens = TunedLens.for_model(model, sites, cfg)
    final = f"blocks.{model.adapter.n_layers - 1}.resid_post"
    if out is not None:
        from actlab.artifact import folder_lock

        with folder_lock(out, what="training a tuned lens"):
            _train(model, lens, data, final, cfg, progress)
            lens.save(out)
        return lens
    _train(model, lens, data, final, cfg, progress)
    return lens


def _train(model: Model, lens: TunedLens, data: Any, final: str, cfg: TunedLensConfig, progress: bool) -> None:
    if isinstance(data, str) or (isinstance(data, Sequence) and data and isinstance(data[0], str)):
        tokens = _tokens_from_texts(model, [data] if isinstance(data, str) else data, lens.sites, final, cfg)
    elif hasattr(data, "read") and hasattr(data, "sites"):
        tokens = _tokens_from_store(data, lens.sites, final, cfg)
    else:
        raise TypeError(f"train_tuned_lens reads texts (a list of str) or an ActivationStore; got {type(data).__name__}")
    n = next(iter(tokens.values())).shape[0]
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=g)
    n_eval = int(n * cfg.eval_fraction)
    ev, tr = perm[:n_eval], perm[n_eval:]
    if len(tr) == 0:
        raise ValueError(f"no training tokens: {n} tokens with eval_fraction={cfg.eval_fraction}")
    dev = next(model.adapter.unembed.parameters()).device
    lens.to(dev)
    params = list(lens.parameters())
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)
    eye = torch.eye(lens.d_model, device=dev)
    history = []
    it = range(cfg.steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="tuned lens")
    with _frozen_readout(model):
        for step in it:
            b = tr if cfg.batch_tokens >= len(tr) else tr[torch.randint(len(tr), (cfg.batch_tokens,), generator=g)]
            with torch.no_grad():
                tgt = readout(model, tokens[final][b].to(dev)).float()
            opt.zero_grad(set_to_none=True)
            loss = sum(_kl(model, lens, s, tokens[s][b].to(dev), tgt) for s in lens.sites)
            if cfg.weight_decay:
                loss = loss + cfg.weight_decay * sum((lens.weight[k] - eye).pow(2).sum() + lens.bias[k].pow(2).sum()
                                                     for k in lens.weight)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"tuned lens loss became {lv} at step {step}; lower lr ({cfg.lr})")
            history.append(lv)
    lens.metrics = {"train_tokens": len(tr), "eval_tokens": int(n_eval), "loss_first": history[:1],
                    "loss_last": history[-1:]}
    if n_eval:
        lens.metrics["eval_kl_logit_lens"] = _eval_kl(model, lens, tokens, final, ev, identity=True)
        lens.metrics["eval_kl_tuned_lens"] = _eval_kl(model, lens, tokens, final, ev)
    log.info("tuned lens metrics: %s", lens.metrics)


__all__ = ["KIND", "TunedLens", "TunedLensConfig", "train_tuned_lens"]
