"""Steering directions from contrast data: mean difference (CAA), PC1 of paired differences (RepE), probe.

A ``Direction`` says where and how it was made (model, site, position rule, method, data hash, norms) and turns
itself into core interventions, so a saved vector can be replayed with ``actlab generate --intervention``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actlab.core import require_finite

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "steer.direction"
LEGACY_KIND = "actlab.direction"
METHODS = ("mean_diff", "pca", "probe")
POSITION_RULES = ("last", "mean", "post_inst", "response_mean")
CFG_FILE = "direction.json"
TENSOR_FILE = "direction.safetensors"


@dataclass
class ExtractConfig:
    """How to extract a direction from contrast data."""

    method: str = "mean_diff"
    """mean_diff (CAA), pca (first principal component of paired differences, RepE) or probe (logistic regression)."""
    position: str = "last"
    """Token positions read per example: last, mean (all real tokens), post_inst (chat template tokens after the
    instruction), response_mean (tokens of the completion; inputs are (prompt, completion) pairs)."""
    chat: bool = False
    """Wrap prompts in the model's chat template before tokenizing."""
    mask_massive: float | None = None
    """If set, zero the direction on channels whose mean |activation| exceeds this many times the median channel's
    (massive activations dominate naive difference-of-means)."""
    probe_l2: float = 1e-2
    """L2 penalty of the logistic-regression probe (on standardised inputs)."""
    batch_size: int = 16
    """Prompts per forward pass."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.position not in POSITION_RULES:
            raise ValueError(f"unknown position rule {self.position!r}; choose one of {POSITION_RULES}")
        if self.mask_massive is not None and self.mask_massive <= 1:
            raise ValueError(f"mask_massive={self.mask_massive} must be > 1 (a multiple of the median channel)")


@dataclass
class Direction:
    """A steering direction at one site. ``vector`` is raw (model units): adding it once moves the mean of the
    negative set to the mean of the positive set along the direction."""

    vector: torch.Tensor
    site: str
    model: str = ""
    method: str = "mean_diff"
    position: str = "last"
    data_hash: str = ""
    norms: dict = field(default_factory=dict)
    """vector (L2 norm of vector), resid_median (median per-token activation norm at the site on the data)."""
    masked_channels: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.vector, torch.Tensor) or not self.vector.is_floating_point():
            raise TypeError(f"Direction at {self.site!r}: vector must be a float tensor, got "
                            f"{type(self.vector).__name__} {getattr(self.vector, 'dtype', '')}")
        require_finite(f"Direction at {self.site!r}: vector", self.vector)

    @property
    def unit(self) -> torch.Tensor:
        return self.vector / self.vector.norm().clamp_min(1e-12)

    def scaled(self, alpha: float, scale: str = "raw") -> torch.Tensor:
        """``alpha`` times the vector in units: raw (the vector itself), unit (norm 1) or resid (the median
        activation norm at the site, so alpha=0.5 adds half a typical residual)."""
        require_finite(f"strength alpha for the direction at {self.site!r}", alpha)
        require_finite(f"Direction at {self.site!r}: vector", self.vector)
        if scale == "raw":
            return alpha * self.vector
        if scale == "unit":
            return alpha * self.unit
        if scale == "resid":
            r = self.norms.get("resid_median")
            if not r:
                raise ValueError("scale='resid' needs norms['resid_median'] (extract the direction with actlab)")
            return alpha * r * self.unit
        raise ValueError(f"unknown scale {scale!r}; use raw, unit or resid")

    def to_interventions(self, alpha: float | torch.Tensor = 1.0, *, mode: str = "add", scale: str = "raw",
                         positions="all") -> list[tuple[str, object]]:
        """Core interventions applying this direction: mode add | norm_add (norm-preserving, GrAInS) |
        prompt_add (prompt tokens only) | ablate (project out here) | ablate_all (project out at every layer).
        ``alpha`` may be a ``[B]`` tensor: one strength per batch row (the add modes)."""
        from actlab.core import Ablate, Add
        from actlab.steer.apply import NormPreservingAdd, PromptAdd, ablation_sites

        vec = self.scaled(1.0, scale)
        alpha = alpha.float() if isinstance(alpha, torch.Tensor) else float(alpha)
        require_finite(f"strength alpha for the direction at {self.site!r}", alpha)
        if mode == "add":
            return [(self.site, Add(vec.clone(), alpha=alpha, positions=positions))]
        if mode == "norm_add":
            return [(self.site, NormPreservingAdd(vec.clone(), alpha=alpha, positions=positions))]
        if mode == "prompt_add":
            return [(self.site, PromptAdd(vec.clone(), alpha=alpha, positions=positions))]
        if mode == "ablate":
            return [(self.site, Ablate(self.unit.clone(), positions=positions))]
        if mode == "ablate_all":
            n = self.meta.get("n_layers")
            if not n:
                raise ValueError("mode='ablate_all' needs meta['n_layers'] (set by extract)")
            return [(s, Ablate(self.unit.clone(), positions=positions)) for s in ablation_sites(int(n))]
        raise ValueError(f"unknown mode {mode!r}; use add, norm_add, prompt_add, ablate or ablate_all")

    def save_interventions(self, path: str | os.PathLike, alpha: float = 1.0, **kw) -> Path:
        """Write an interventions file (JSON + safetensors) that ``actlab generate --intervention`` replays."""
        from actlab.core import save_interventions

        meta = {"direction": {k: v for k, v in self._json().items() if k != "format_version"}, "alpha": alpha, **kw}
        return save_interventions(path, self.to_interventions(alpha, **kw), model=self.model, meta=meta)

    # -- storage ------------------------------------------------------------------------------------------
    def _json(self) -> dict:
        """The JSON-able fields (everything but the vector)."""
        d = asdict(self)
        d.pop("vector")
        return d

    def save(self, folder: str | os.PathLike) -> Path:
        """Folder with direction.json + direction.safetensors (an ``actlab.artifact`` of kind ``steer.direction``,
        written atomically, tensors first and the JSON last); a NaN/Inf vector is refused."""
        from actlab.artifact import save_artifact

        require_finite(f"Direction at {self.site!r}: vector (not saved to {folder})", self.vector)
        return save_artifact(folder, KIND, self._json(), {"vector": self.vector.detach().float().cpu()},
                             version=FORMAT_VERSION, cfg_file=CFG_FILE, tensors_file=TENSOR_FILE)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Direction:
        """Read a folder written by :meth:`save` (or by actlab before artifacts: a ``direction.json`` with
        ``kind: actlab.direction``); refuses a NaN/Inf vector, a wrong kind or a newer format."""
        from actlab.artifact import ArtifactError, ArtifactMissingError, load_artifact

        folder = Path(folder)
        if not (folder / CFG_FILE).exists():
            raise ArtifactMissingError(f"{folder} holds no {CFG_FILE}; is it a direction folder written by "
                                       f"Direction.save / actlab steer extract?")
        try:
            art = load_artifact(folder, KIND, version=FORMAT_VERSION, cfg_file=CFG_FILE, tensors_file=TENSOR_FILE,
                                legacy=LEGACY_KIND)
        except ArtifactError as e:
            if "NaN/Inf" in str(e):  # name what it is, keep the artifact's file + tensor
                raise ArtifactError(f"{e} (a direction vector contains NaN/Inf; refusing it)") from None
            raise
        js = dict(art.config)
        if art.version == 0:  # written before actlab.artifact: top-level kind and format_version
            if js.pop("format_version", 0) > 1:
                raise ArtifactError(f"{folder / CFG_FILE} has a format_version this actlab does not read")
            js.pop("kind", None)
        if "vector" not in art.tensors:
            raise ArtifactError(f"{folder / TENSOR_FILE} holds no tensor 'vector' (has {sorted(art.tensors)})")
        known = {f.name for f in fields(cls)} - {"vector"}
        unknown = sorted(set(js) - known)
        if unknown:
            raise ArtifactError(f"{folder / CFG_FILE} has unknown direction fields {unknown}; written by a newer "
                                f"actlab?")
        vec = art.tensors["vector"]
        require_finite(f"{folder / TENSOR_FILE}: vector", vec)
        return cls(vector=vec, **js)


# -- tensor-level estimators -------------------------------------------------------------------------------
def massive_channels(acts_nd: torch.Tensor, factor: float) -> list[int]:
    """Channels whose mean |activation| is more than ``factor`` times the median channel's."""
    mag = acts_nd.abs().mean(0)
    return torch.nonzero(mag > factor * mag.median().clamp_min(1e-12)).flatten().tolist()


def logistic_probe(x_nd: torch.Tensor, y_n: torch.Tensor, l2: float = 1e-2, steps: int = 200) -> torch.Tensor:
    """L2-regularised logistic regression (LBFGS on standardised inputs); returns the weight in input units."""
    x = x_nd.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
    y = y_n.double()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (w.detach() / sd).float()


def direction_from_acts(pos_nd: torch.Tensor, neg_nd: torch.Tensor, method: str = "mean_diff", *,
                        paired: bool = True, mask: list[int] | None = None, probe_l2: float = 1e-2) -> torch.Tensor:
    """Raw direction from positive and negative activations ``[n, d]``.

    All methods return a vector whose projection equals the mean difference's (so strengths are comparable
    across methods); pca uses the uncentred PC1 of paired differences (sign aligned with the mean difference).
    """
    if pos_nd.dim() != 2 or neg_nd.dim() != 2 or pos_nd.shape[1] != neg_nd.shape[1]:
        raise ValueError(f"pos and neg activations must be [n, d] with the same d; got {list(pos_nd.shape)} and "
                         f"{list(neg_nd.shape)}")
    if len(pos_nd) < 1 or len(neg_nd) < 1:
        raise ValueError("need at least one positive and one negative example")
    require_finite("positive activations", pos_nd)
    require_finite("negative activations", neg_nd)
    pos, neg = pos_nd.double(), neg_nd.double()
    if mask:
        pos, neg = pos.clone(), neg.clone()
        pos[:, mask] = 0
        neg[:, mask] = 0
    md = pos.mean(0) - neg.mean(0)
    if method == "mean_diff":
        v = md
    elif method == "pca":
        if paired and len(pos) == len(neg):
            diffs = pos - neg
        else:  # unpaired: differences of every positive to the negative mean and vice versa
            diffs = torch.cat([pos - neg.mean(0), pos.mean(0) - neg])
        if len(diffs) < 2:
            raise ValueError("method 'pca' needs at least 2 examples")
        u = torch.linalg.svd(diffs, full_matrices=False).Vh[0]
        v = u * torch.sign(u @ md) if float(u @ md) != 0 else u
    elif method == "probe":
        x = torch.cat([pos, neg])
        y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        v = logistic_probe(x, y, probe_l2).double()
        if mask:
            v[mask] = 0
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if method != "mean_diff":  # rescale the unit direction to the mean difference's projection
        u = v / v.norm().clamp_min(1e-12)
        v = u * (md @ u)
    return v.float()


# -- model-level extraction --------------------------------------------------------------------------------
def data_hash(*parts) -> str:
    """Stable short hash of the contrast data and settings."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _texts_and_masks(model: Model, items: Sequence, position: str, chat: bool):
    """Tokenize items; return (enc, [b, p] bool mask of positions to average) with left padding respected."""
    from actlab.steer.refusal import instruction_positions

    if position == "response_mean":
        if not all(isinstance(x, (tuple, list)) and len(x) == 2 for x in items):
            raise ValueError("position='response_mean' needs (prompt, completion) pairs as inputs")
        prompts = [p for p, _ in items]
        if chat:
            prompts = [model.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                           add_generation_prompt=True) for p in prompts]
        full = [p + c for p, c in zip(prompts, [c for _, c in items])]
        enc = model.tokenize(full, add_special_tokens=not chat)
        n_prompt = [len(model.tokenizer(p, add_special_tokens=not chat)["input_ids"]) for p in prompts]
    else:
        if not all(isinstance(x, str) for x in items):
            raise ValueError(f"position={position!r} needs plain text prompts")
        enc = model.tokenize(list(items), chat=chat)
    am = enc["attention_mask"].bool()
    real_pos = am.long().cumsum(1) - 1  # position counted from the first real token
    length = am.sum(1)
    if position == "last":
        mask = am & (real_pos == (length - 1)[:, None])
    elif position == "mean":
        mask = am
    elif position == "post_inst":
        if not chat:
            raise ValueError("position='post_inst' needs chat=True (the template tokens after the instruction)")
        t_inst, _ = instruction_positions(model, list(items))
        mask = am & (real_pos > torch.as_tensor(t_inst, device=am.device)[:, None])
    else:  # response_mean
        mask = am & (real_pos >= torch.as_tensor(n_prompt, device=am.device)[:, None])
    if not bool(mask.any(1).all()):
        raise ValueError(f"position rule {position!r} selects no token for some inputs")
    return enc, mask


def collect(model: Model, items: Sequence, sites: list[str], position: str = "last", chat: bool = False,
            batch_size: int = 16) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-example activations ``{site: [n, d]}`` pooled by the position rule, and per-token norms ``{site: [m]}``."""
    out: dict[str, list] = {s: [] for s in sites}
    norms: dict[str, list] = {s: [] for s in sites}
    for i in range(0, len(items), batch_size):
        enc, mask = _texts_and_masks(model, items[i:i + batch_size], position, chat)
        acts = model.record(enc, sites=sites, dtype=torch.float32)
        for s in sites:
            a = acts[s]
            a = a.reshape(*a.shape[:2], -1)
            w = mask.to(a.dtype)[..., None]
            out[s].append((a * w).sum(1) / w.sum(1))
            norms[s].append(a[enc["attention_mask"].bool()].norm(dim=-1))
    return {s: torch.cat(v) for s, v in out.items()}, {s: torch.cat(v) for s, v in norms.items()}


def extract(model: Model, positive: Sequence, negative: Sequence, sites: str | list[str], cfg: ExtractConfig | None = None,
            **kw) -> dict[str, Direction]:
    """Directions at each site from positive vs negative prompts (pairs when the lists align, for pca).

    ``positive``/``negative``: texts, or (prompt, completion) pairs for position='response_mean'.
    """
    cfg = cfg or ExtractConfig(**kw)
    sites = [sites] if isinstance(sites, str) else list(sites)
    model.check_sites(sites)
    if not positive or not negative:
        raise ValueError("need non-empty positive and negative example lists")
    pa, pn = collect(model, list(positive), sites, cfg.position, cfg.chat, cfg.batch_size)
    na, nn_ = collect(model, list(negative), sites, cfg.position, cfg.chat, cfg.batch_size)
    h = data_hash(list(positive), list(negative), asdict(cfg))
    res = {}
    for s in sites:
        mask = massive_channels(torch.cat([pa[s], na[s]]), cfg.mask_massive) if cfg.mask_massive else []
        if mask:
            log.info("%s: masking %d massive channel(s) %s", s, len(mask), mask[:8])
        for what, acts in (("positive", pa[s]), ("negative", na[s])):
            require_finite(f"extract: the {what} examples' activations at {s!r} (check the model dtype and any "
                           f"active interventions)", acts)
        v = direction_from_acts(pa[s], na[s], cfg.method, paired=len(positive) == len(negative), mask=mask,
                                probe_l2=cfg.probe_l2)
        resid = float(torch.cat([pn[s], nn_[s]]).median())
        res[s] = Direction(vector=v, site=s, model=model.name, method=cfg.method, position=cfg.position,
                           data_hash=h, norms={"vector": float(v.norm()), "resid_median": resid},
                           masked_channels=mask,
                           meta={"n_pos": len(positive), "n_neg": len(negative), "chat": cfg.chat,
                                 "n_layers": model.n_layers, "revision": model.revision})
    return res
