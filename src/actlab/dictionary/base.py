"""Shared base of every dictionary: config, parameters, encode/decode/forward, save/load (an actlab artifact).

One layout for all architectures (rows are latents): ``W_enc [n, d_in]``, ``b_enc [n]``, ``W_dec [n, d_out]``,
``b_dec [d_out]``; SAEs centre their input with ``b_dec`` (tied), transcoders with their own ``b_pre [d_in]``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "dictionary"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "dictionary.safetensors"
ARCHS: dict[str, type[Dictionary]] = {}
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")


def register_arch(cls):
    """Class decorator: make an architecture loadable by its ``arch`` name."""
    ARCHS[cls.arch] = cls
    return cls


@dataclass
class DictConfig:
    """Architecture and provenance of a dictionary (saved as ``cfg.json``)."""

    arch: str = "topk"
    """topk | batchtopk | jumprelu | relu | gated | gsae (transcoders: any of them with ``d_out``/``site_out``)."""
    d_in: int = 0
    """Input width (the site's last dimension)."""
    d_sae: int = 0
    """Number of latents (0: ``expansion * d_in``)."""
    expansion: int = 16
    """Latents per input dimension, used when ``d_sae`` is 0."""
    d_out: int | None = None
    """Output width for transcoders (None: an autoencoder, ``d_out = d_in``)."""
    k: int = 32
    """Active latents per token (topk, batchtopk, gsae)."""
    l1_coef: float = 5.0
    """Sparsity coefficient: L1 (relu, gated, decoder-norm weighted) or L0 (jumprelu), on normalised data."""
    jump_bandwidth: float = 0.05
    """JumpReLU straight-through kernel width (in normalised activation units)."""
    jump_init_threshold: float = 0.1
    """JumpReLU initial threshold."""
    skip: bool = False
    """Transcoders: add a linear skip connection ``x @ W_skip``."""
    gsae_beta: float = 1.0
    """g-SAE: weight of the downstream-gradient term in latent selection (0 = plain TopK)."""
    fused: bool = True
    """Use the sparse fused kernels (TopK family); False runs the dense eager reference."""
    site: str = ""
    """Site the dictionary reads (e.g. blocks.3.resid_post, or blocks.3.mlp_in for a transcoder)."""
    site_out: str = ""
    """Transcoders: the site it predicts (e.g. blocks.3.mlp_out)."""
    model: str = ""
    """Model name the activations came from."""
    dtype: str = "fp32"
    """Parameter dtype."""
    normalize_activations: str = "none"
    """Per-token input normalisation at inference, as SAELens defines it: 'none', 'constant_norm_rescale' (x scaled
    to norm sqrt(d_in), the output scaled back) or 'layer_norm' (x standardised, the output de-standardised).
    Loaded SAELens SAEs only; the trainer folds its own (constant) scaling into the weights."""
    train: dict[str, Any] = field(default_factory=dict)
    """Training provenance: tokens, steps, final metrics (filled by the trainer)."""

    def __post_init__(self):
        if self.d_in <= 0:
            raise ValueError(f"DictConfig.d_in must be > 0, got {self.d_in}")
        if self.d_sae <= 0:
            self.d_sae = self.expansion * self.d_in
        else:                     # d_sae given: the expansion shown must match it (0: not a whole multiple)
            self.expansion = self.d_sae // self.d_in if self.d_sae % self.d_in == 0 else 0
        if self.arch in ("topk", "batchtopk", "gsae") and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be in 1..d_sae={self.d_sae}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"normalize_activations must be one of {NORMALIZATIONS}; got "
                             f"{self.normalize_activations!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; available: {sorted(ARCHS)}")

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None

    @property
    def out_dim(self) -> int:
        return self.d_out if self.d_out is not None else self.d_in

    @classmethod
    def from_dict(cls, d: dict) -> DictConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class StepOut(NamedTuple):
    """What one training forward returns (all in normalised units)."""

    loss: torch.Tensor
    """Scalar to minimise."""
    recon: torch.Tensor
    """[B, d_out] reconstruction (or prediction)."""
    fired: torch.Tensor
    """[n] bool: latents active on at least one row of the batch."""
    l0: float
    """Mean active latents per row."""
    extra: dict[str, float]
    """Other scalars to log (aux loss, sparsity loss, ...)."""


class Dictionary(nn.Module):
    """Base class: subclasses implement ``encode`` (dense acts ``[..., n]``) and ``step`` (training loss)."""

    arch: ClassVar[str] = ""
    normalize_decoder: ClassVar[bool] = True   # keep decoder rows unit norm during training

    def __init__(self, cfg: DictConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        n, d, o = cfg.d_sae, cfg.d_in, cfg.out_dim
        from actlab.utils import parse_dtype
        dt = parse_dtype(cfg.dtype)
        g = generator
        W = torch.randn(n, o, generator=g, dtype=torch.float32)
        W = W / W.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W.to(dt))
        if cfg.is_transcoder:
            enc = torch.randn(n, d, generator=g) / math.sqrt(d)
            self.W_enc = nn.Parameter(enc.to(dt))
            self.b_pre = nn.Parameter(torch.zeros(d, dtype=dt))
        else:
            self.W_enc = nn.Parameter(W.clone().to(dt))
        self.b_enc = nn.Parameter(torch.zeros(n, dtype=dt))
        self.b_dec = nn.Parameter(torch.zeros(o, dtype=dt))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(d, o, dtype=dt))

    # -- shapes and the shared affine maps ---------------------------------------------------------
    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def centre_bias(self) -> torch.Tensor:
        """The bias subtracted from inputs before encoding (tied ``b_dec`` for SAEs)."""
        return self.b_pre if self.cfg.is_transcoder else self.b_dec

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Right width, parameter dtype, and the configured per-token normalisation applied."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"input has last dimension {x.shape[-1]} but the dictionary expects d_in="
                             f"{self.cfg.d_in} (site {self.cfg.site or '?'})")
        x = x.to(self.W_enc.dtype)
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            return x * (self.cfg.d_in ** 0.5 / x.norm(dim=-1, keepdim=True))
        if mode == "layer_norm":
            xc = x - x.mean(-1, keepdim=True)
            return xc / (xc.std(-1, keepdim=True) + 1e-5)
        return x

    def _denormalize(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Undo ``check_input``'s per-token normalisation on an output (SAELens' run_time_activation_norm_fn_out)."""
        mode = self.cfg.normalize_activations
        x = x.to(out.dtype)
        if mode == "constant_norm_rescale":
            return out / (self.cfg.d_in ** 0.5 / x.norm(dim=-1, keepdim=True))
        if mode == "layer_norm":
            mu = x.mean(-1, keepdim=True)
            return out * (x - mu).std(-1, keepdim=True) + mu
        return out

    def encode_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dense latent acts, reconstruction or prediction in the input's units) for ``x [..., d_in]``."""
        acts = self.encode(x)
        return acts, self._denormalize(self.decode(acts, self.check_input(x)), x)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.centre_bias()) @ self.W_enc.t() + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations ``[..., n]``."""
        raise NotImplementedError

    def decode(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        out = acts @ self.W_dec + self.b_dec
        if self.cfg.skip:
            if x is None:
                raise ValueError("a skip transcoder's decode needs the input x")
            out = out + x.to(out.dtype) @ self.W_skip
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (SAE) or prediction (transcoder) of ``x [..., d_in]``."""
        return self.encode_decode(x)[1]

    def skip_term(self, x: torch.Tensor) -> torch.Tensor | float:
        return x @ self.W_skip if self.cfg.skip else 0.0

    # -- training --------------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor, **kw) -> StepOut:
        """Training loss on a batch ``x [B, d_in]`` with target ``y [B, d_out]`` (y is x for an SAE)."""
        raise NotImplementedError

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Data-dependent initialisation: output bias at the target mean (geometric-median stand-in)."""
        self.b_dec.copy_(y.mean(0).to(self.b_dec.dtype))
        if self.cfg.is_transcoder:
            self.b_pre.copy_(x.mean(0).to(self.b_pre.dtype))

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Remove the gradient component parallel to each decoder row (keeps the unit-norm constraint tight)."""
        if self.normalize_decoder and self.W_dec.grad is not None:
            W, g = self.W_dec, self.W_dec.grad
            # on CPU in cache-sized row blocks: the dot and the update then read each block from cache (2x faster)
            step = 512 if W.device.type == "cpu" else W.shape[0]
            for lo in range(0, W.shape[0], step):
                gb, Wb = g[lo:lo + step], W[lo:lo + step]
                gb.addcmul_((gb * Wb).sum(1, keepdim=True), Wb, value=-1.0)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.normalize_decoder:
            self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min_(1e-8))

    @torch.no_grad()
    def fold_scale(self, s_in: float, s_out: float) -> None:
        """Absorb input/output scalings (trained on ``x*s_in``, ``y*s_out``) so the model takes raw activations."""
        self.W_enc.mul_(s_in)
        if self.cfg.is_transcoder:
            self.b_pre.div_(s_in)
        self.W_dec.div_(s_out)
        self.b_dec.div_(s_out)
        if self.cfg.skip:
            self.W_skip.mul_(s_in / s_out)
        self._fold_extra(s_in, s_out)

    def _fold_extra(self, s_in: float, s_out: float) -> None:
        """Architecture-specific parameters that scale with the input (thresholds live in latent units)."""

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path, extra_meta: dict | None = None) -> Path:
        """Write ``cfg.json`` + ``dictionary.safetensors`` into the folder ``path`` (an actlab artifact of kind
        'dictionary', written atomically; NaN/Inf weights are refused)."""
        from actlab.artifact import save_artifact
        tensors = {k: v.detach() for k, v in self.state_dict().items()}
        config = asdict(self.cfg)
        if extra_meta:
            config.update(extra_meta)
        return save_artifact(path, KIND, config, tensors, version=FORMAT_VERSION, tensors_file=WEIGHTS_FILE,
                             cfg_file=CFG_FILE, metadata={"format": "actlab-dictionary"})


def describe(model: Dictionary) -> dict[str, Any]:
    """A dictionary's config (training provenance included) and its parameter count, JSON-ready."""
    info = asdict(model.cfg)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return info


def build(cfg: DictConfig, seed: int = 0) -> Dictionary:
    """Instantiate the architecture named in ``cfg`` with a seeded initialisation."""
    g = torch.Generator().manual_seed(0x5AE0_0000 + seed)   # offset: never the same stream as data seeded 0
    return ARCHS[cfg.arch](cfg, generator=g)


def load(path: str | Path, device: str | torch.device | None = None, *, site: str | None = None,
         site_out: str | None = None, hookpoint: str | None = None,
         norm_scaling_factor: float | None = None) -> Dictionary:
    """Load an actlab dictionary folder; SAELens / sparsify folders are detected and converted.

    ``site`` / ``site_out`` override the sites named in the folder (peer hook names are mapped to actlab sites
    where possible); ``hookpoint`` picks one SAE of a sparsify folder holding several; ``norm_scaling_factor``
    folds a SAELens ``expected_average_only_in`` input scaling (from the release's pretrained_saes.yaml)."""
    from actlab.artifact import ArtifactMissingError, load_artifact
    path = Path(path)
    if not path.exists():
        raise ArtifactMissingError(f"no dictionary at {path}")
    if not (path / WEIGHTS_FILE).exists():
        from actlab.dictionary.formats import load_foreign
        model = load_foreign(path, device=device, hookpoint=hookpoint, norm_scaling_factor=norm_scaling_factor)
    else:   # legacy: folders written before the artifact module (cfg.json without the "artifact" block)
        art = load_artifact(path, KIND, version=FORMAT_VERSION, tensors_file=WEIGHTS_FILE, cfg_file=CFG_FILE,
                            legacy=True)
        cfg = DictConfig.from_dict(art.config)
        model = ARCHS[cfg.arch](cfg)
        model.load_state_dict(art.tensors)
        model = model.to(device) if device is not None else model
    if site:
        model.cfg.site = site
    if site_out:
        if not model.cfg.is_transcoder:
            raise ValueError(f"site_out={site_out!r} given, but {path} holds an SAE, not a transcoder")
        model.cfg.site_out = site_out
    return model
