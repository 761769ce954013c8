"""A fingerprint of a model's weights, so a harvest never resumes onto a store made by other weights.

A name and a ``config.json`` do not identify weights (a local folder whose safetensors were swapped keeps both). The
fingerprint hashes, for every tensor of ``model.module.state_dict()`` in name order: its name, shape, dtype and
up to ``SAMPLE`` entries taken at evenly spaced flat indices (all entries of a smaller tensor). Reading a sample
costs milliseconds on any model size, needs no access to the files the weights came from, and changes with any
fine-tune, swap or re-initialisation that touches the sampled entries of any tensor (a bias or norm is sampled
whole). The weights are hashed as the model runs them, so the same checkpoint run in another dtype has another
fingerprint (its activations differ too).
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model

SAMPLE = 8192


def weights_fingerprint(model: Model | torch.nn.Module, sample: int = SAMPLE) -> str:
    """sha256 (16 hex) of every tensor's name, shape, dtype and an evenly spaced sample of its entries."""
    module = model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(module.state_dict(keep_vars=False).items()):
            t = t.detach()
            h.update(f"{name}\0{list(t.shape)}\0{t.dtype}\0".encode())
            flat = t.reshape(-1)
            n = flat.numel()
            if n == 0:
                continue
            if n > sample:
                idx = torch.linspace(0, n - 1, sample, dtype=torch.float64).round().long().to(flat.device)
                flat = flat.index_select(0, idx)
            flat = flat.cpu().contiguous()
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.dtype != torch.bool
                     else flat.numpy().tobytes())
    return h.hexdigest()[:16]
