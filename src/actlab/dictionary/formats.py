"""Peer formats, so dictionaries move between tools (read from local folders only, safetensors + JSON).

SAELens folder: ``cfg.json`` (architecture, d_in, d_sae, apply_b_dec_to_input, metadata.hook_name, k, ...) +
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_out]``, ``b_dec``, plus
``threshold`` for jumprelu, ``b_gate``/``r_mag``/``b_mag`` for gated, ``W_skip [d_out, d_in]`` for skip transcoders).
sparsify folder (one per hookpoint): ``cfg.json`` (k, num_latents, d_in, transcode, skip_connection) +
``sae.safetensors`` (``encoder.weight [n, d]``, ``encoder.bias``, ``W_dec [n, d]``, ``b_dec``, ``W_skip``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from actlab.dictionary.base import DictConfig, Dictionary, build
from actlab.utils import atomic_write_bytes, atomic_write_json, dtype_name

log = logging.getLogger(__name__)

SAELENS_CFG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
_TO_SAELENS = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu", "batchtopk": "jumprelu",
               "gated": "gated", "gsae": "topk"}


def detect(path: Path) -> str:
    """'actlab' | 'saelens' | 'sparsify' | 'sparsify-multi' for a folder, else a clear error."""
    if (path / "dictionary.safetensors").exists():
        return "actlab"
    if (path / SAELENS_WEIGHTS).exists():
        return "saelens"
    if (path / SPARSIFY_WEIGHTS).exists():
        return "sparsify"
    if any((p / SPARSIFY_WEIGHTS).exists() for p in path.iterdir() if p.is_dir()):
        return "sparsify-multi"
    raise ValueError(f"{path} holds no known dictionary: expected dictionary.safetensors (actlab), "
                     f"{SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify, maybe in per-hookpoint folders)")


def load_foreign(path: str | Path, device=None, hookpoint: str | None = None) -> Dictionary:
    path = Path(path)
    kind = detect(path)
    if kind == "saelens":
        m = load_saelens(path)
    elif kind == "sparsify":
        m = load_sparsify(path)
    elif kind == "sparsify-multi":
        subs = sorted(p.name for p in path.iterdir() if (p / SPARSIFY_WEIGHTS).exists())
        if hookpoint is None:
            if len(subs) != 1:
                raise ValueError(f"{path} holds sparsify SAEs for several hookpoints {subs}; name one")
            hookpoint = subs[0]
        if hookpoint not in subs:
            raise KeyError(f"no hookpoint {hookpoint!r} in {path}; it holds {subs}")
        m = load_sparsify(path / hookpoint)
    else:
        from actlab.dictionary.base import load
        m = load(path)
    return m.to(device) if device is not None else m


def _set(model: Dictionary, tensors: dict[str, torch.Tensor]) -> Dictionary:
    with torch.no_grad():
        for k, v in tensors.items():
            p = getattr(model, k)
            if tuple(p.shape) != tuple(v.shape):
                raise ValueError(f"{k} has shape {list(v.shape)}, expected {list(p.shape)}")
            p.copy_(v.to(p.dtype))
    return model


# -- SAELens ---------------------------------------------------------------------------------------------
def load_saelens(path: str | Path) -> Dictionary:
    path = Path(path)
    cfg = json.loads((path / SAELENS_CFG).read_text())
    w = load_file(str(path / SAELENS_WEIGHTS))
    arch_in = cfg.get("architecture", "standard")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    d_out = cfg.get("d_out") if "transcoder" in arch_in else None
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated", "transcoder": "relu",
            "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu",
            "jumprelu_skip_transcoder": "jumprelu"}.get(arch_in)
    if arch is None:
        raise ValueError(f"SAELens architecture {arch_in!r} is not supported (supported: standard, topk, jumprelu, "
                         f"gated and the transcoder variants)")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"SAELens SAE uses normalize_activations={cfg['normalize_activations']!r}; fold it first "
                         f"(SAE.fold_activation_norm_scaling_factor) or export with 'none'")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError("rescale_acts_by_decoder_norm=True is not supported; fold the decoder norms first")
    meta = cfg.get("metadata") or {}
    dc = DictConfig(arch=arch, d_in=d_in, d_sae=d_sae, d_out=d_out, k=int(cfg.get("k", 32) or 32),
                    skip="W_skip" in w, site=meta.get("hook_name") or cfg.get("hook_name") or "",
                    model=meta.get("model_name") or cfg.get("model_name") or "",
                    dtype=dtype_name(w["W_enc"].dtype))
    m = build(dc)
    W_enc = w["W_enc"].t().contiguous()
    b_enc = w["b_enc"] if "b_enc" in w else w["b_gate"]
    b_dec = w["b_dec"]
    applies = bool(cfg.get("apply_b_dec_to_input", d_out is None))
    t = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": w["W_dec"], "b_dec": b_dec}
    if d_out is None and not applies:                 # actlab always centres an SAE's input with b_dec
        shift = W_enc @ b_dec                         # (x - b_dec) W_enc = x W_enc - shift: add it back
        t["b_enc"] = b_enc + shift
        if arch == "gated":                           # the magnitude path sees the same input, scaled
            w["b_mag"] = w["b_mag"] + w["r_mag"].exp() * shift
    if d_out is not None:
        t["b_pre"] = torch.zeros(d_in, dtype=W_enc.dtype)
    if "W_skip" in w:
        t["W_skip"] = w["W_skip"].t().contiguous()
    if arch == "jumprelu":
        t["log_threshold"] = w["threshold"].clamp_min(1e-12).log()
    if arch == "gated":
        t["r_mag"], t["b_mag"] = w["r_mag"], w["b_mag"]
    return _set(m, t)


def export_saelens(model: Dictionary, path: str | Path) -> Path:
    """Write a SAELens-loadable folder (``SAE.load_from_disk``)."""
    path = Path(path)
    c = model.cfg
    arch = _TO_SAELENS.get(c.arch)
    if arch is None:
        raise ValueError(f"architecture {c.arch!r} has no SAELens equivalent")
    W_enc, b_enc = model.W_enc.detach(), model.b_enc.detach()
    tensors = {"W_dec": model.W_dec.detach(), "b_dec": model.b_dec.detach()}
    cfg = {"d_in": c.d_in, "d_sae": c.d_sae, "dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"
                                                         }.get(c.dtype, "float32"),
           "device": "cpu", "apply_b_dec_to_input": not c.is_transcoder, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"model_name": c.model, "hook_name": c.site, "exported_by": "actlab"}}
    if c.is_transcoder:
        if arch not in ("standard", "jumprelu"):
            raise ValueError(f"SAELens has no {c.arch} transcoder; export it in sparsify format instead")
        b_enc = b_enc - W_enc @ model.b_pre.detach()        # fold actlab's input centring into the encoder bias
        arch = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}[arch]
        if c.skip:
            arch = arch.replace("transcoder", "skip_transcoder")
            tensors["W_skip"] = model.W_skip.detach().t()
        cfg["d_out"] = c.out_dim
        cfg["metadata"]["hook_name_out"] = c.site_out
    tensors["W_enc"] = W_enc.t()
    if arch in ("topk",):
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    if c.arch == "jumprelu":
        tensors["threshold"] = model.threshold.detach()
    if c.arch == "batchtopk":
        tensors["threshold"] = model.threshold.detach().expand(c.d_sae)
    if c.arch == "gated":
        tensors["b_gate"], tensors["r_mag"], tensors["b_mag"] = b_enc, model.r_mag.detach(), model.b_mag.detach()
    else:
        tensors["b_enc"] = b_enc
    cfg["architecture"] = arch
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / SAELENS_WEIGHTS, save({k: v.contiguous().cpu() for k, v in tensors.items()}))
    atomic_write_json(path / SAELENS_CFG, cfg)
    return path


# -- sparsify --------------------------------------------------------------------------------------------
def load_sparsify(path: str | Path) -> Dictionary:
    path = Path(path)
    cfg = json.loads((path / SPARSIFY_CFG).read_text())
    w = load_file(str(path / SPARSIFY_WEIGHTS))
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"sparsify activation {cfg.get('activation')!r} is not supported (only topk)")
    d_in = int(cfg["d_in"])
    n, d_out = w["W_dec"].shape
    transcode = bool(cfg.get("transcode", False))
    dc = DictConfig(arch="topk", d_in=d_in, d_sae=n, k=int(cfg["k"]), d_out=d_out if transcode else None,
                    skip="W_skip" in w, site=path.name, dtype=dtype_name(w["W_dec"].dtype))
    m = build(dc)
    t = {"W_enc": w["encoder.weight"], "b_enc": w["encoder.bias"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    if transcode:
        t["b_pre"] = torch.zeros(d_in, dtype=w["W_dec"].dtype)
    if "W_skip" in w:
        t["W_skip"] = w["W_skip"].t().contiguous()
    return _set(m, t)


def export_sparsify(model: Dictionary, path: str | Path) -> Path:
    """Write a sparsify ``SparseCoder.load_from_disk`` folder (TopK family only)."""
    path = Path(path)
    c = model.cfg
    if c.arch not in ("topk", "gsae"):
        raise ValueError(f"sparsify only holds TopK coders; {c.arch!r} cannot be exported to it")
    b_enc = model.b_enc.detach()
    if c.is_transcoder:
        b_enc = b_enc - model.W_enc.detach() @ model.b_pre.detach()
    tensors = {"encoder.weight": model.W_enc.detach(), "encoder.bias": b_enc, "W_dec": model.W_dec.detach(),
               "b_dec": model.b_dec.detach()}
    if c.skip:
        tensors["W_skip"] = model.W_skip.detach().t()
    cfg = {"activation": "topk", "expansion_factor": max(c.d_sae // c.d_in, 1), "normalize_decoder": True,
           "num_latents": c.d_sae, "k": c.k, "multi_topk": False, "skip_connection": c.skip,
           "transcode": c.is_transcoder, "d_in": c.d_in}
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / SPARSIFY_WEIGHTS, save({k: v.contiguous().cpu() for k, v in tensors.items()}))
    atomic_write_json(path / SPARSIFY_CFG, cfg)
    return path
