"""Save and load interventions as JSON (site, op, params, positions) + one safetensors file for their tensors.

A steering vector saved this way says where and how it applies, so it can be shared and replayed exactly.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from actlab.artifact import (
    ArtifactError,
    ArtifactMissingError,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
)
from actlab.core.interventions import OPS, Intervention, Patch
from actlab.core.positions import positions_from_json, positions_to_json

FORMAT_VERSION = 1


def normalize_mapping(mapping) -> list[tuple[str, Intervention]]:
    """``{site: iv | [iv, ...]}`` or ``[(site, iv), ...]`` -> ordered list of (site, iv)."""
    from actlab.core.interventions import as_intervention

    items = mapping.items() if isinstance(mapping, dict) else mapping
    out = []
    for site, ivs in items:
        for iv in ivs if isinstance(ivs, (list, tuple)) else [ivs]:
            out.append((site, as_intervention(iv)))
    return out


def save_interventions(path: str | os.PathLike, mapping, *, model: str | None = None, meta: dict | None = None) -> Path:
    """Write ``path`` (.json) and its tensors next to it (same stem, .safetensors). Returns the JSON path."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_suffix(".json")
    entries, tensors = [], {}
    for n, (site, iv) in enumerate(normalize_mapping(mapping)):
        if iv.op not in OPS:
            raise TypeError(f"intervention {type(iv).__name__} at {site!r} is not serializable (register it with "
                            f"@register_op)")
        js, ts = iv.params()
        names = {}
        for k, t in ts.items():
            names[k] = f"{n}.{k}"
            tensors[f"{n}.{k}"] = t.detach().cpu().clone()  # own storage: safetensors refuses shared tensors
        pos = iv.positions
        if isinstance(pos, torch.Tensor):
            tensors[f"{n}.positions"] = pos.cpu().clone()
            pos = {"tensor": f"{n}.positions"}
        else:
            pos = positions_to_json(pos)
        entries.append({"site": site, "op": iv.op, "params": js, "tensors": names, "positions": pos})
    tfile = path.with_suffix(".safetensors")
    save_tensors(tfile, tensors, {"actlab.kind": "actlab.interventions"})  # refuses NaN/Inf, names the tensor
    atomic_write_json(path, {"format_version": FORMAT_VERSION, "kind": "actlab.interventions", "model": model,
                             "tensor_file": tfile.name, "interventions": entries, "meta": meta or {}})
    return path


def load_interventions(path: str | os.PathLike) -> list[tuple[str, Intervention]]:
    """Read a file written by ``save_interventions``; returns the ordered (site, intervention) list."""
    path = Path(path)
    if not path.exists():
        raise ArtifactMissingError(f"intervention file {path} does not exist")
    spec = read_json(path, what="interventions")
    if not isinstance(spec, dict) or spec.get("kind") != "actlab.interventions":
        kind = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise ArtifactError(f"{path} is not an actlab interventions file (kind={kind!r}; expected "
                            f"'actlab.interventions')")
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{path} has format_version {spec['format_version']}; this actlab reads <= "
                            f"{FORMAT_VERSION}: upgrade actlab")
    needed = [n for e in spec["interventions"] for n in e.get("tensors", {}).values()]
    needed += [e["positions"]["tensor"] for e in spec["interventions"]
               if isinstance(e.get("positions"), dict) and "tensor" in e["positions"]]
    tfile = path.with_name(spec["tensor_file"])
    tensors = load_tensors(tfile, names=needed) if needed or tfile.exists() else {}
    out = []
    for e in spec["interventions"]:
        if e["op"] not in OPS:
            raise ValueError(f"unknown intervention op {e['op']!r} in {path}; known: {sorted(OPS)}")
        cls = OPS[e["op"]]
        kw = dict(e["params"])
        if cls is Patch and "sites" in kw:
            kw = {"source": {s: tensors[e["tensors"][f"source.{s}"]] for s in kw.pop("sites")}}
        else:
            for k, name in e["tensors"].items():
                kw[k] = tensors[name]
        pos = e.get("positions", "all")
        if isinstance(pos, dict) and "tensor" in pos:
            pos = tensors[pos["tensor"]]
        else:
            pos = positions_from_json(pos)
        out.append((e["site"], cls(**kw, positions=pos)))
    return out
