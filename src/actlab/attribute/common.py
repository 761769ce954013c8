"""Input spaces, targets and the attribution result shared by integrated gradients and the gradient methods.

Text models are attributed at the token-embedding output (site ``embed``: the forward is re-run with edited
embeddings through the core), other models (images) at their input tensor.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from actlab.core import Fn
from actlab.artifact import ArtifactError, atomic_write_text, folder_lock, load_artifact, save_artifact

if TYPE_CHECKING:
    from actlab.models import Model

KIND = "attribute.attribution"
FORMAT_VERSION = 1
CFG_FILE = "attribution.json"
TENSOR_FILE = "attribution.safetensors"
HTML_FILE = "tokens.html"


class InputSpace:
    """Where attributions live: ``x0`` [1, ...] (embeddings or the input tensor) and ``run(x_batch) -> output``."""

    def __init__(self, m: Model, inputs):
        self.m = m
        self.text = not (isinstance(inputs, torch.Tensor) and inputs.is_floating_point())
        self.tokens: list[str] = []
        if self.text:
            if "embed" not in m.sites:
                raise ValueError(f"{m.name} has no 'embed' site; pass a float input tensor to attribute over inputs")
            if isinstance(inputs, str):
                enc = m.tokenize(inputs)
            elif isinstance(inputs, dict):
                enc = {k: v.to(m.device) for k, v in inputs.items()}
            elif isinstance(inputs, torch.Tensor):
                ids = inputs[None] if inputs.dim() == 1 else inputs
                enc = {"input_ids": ids.to(m.device), "attention_mask": torch.ones_like(ids).to(m.device)}
            else:
                raise TypeError(f"attribute one example at a time: a text, token ids or a dict; got "
                                f"{type(inputs).__name__}")
            if enc["input_ids"].shape[0] != 1:
                raise ValueError(f"attribute one example at a time; got a batch of {enc['input_ids'].shape[0]}")
            self.enc = enc
            with torch.no_grad():
                self.x0 = m.record(enc, ["embed"])["embed"].detach()
            if m.tokenizer is not None:
                self.tokens = [m.tokenizer.decode([t]) for t in enc["input_ids"][0].tolist()]
        else:
            self.x0 = inputs.to(m.device).detach()  # [1, ...]: the first dim is always the batch
            if self.x0.shape[0] != 1:
                raise ValueError(f"attribute one example at a time; got a batch of {self.x0.shape[0]}")

    def run(self, xb: torch.Tensor):
        """Forward with the input-space tensor ``xb`` [r, ...] (r rows of the one example)."""
        if not self.text:
            return self.m.module(xb)
        r = xb.shape[0]
        enc = {k: v.expand(r, *v.shape[1:]) for k, v in self.enc.items()}
        with self.m.intervene({"embed": Fn(fn=lambda act, ctx: xb)}):
            return self.m(enc, use_cache=False)  # through Model.__call__: position ids follow the mask

    def baseline(self, spec) -> torch.Tensor:
        """``'zero'``, ``'pad'``/``'unk'``/``'mask'``/``'eos'`` (that token's embedding at every position), a token id,
        ``'blur'``/``'mean'`` (images: the per-channel mean), or a tensor broadcastable to ``x0``."""
        x0 = self.x0
        if isinstance(spec, torch.Tensor):
            try:
                return spec.to(x0).expand_as(x0).clone()
            except RuntimeError:
                raise ValueError(f"baseline tensor of shape {list(spec.shape)} does not broadcast to the input "
                                 f"{list(x0.shape)}") from None
        if spec == "zero":
            return torch.zeros_like(x0)
        if not self.text:
            if spec == "mean":
                return x0.mean(dim=tuple(range(2, x0.dim())), keepdim=True).expand_as(x0).clone()
            raise ValueError(f"unknown image baseline {spec!r}; use 'zero', 'mean' or a tensor")
        if isinstance(spec, str):
            tok = self.m.tokenizer
            ids = {"pad": getattr(tok, "pad_token_id", None), "unk": getattr(tok, "unk_token_id", None),
                   "mask": getattr(tok, "mask_token_id", None), "eos": getattr(tok, "eos_token_id", None)}
            if spec not in ids:
                raise ValueError(f"unknown text baseline {spec!r}; use 'zero', 'pad', 'unk', 'mask', 'eos', a token id "
                                 f"or a tensor")
            if ids[spec] is None:
                raise ValueError(f"the tokenizer of {self.m.name} has no {spec} token; pick another baseline")
            spec = ids[spec]
        ids = torch.full_like(self.enc["input_ids"], int(spec))
        with torch.no_grad():
            return self.m.record({"input_ids": ids, "attention_mask": self.enc["attention_mask"]}, ["embed"])["embed"]


def grads(space: InputSpace, xb: torch.Tensor, target: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """(d target / d xb for each row, target values) for a batch of input-space points."""
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        f = target(space.run(xb)).float()
        if f.shape != (xb.shape[0],):
            raise ValueError(f"the target must return one value per row ([{xb.shape[0]}]); got {list(f.shape)}")
        (g,) = torch.autograd.grad(f.sum(), xb)
    return g.detach(), f.detach()


# -- targets ---------------------------------------------------------------------------------------------
def logit_target(token_id: int, position: int = -1, log_prob: bool = False) -> Callable:
    """Target: the logit (or log-probability) of ``token_id`` at ``position`` of a causal LM's output."""
    def f(out):
        logits = (out.logits if hasattr(out, "logits") else out)[:, position]
        if log_prob:
            logits = torch.log_softmax(logits.float(), -1)
        return logits[:, token_id]
    return f


def contrastive_target(pos_id: int, neg_id: int, position: int = -1) -> Callable:
    """Target: ``log p(pos) - log p(neg)`` at ``position`` (GrAInS' contrastive objective for one-token answers)."""
    def f(out):
        lp = torch.log_softmax((out.logits if hasattr(out, "logits") else out)[:, position].float(), -1)
        return lp[:, pos_id] - lp[:, neg_id]
    return f


def class_target(index: int) -> Callable:
    """Target: output column ``index`` of a classifier ``[batch, classes]``."""
    return lambda out: (out.logits if hasattr(out, "logits") else out)[:, index]


# -- result ----------------------------------------------------------------------------------------------
@dataclass
class Attribution:
    """Per-element attributions ``attr`` (shape of the input, batch dim dropped) and per-token / per-pixel
    ``scores`` (summed over the feature / channel dim). For integrated gradients ``delta`` =
    ``sum(attr) - (f_x - f_baseline)`` is the completeness error (0 for an exact path integral)."""

    attr: torch.Tensor
    scores: torch.Tensor
    method: str
    f_x: float | None = None
    f_baseline: float | None = None
    delta: float | None = None
    tokens: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def completeness(self) -> dict | None:
        """For path methods (IG): ``{sum_attr, f_diff, delta, relative_error}``; None for gradient methods."""
        if self.delta is None or self.f_x is None or self.f_baseline is None:
            return None
        return completeness_report(self.delta, self.f_x, self.f_baseline)

    def top(self, k: int = 5, sign: int = 1) -> list[int]:
        """Indices of the ``k`` largest (sign=1) or most negative (sign=-1) token scores."""
        return (self.scores.flatten() * sign).topk(min(k, self.scores.numel())).indices.tolist()

    def to_terminal(self) -> str:
        """Tokens coloured by score (ANSI 256 colours: red positive, blue negative)."""
        if not self.tokens:
            raise ValueError("to_terminal needs token labels (text attributions)")
        lim = float(self.scores.abs().max()) or 1.0
        reds, blues = [224, 217, 210, 203, 196], [189, 153, 117, 81, 33]
        out = []
        for t, s in zip(self.tokens, self.scores.tolist()):
            lvl = min(4, int(abs(s) / lim * 5))
            col = (reds if s >= 0 else blues)[lvl]
            out.append(f"\x1b[48;5;{col}m\x1b[30m{t}\x1b[0m")
        return "".join(out)

    def to_html(self) -> str:
        """A self-contained HTML snippet: tokens with a red/blue background proportional to the score."""
        if not self.tokens:
            raise ValueError("to_html needs token labels (text attributions)")
        lim = float(self.scores.abs().max()) or 1.0
        spans = []
        for t, s in zip(self.tokens, self.scores.tolist()):
            a = min(1.0, abs(s) / lim)
            rgb = "220,40,40" if s >= 0 else "40,90,220"
            spans.append(f'<span title="{s:.4g}" style="background: rgba({rgb},{a:.3f}); white-space: pre">'
                         f"{html.escape(t)}</span>")
        head = f"<p><b>{html.escape(self.method)}</b>" + (f" delta={self.delta:.3g}" if self.delta is not None else "")
        return f"<div style='font-family: monospace'>{head}</p><p>{''.join(spans)}</p></div>"

    def save(self, folder: str | os.PathLike) -> Path:
        """``attribution.safetensors`` + ``attribution.json`` (+ ``tokens.html`` for text): an ``actlab.artifact``
        folder of kind ``attribute.attribution`` (every file atomic, the JSON last)."""
        js = {"method": self.method, "f_x": self.f_x, "f_baseline": self.f_baseline, "delta": self.delta,
              "tokens": self.tokens, "meta": self.meta}
        if self.completeness is not None:
            js["completeness"] = self.completeness
        folder = Path(folder)
        with folder_lock(folder, what="writing an attribution"):
            if self.tokens:
                atomic_write_text(folder / HTML_FILE, self.to_html())
            return save_artifact(folder, KIND, js, {"attr": self.attr.float().cpu(),
                                                    "scores": self.scores.float().cpu()},
                                 version=FORMAT_VERSION, tensors_file=TENSOR_FILE, cfg_file=CFG_FILE)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Attribution:
        """Read a folder written by ``save`` (or by actlab before artifacts: kind ``actlab.attribution``)."""
        a = load_artifact(folder, KIND, version=FORMAT_VERSION, tensors_file=TENSOR_FILE, cfg_file=CFG_FILE,
                          legacy="actlab.attribution")
        js, ts = a.config, a.tensors
        missing = {"attr", "scores"} - set(ts)
        if missing:
            raise ArtifactError(f"{Path(folder) / TENSOR_FILE} lacks {sorted(missing)} (it has {sorted(ts)})")
        return cls(ts["attr"], ts["scores"], js["method"], js.get("f_x"), js.get("f_baseline"), js.get("delta"),
                   js.get("tokens", []), js.get("meta", {}))


def completeness_report(delta: float, f_x: float, f_baseline: float) -> dict:
    """Completeness of a path attribution: ``sum(attr)`` against ``f(x) - f(baseline)``; ``relative_error`` =
    ``|delta| / |f(x) - f(baseline)|`` (inf when the two outputs are equal and delta is not 0)."""
    gap = f_x - f_baseline
    rel = abs(delta) / abs(gap) if gap != 0 else (0.0 if delta == 0 else float("inf"))
    return {"sum_attr": gap + delta, "f_diff": gap, "delta": delta, "relative_error": rel}


def reduce_scores(attr: torch.Tensor, text: bool) -> torch.Tensor:
    """Token scores (sum over the embedding dim) or pixel scores (sum over channels of [C, H, W])."""
    if text:
        return attr.sum(-1)
    return attr.sum(0) if attr.dim() == 3 else attr
