"""Calibration-set sensitivity of post-training quantization: calibrate linear-layer inputs on a text set,
fake-quantize the model (W8A8 static, optional SmoothQuant), and compare held-out perplexity across sets."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn.functional as F

from actlab.stats.quant import fake_quant, smoothquant_scales, stats_threads

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


def next_token_nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Summed next-token negative log-likelihood (nats) of ``ids`` ``[b, p]`` under ``logits`` ``[b, p, V]``."""
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1),
                                 reduction="sum"))


def perplexity(model: Model, ids: torch.Tensor, batch_size: int = 8) -> float:
    """exp(mean next-token NLL) over packed contexts ``ids`` ``[n, L]`` (no padding)."""
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"perplexity needs token ids [n_contexts, length >= 2]; got shape {list(ids.shape)}")
    tot, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            x = ids[s:s + batch_size].to(model.device)
            tot += next_token_nll(model(x, use_cache=False).logits, x)
            n += x.shape[0] * (x.shape[1] - 1)
    return math.exp(tot / n)


def _is_linear(model: Model, mod: torch.nn.Module) -> bool:
    """``nn.Linear``, or, where the adapter says weights are stored ``[in, out]`` (``adapter.conv1d``, GPT-2), a
    leaf module with a 2-D weight that is not an embedding."""
    if isinstance(mod, torch.nn.Linear):
        return True
    w = getattr(mod, "weight", None)
    return (model.adapter.conv1d and isinstance(w, torch.Tensor) and w.dim() == 2
            and not isinstance(mod, torch.nn.Embedding) and next(mod.children(), None) is None)


def weight_out_in(model: Model, mod: torch.nn.Module) -> torch.Tensor:
    """The weight of a linear layer as ``[out, in]`` (``nn.Linear``'s layout; a view of the parameter)."""
    return mod.weight if isinstance(mod, torch.nn.Linear) or not model.adapter.conv1d else mod.weight.T


def linear_layers(model: Model, include_head: bool = False) -> list[str]:
    """Module paths of the linear layers of ``model`` (``nn.Linear``, or the adapter's ``[in, out]`` layout), the LM
    head excluded unless ``include_head``."""
    head = None
    if "logits" in model.sites:
        head = model.sitemap.resolve("logits").module
    return [n for n, m in model.module.named_modules()
            if n and _is_linear(model, m) and (include_head or n != head)]


@dataclass
class Calibration:
    """Per linear layer: max |x| per input channel and the mean over batches of a percentile of |x|."""

    absmax: dict[str, torch.Tensor]
    pct: dict[str, float]
    percentile: float
    n_seq: int


def calibrate(model: Model, ids: torch.Tensor, batch_size: int = 8, layers: list[str] | None = None,
              percentile: float = 99.99) -> Calibration:
    """Record linear-layer input ranges (the hook points quantized kernels see) over calibration contexts."""
    layers = layers if layers is not None else linear_layers(model)
    absmax: dict[str, torch.Tensor] = {}
    pct: dict[str, list[float]] = {p: [] for p in layers}

    def make(path):
        def h(act, ctx):
            with stats_threads(1, act.device):
                a = act.detach().abs().float().reshape(-1, act.shape[-1])
                m = a.amax(0)
                absmax[path] = m if path not in absmax else torch.maximum(absmax[path], m)
                flat = a.reshape(-1)
                k = max(1, min(flat.numel(), int(round(percentile / 100 * flat.numel()))))
                pct[path].append(float(flat.kthvalue(k).values))
            return None
        return h

    with torch.no_grad(), model.hooks([(f"module:{p}:in", make(p)) for p in layers]):
        for s in range(0, len(ids), batch_size):
            model(ids[s:s + batch_size].to(model.device), use_cache=False)
    return Calibration(absmax, {p: sum(v) / len(v) for p, v in pct.items() if v}, percentile, len(ids))


@contextlib.contextmanager
def quantized(model: Model, calib: Calibration | None, w_bits: int = 8, a_bits: int | None = 8,
              w_granularity: str = "channel", a_granularity: str = "tensor", a_clip: str = "minmax",
              smoothquant_alpha: float | None = None) -> Iterator[None]:
    """Fake-quantize the linear layers of ``model`` in place for the block (weights restored afterwards).

    Weights: symmetric INT-``w_bits`` per output channel (``w_granularity='channel'``) or per tensor.
    Activations (``a_bits`` None = weight-only): 'tensor' / 'channel' use static scales from ``calib``
    ('minmax' = calibrated max, 'percentile' = calibrated percentile); 'token' is dynamic per token.
    ``smoothquant_alpha``: migrate difficulty with SmoothQuant scales from ``calib`` first (X/s, W*s).
    """
    needs_calib = smoothquant_alpha is not None or (a_bits is not None and a_granularity != "token")
    if needs_calib and calib is None:
        raise ValueError("static activation scales and SmoothQuant need a Calibration (run calibrate() first)")
    if smoothquant_alpha is not None and a_clip == "percentile":
        raise ValueError("a_clip='percentile' with SmoothQuant is not supported: calibrated percentiles are of the "
                         "unsmoothed inputs; use a_clip='minmax' or a_granularity='token'")
    layers = list(calib.absmax) if calib is not None else linear_layers(model)
    mods = dict(model.module.named_modules())
    saved: dict[str, torch.Tensor] = {}
    hooks = []
    qmax = 2 ** ((a_bits or 8) - 1) - 1
    try:
        with torch.no_grad(), stats_threads(1, model.device):
            for p in layers:
                mod = mods[p]
                w = weight_out_in(model, mod)
                saved[p] = mod.weight.detach().clone()
                s = None
                if smoothquant_alpha is not None:
                    s = smoothquant_scales(calib.absmax[p], w, smoothquant_alpha).to(w)
                    w = w * s[None, :]
                wq = fake_quant(w, w_bits, "token" if w_granularity == "channel" else "tensor")
                weight_out_in(model, mod).copy_(wq)          # writes through the view, whatever the layout
                if a_bits is None:
                    continue
                scale = None
                if a_granularity != "token":
                    am = calib.absmax[p].to(w) / (s if s is not None else 1.0)
                    if a_granularity == "tensor":
                        r = am.max() if a_clip == "minmax" else torch.tensor(calib.pct[p])
                    else:
                        r = am
                    scale = (r / qmax).clamp_min(1e-12)
                hooks.append((f"module:{p}:in", _act_quant(a_bits, a_granularity, scale, s)))
        with model.hooks(hooks):
            yield
    finally:
        with torch.no_grad(), stats_threads(1, model.device):
            for p, w in saved.items():
                mods[p].weight.copy_(w)


def _act_quant(bits: int, granularity: str, scale: torch.Tensor | None, s: torch.Tensor | None):
    def h(act, ctx):
        with stats_threads(1, act.device):
            x = act / s.to(act) if s is not None else act
            return fake_quant(x, bits, "token" if scale is None else granularity, scale=scale)
    return h


def punctuation_contexts(vocab_ids: list[int], n: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random strings over the given token ids (e.g. punctuation tokens): ``[n, length]``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.as_tensor(vocab_ids)
    return ids[torch.randint(len(ids), (n, length), generator=g)]


def punctuation_text(n_chars: int, seed: int = 0) -> str:
    """A random string of ASCII punctuation and spaces (the 'random punctuation' calibration set)."""
    rnd = random.Random(seed)
    chars = string.punctuation + "  "
    return "".join(rnd.choice(chars) for _ in range(n_chars))


def code_text(min_chars: int = 200_000) -> str:
    """Another domain: Python source of standard-library modules (available offline on every machine)."""
    import inspect
    import importlib

    out = []
    for name in ("argparse", "json.decoder", "logging", "typing", "dataclasses", "pathlib", "textwrap",
                 "collections", "functools", "inspect", "email.message", "http.client"):
        try:
            out.append(inspect.getsource(importlib.import_module(name)))
        except (OSError, TypeError, ImportError):
            continue
        if sum(map(len, out)) >= min_chars:
            break
    return "\n".join(out)


@dataclass
class CalibrationRow:
    """Held-out perplexity of one quantization method calibrated on one set."""

    calib_set: str
    method: str
    ppl: float


METHODS = {
    "W8A8 per-tensor": dict(w_bits=8, a_bits=8, a_granularity="tensor"),
    "W8A8 per-tensor + SmoothQuant": dict(w_bits=8, a_bits=8, a_granularity="tensor", smoothquant_alpha=0.5),
    "W8A8 per-tensor pct-clip": dict(w_bits=8, a_bits=8, a_granularity="tensor", a_clip="percentile"),
}


def calibration_study(model: Model, eval_ids: torch.Tensor, calib_sets: dict[str, torch.Tensor],
                      batch_size: int = 8, methods: dict[str, dict] | None = None,
                      progress: bool = False) -> tuple[float, list[CalibrationRow]]:
    """(fp perplexity, rows): held-out perplexity for each quantization method calibrated on each set."""
    from tqdm.auto import tqdm

    methods = METHODS if methods is None else methods
    bar = tqdm(total=1 + len(calib_sets) * (1 + len(methods)), desc="calibration", unit="pass",
               disable=not progress, leave=False)
    try:
        base = perplexity(model, eval_ids, batch_size)
        bar.update(1)
        rows = []
        for name, ids in calib_sets.items():
            bar.set_postfix_str(f"{name}: calibrating")
            cal = calibrate(model, ids, batch_size)
            bar.update(1)
            for meth, kw in methods.items():
                bar.set_postfix_str(f"{name}: {meth}")
                with quantized(model, cal, **kw):
                    rows.append(CalibrationRow(name, meth, perplexity(model, eval_ids, batch_size)))
                bar.update(1)
                log.info("calibration %s / %s: ppl %.3f", name, meth, rows[-1].ppl)
    finally:
        bar.close()
    return base, rows
