"""Peer formats, so dictionaries move between tools (local folders only; files through ``actlab.artifact``).

SAELens folder: ``cfg.json`` (architecture, d_in, d_sae, apply_b_dec_to_input, metadata.hook_name, k, ...) +
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_out]``, ``b_dec``, plus
``threshold`` for jumprelu, ``b_gate``/``r_mag``/``b_mag`` for gated, ``W_skip [d_out, d_in]`` for skip transcoders).
sparsify folder (one per hookpoint): ``cfg.json`` (k, num_latents, d_in, transcode, skip_connection) +
``sae.safetensors`` (``encoder.weight [n, d]``, ``encoder.bias``, ``W_dec [n, d]``, ``b_dec``, ``W_skip``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from actlab.artifact import atomic_write_json, load_tensors, read_json, save_tensors
from actlab.dictionary.base import DictConfig, Dictionary, build
from actlab.dictionary.hooknames import to_site, to_sparsify, to_transformerlens
from actlab.utils import dtype_name

log = logging.getLogger(__name__)

SAELENS_CFG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"   # the cfg.json layout written (SAELens >= 6 reads metadata.* only with it)
_PROVENANCE = ("k", "l1_coef", "gsae_beta", "jump_bandwidth", "site", "site_out", "model", "train")
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


def load_foreign(path: str | Path, device=None, hookpoint: str | None = None,
                 norm_scaling_factor: float | None = None) -> Dictionary:
    """A SAELens or sparsify folder (or a sparsify parent folder: pick ``hookpoint``) as an actlab Dictionary."""
    path = Path(path)
    kind = detect(path)
    if kind == "saelens":
        m = load_saelens(path, norm_scaling_factor=norm_scaling_factor)
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
def _restore(dc_kw: dict, prov: dict | None) -> dict:
    """Fields actlab wrote into an export's metadata (a re-load shows the original config; the architecture is
    the peer's, e.g. a BatchTopK SAE comes back as the JumpReLU SAE it was exported as)."""
    for k in _PROVENANCE:
        if prov and k in prov:
            dc_kw[k] = prov[k]
    return dc_kw


def load_saelens(path: str | Path, norm_scaling_factor: float | None = None) -> Dictionary:
    """A SAELens ``save_model`` folder (6.x layout, or an older one with top-level hook names).

    Hook names are mapped to actlab sites (``blocks.8.hook_resid_pre`` -> ``blocks.8.resid_pre``; an unknown one
    leaves the site empty: pass ``site=``), ``metadata.hook_name_out`` gives a transcoder's output site,
    ``normalize_activations`` 'expected_average_only_in' is folded with ``norm_scaling_factor`` (from the release's
    pretrained_saes.yaml, or ``norm_scaling_factor`` in cfg.json), the per-token modes run at inference."""
    path = Path(path)
    cfg = read_json(path / SAELENS_CFG, what="SAELens config")
    w = load_tensors(path / SAELENS_WEIGHTS)          # NaN/Inf weights refused, naming the tensor
    arch_in = cfg.get("architecture", "standard")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    d_out = int(cfg.get("d_out") or d_in) if "transcoder" in arch_in else None
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated", "transcoder": "relu",
            "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu",
            "jumprelu_skip_transcoder": "jumprelu"}.get(arch_in)
    if arch is None:
        raise ValueError(f"SAELens architecture {arch_in!r} in {path / SAELENS_CFG} is not supported (supported: "
                         f"standard, topk, jumprelu, gated and the transcoder variants)")
    norm = cfg.get("normalize_activations") or "none"
    if norm is True:
        norm = "expected_average_only_in"
    if norm in (False, "none"):
        norm = "none"
    if norm == "expected_average_only_in":
        f = norm_scaling_factor if norm_scaling_factor is not None else cfg.get("norm_scaling_factor")
        if f is None:
            raise ValueError(f"{path / SAELENS_CFG} says normalize_activations='expected_average_only_in' but gives no "
                             f"norm_scaling_factor: pass norm_scaling_factor= (--norm-scale; SAELens keeps it in "
                             f"pretrained_saes.yaml for its releases) to fold it into the weights")
        f = float(f)                                   # SAELens fold_activation_norm_scaling_factor
        w["W_enc"], w["W_dec"], w["b_dec"] = w["W_enc"] * f, w["W_dec"] / f, w["b_dec"] / f
        norm = "none"
    elif norm not in ("none", "constant_norm_rescale", "layer_norm"):
        raise ValueError(f"normalize_activations={norm!r} in {path / SAELENS_CFG} is not supported (none, "
                         f"expected_average_only_in, constant_norm_rescale, layer_norm)")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"rescale_acts_by_decoder_norm=True in {path / SAELENS_CFG} is not supported; fold the "
                         f"decoder norms first (SAE.fold_W_dec_norm)")
    meta = cfg.get("metadata") or {}
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or ""
    hook_out = meta.get("hook_name_out") or cfg.get("hook_name_out") or ""
    site, site_out = to_site(hook), to_site(hook_out) if d_out is not None else ""
    if hook and not site:
        log.warning("%s: hook %r has no actlab site; pass site= (--site) to splice or evaluate it", path, hook)
    if d_out is not None and not site_out:
        log.warning("%s: transcoder without a known output hook (metadata.hook_name_out=%r); pass site_out=", path,
                    hook_out)
    kw = dict(arch=arch, d_in=d_in, d_sae=d_sae, d_out=d_out, k=int(cfg.get("k", 32) or 32), l1_coef=0.0,
              skip="W_skip" in w, site=site, site_out=site_out,
              model=meta.get("model_name") or cfg.get("model_name") or "", normalize_activations=norm,
              dtype=dtype_name(w["W_enc"].dtype))
    prov = meta.get("actlab")
    _restore(kw, prov)
    if arch != "topk" and not prov:
        kw["k"] = min(kw["k"], d_sae)
    m = build(DictConfig(**kw))
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
    if d_out is not None:                             # SAELens transcoders never centre their input
        t["b_pre"] = torch.zeros(d_in, dtype=W_enc.dtype)
    if "W_skip" in w:
        t["W_skip"] = w["W_skip"].t().contiguous()
    if arch == "jumprelu":
        thr = w["threshold"] if "threshold" in w else w["log_threshold"].exp()
        t["log_threshold"] = thr.clamp_min(1e-12).log()
    if arch == "gated":
        t["r_mag"], t["b_mag"] = w["r_mag"], w["b_mag"]
    return _set(m, t)


def saelens_config(model: Dictionary) -> tuple[str, dict]:
    """(SAELens architecture, cfg.json dict) for an export: the fields ``SAE.save_model`` of SAELens 6.x writes,
    hook names in TransformerLens form, and actlab's own config under ``metadata.actlab`` (read back on load)."""
    from dataclasses import asdict
    c = model.cfg
    arch = _TO_SAELENS.get(c.arch)
    if arch is None:
        raise ValueError(f"architecture {c.arch!r} has no SAELens equivalent")
    if c.is_transcoder:
        if arch not in ("standard", "jumprelu"):
            raise ValueError(f"SAELens has no {c.arch} transcoder; export it in sparsify format instead")
        arch = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}[arch]
        if c.skip:
            arch = arch.replace("transcoder", "skip_transcoder")
    if c.normalize_activations != "none":
        raise ValueError(f"normalize_activations={c.normalize_activations!r}: export it from the SAELens original")
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": SAELENS_FORMAT_VERSION,
            "model_name": c.model, "hook_name": to_transformerlens(c.site)}
    if c.is_transcoder:
        meta["hook_name_out"] = to_transformerlens(c.site_out)
    meta["actlab"] = {"arch": c.arch, **{k: v for k, v in asdict(c).items() if k in _PROVENANCE}}
    cfg = {"d_in": c.d_in, "d_sae": c.d_sae,
           "dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(c.dtype, "float32"),
           "device": "cpu", "apply_b_dec_to_input": not c.is_transcoder, "normalize_activations": "none",
           "reshape_activations": "hook_z" if c.site.endswith(".attn.z") else "none", "metadata": meta}
    if arch == "topk":
        cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
    if c.is_transcoder:
        cfg["d_out"] = c.out_dim
    cfg["architecture"] = arch
    return arch, cfg


def export_saelens(model: Dictionary, path: str | Path) -> Path:
    """Write a SAELens-loadable folder (``SAE.load_from_disk``): SAELens 6.x cfg.json + sae_weights.safetensors."""
    path = Path(path)
    c = model.cfg
    _, cfg = saelens_config(model)
    W_enc, b_enc = model.W_enc.detach(), model.b_enc.detach()
    tensors = {"W_dec": model.W_dec.detach(), "b_dec": model.b_dec.detach()}
    if c.is_transcoder:
        b_enc = b_enc - W_enc @ model.b_pre.detach()        # fold actlab's input centring into the encoder bias
        if c.skip:
            tensors["W_skip"] = model.W_skip.detach().t()
    tensors["W_enc"] = W_enc.t()
    if c.arch == "jumprelu":
        tensors["threshold"] = model.threshold.detach()
    if c.arch == "batchtopk":
        tensors["threshold"] = model.threshold.detach().expand(c.d_sae)
    if c.arch == "gated":
        tensors["b_gate"], tensors["r_mag"], tensors["b_mag"] = b_enc, model.r_mag.detach(), model.b_mag.detach()
    else:
        tensors["b_enc"] = b_enc
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / SAELENS_WEIGHTS, tensors)
    atomic_write_json(path / SAELENS_CFG, cfg)
    return path


# -- sparsify --------------------------------------------------------------------------------------------
def load_sparsify(path: str | Path) -> Dictionary:
    """One sparsify hookpoint folder; the folder name is the hookpoint (mapped to an actlab site: ``layers.8`` ->
    ``blocks.8.resid_post``, ``layers.8.mlp`` -> ``blocks.8.mlp_out``, or ``mlp_in -> mlp_out`` for a transcoder)."""
    path = Path(path)
    cfg = read_json(path / SPARSIFY_CFG, what="sparsify config")
    w = load_tensors(path / SPARSIFY_WEIGHTS)
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"sparsify activation {cfg.get('activation')!r} in {path / SPARSIFY_CFG} is not supported "
                         f"(only topk)")
    d_in = int(cfg["d_in"])
    n, d_out = w["W_dec"].shape
    transcode = bool(cfg.get("transcode", False))
    site = to_site(path.name, transcoder_input=transcode)
    site_out = to_site(path.name) if transcode else ""
    if not site:
        log.warning("%s: hookpoint %r has no actlab site; pass site= (--site)", path, path.name)
    kw = dict(arch="topk", d_in=d_in, d_sae=n, k=int(cfg["k"]), d_out=d_out if transcode else None,
              skip="W_skip" in w, site=site, site_out=site_out, l1_coef=0.0, dtype=dtype_name(w["W_dec"].dtype))
    _restore(kw, cfg.get("actlab"))
    m = build(DictConfig(**kw))
    t = {"W_enc": w["encoder.weight"], "b_enc": w["encoder.bias"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    if transcode:
        t["b_pre"] = torch.zeros(d_in, dtype=w["W_dec"].dtype)
    if "W_skip" in w:
        t["W_skip"] = w["W_skip"].t().contiguous()
    return _set(m, t)


def export_sparsify(model: Dictionary, path: str | Path) -> Path:
    """Write ``path/<hookpoint>/`` as sparsify's ``save_to_disk`` does (TopK family only); returns that folder.

    The hookpoint is the HF module path sparsify would hook (``blocks.8.resid_post`` -> ``layers.8``), else the
    actlab site name. sparsify transcoders predict an output as wide as their input: others are refused."""
    from dataclasses import asdict
    path = Path(path)
    c = model.cfg
    if c.arch not in ("topk", "gsae"):
        raise ValueError(f"sparsify only holds TopK coders; {c.arch!r} cannot be exported to it")
    if c.is_transcoder and c.out_dim != c.d_in:
        raise ValueError(f"sparsify transcoders predict an output as wide as their input (W_dec [n, d_in]); this "
                         f"one maps d_in={c.d_in} -> d_out={c.out_dim} ({c.site} -> {c.site_out}), which sparsify "
                         f"cannot load; export it to SAELens as a ReLU/JumpReLU transcoder instead")
    if c.normalize_activations != "none":
        raise ValueError(f"normalize_activations={c.normalize_activations!r} has no sparsify equivalent")
    b_enc = model.b_enc.detach()
    if c.is_transcoder:
        b_enc = b_enc - model.W_enc.detach() @ model.b_pre.detach()
    tensors = {"encoder.weight": model.W_enc.detach(), "encoder.bias": b_enc, "W_dec": model.W_dec.detach(),
               "b_dec": model.b_dec.detach()}
    if c.skip:
        tensors["W_skip"] = model.W_skip.detach().t()
    cfg = {"activation": "topk", "expansion_factor": max(c.d_sae // c.d_in, 1), "normalize_decoder": True,
           "num_latents": c.d_sae, "k": c.k, "multi_topk": False, "skip_connection": c.skip,
           "transcode": c.is_transcoder, "d_in": c.d_in,
           "actlab": {"arch": c.arch, **{k: v for k, v in asdict(c).items() if k in _PROVENANCE}}}
    folder = path / (to_sparsify(c.site, c.site_out if c.is_transcoder else "") or "sae")
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / SPARSIFY_WEIGHTS, tensors)
    atomic_write_json(folder / SPARSIFY_CFG, cfg)
    return folder
