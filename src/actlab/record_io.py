"""Record activations of texts into one safetensors file and read it back (what ``actlab record`` does).

The file holds one tensor per site (``[batch, pos, ...]``, or ``[batch, ...]`` for a single position such as
``last``), the ``input_ids`` and ``attention_mask`` of the batch, and header metadata naming the model, revision,
sites and positions.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actlab.artifact import load_tensors, save_tensors, tensor_metadata

if TYPE_CHECKING:
    from actlab.models import Model

Positions = str | int | slice | list | tuple | torch.Tensor

log = logging.getLogger(__name__)


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """One input per non-blank line of a UTF-8 text file (``.jsonl``: its ``text`` fields). Binary or non-UTF-8
    files are refused naming the file and the offending byte."""
    from actlab.data import load_texts

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {p} does not exist" if not p.exists() else f"{p} is not a file")
    return load_texts(p, txt_mode="lines")


def _positions_meta(positions: Positions) -> str:
    if isinstance(positions, str):
        return positions
    if isinstance(positions, torch.Tensor):
        return "mask"
    if isinstance(positions, slice):
        return json.dumps({"slice": [positions.start, positions.stop, positions.step]})
    return json.dumps(list(positions) if isinstance(positions, tuple) else positions)


def record_to_file(model: Model, texts: str | Sequence[str], sites: Sequence[str], out: str | os.PathLike, *,
                   positions: Positions = "all", dtype: str | torch.dtype | None = None,
                   chat: bool = False) -> dict[str, torch.Tensor]:
    """Record ``sites`` for ``texts`` in one forward pass and write them (+ input_ids, attention_mask) to ``out``
    atomically. Returns the recorded activations. Non-finite activations are written (they are what the model
    computed) with a warning naming the site."""
    from actlab.utils import parse_dtype

    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts to record: give at least one text")
    if any(not t.strip() for t in texts):
        raise ValueError(f"text {next(i for i, t in enumerate(texts) if not t.strip())} is empty; every input needs "
                         f"at least one token")
    enc = model.tokenize(texts, chat=chat)
    acts = model.record(enc, sites=list(sites), positions=positions, dtype=parse_dtype(dtype))
    for k, v in acts.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            log.warning("%s: activations at %s contain NaN/Inf (written as computed)", out, k)
    tensors = dict(acts)
    tensors["input_ids"] = enc["input_ids"]
    tensors["attention_mask"] = enc["attention_mask"]
    meta = {"model": model.name, "revision": str(model.revision or ""), "positions": _positions_meta(positions),
            "sites": json.dumps(list(acts))}
    save_tensors(out, tensors, meta, allow_nonfinite=True)
    return acts


def load_recording(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file written by :func:`record_to_file` (or ``actlab record`` of any version)."""
    return load_tensors(path, check_finite=False), tensor_metadata(path)
