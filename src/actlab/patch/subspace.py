"""Subspace activation patching, distributed alignment search (DAS) and the dormant-pathway illusion check.

``h' = h_base + V^T V (h_source - h_base)`` for orthonormal rows ``V`` [k, d]. A direction that moves behaviour may
do so only by writing a causally disconnected feature into a dormant pathway (arXiv 2311.17030); the
``illusion_check`` splits it into the row space / null space of the weights that read the site and patches each.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from actlab.core import Intervention, register_op
from actlab.patch.common import Effect

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


def orthonormal_rows(basis: torch.Tensor) -> torch.Tensor:
    """``[d]`` or ``[k, d]`` -> ``[k, d]`` with orthonormal rows spanning the same subspace (QR, float64)."""
    b = basis[None] if basis.dim() == 1 else basis
    if b.dim() != 2 or b.shape[0] > b.shape[1]:
        raise ValueError(f"a subspace basis must be [d] or [k, d] with k <= d; got {list(basis.shape)}")
    if not bool(torch.isfinite(b).all()) or float(b.norm()) == 0:
        raise ValueError("a subspace basis must be finite and nonzero")
    return torch.linalg.qr(b.double().T).Q.T.to(basis.dtype)


@register_op
@dataclass
class SubspacePatch(Intervention):
    """Move the activation to ``source`` along the subspace spanned by ``basis`` ([d] or [k, d]), keep the rest.

    ``source``: the source run's activation (full shape) at this site. ``orthonormalize=False`` trusts the caller
    (DAS passes an already orthonormal, differentiable basis).
    """

    op: ClassVar[str] = "subspace_patch"
    source: torch.Tensor = None
    basis: torch.Tensor = None
    orthonormalize: bool = True

    def edit(self, act, ctx):
        if self.source is None or self.basis is None:
            raise ValueError("SubspacePatch needs source and basis")
        if tuple(self.source.shape) != tuple(act.shape):
            raise ValueError(f"SubspacePatch source has shape {list(self.source.shape)}; the activation at "
                             f"{ctx.site!r} is {list(act.shape)}")
        if self.basis.shape[-1] != act.shape[-1]:
            raise ValueError(f"SubspacePatch basis has last dim {self.basis.shape[-1]}; the activation at {ctx.site!r} "
                             f"has {act.shape[-1]}")
        q = orthonormal_rows(self.basis) if self.orthonormalize else (
            self.basis[None] if self.basis.dim() == 1 else self.basis)
        q = q.to(device=act.device, dtype=act.dtype)
        diff = self.source.to(device=act.device, dtype=act.dtype) - act
        return act + (diff @ q.T) @ q


SubspaceEffect = Effect  # base / source / patched scores of a subspace patch


def _score(m: Model, inputs, score: Callable) -> float:
    with torch.no_grad():
        return float(score(m(inputs)).float().mean())


def subspace_effect(m: Model, base, source, site: str, basis: torch.Tensor | None, score: Callable, *,
                    positions="all") -> SubspaceEffect:
    """Patch ``site`` of the base run along ``basis`` from the source run (``basis=None``: the whole activation).

    ``base``/``source``: model inputs of equal shape; ``score(output) -> [batch]`` (e.g. ``lm_score(metric)``).
    """
    m.check_sites([site])
    src = m.record(source, [site], stop_early=True)[site]
    b, s = _score(m, base, score), _score(m, source, score)
    from actlab import Replace
    iv = Replace(value=src, positions=positions) if basis is None else SubspacePatch(source=src, basis=basis,
                                                                                       positions=positions)
    with m.intervene({site: iv}):
        p = _score(m, base, score)
    return SubspaceEffect(b, s, p)


def lm_score(metric) -> Callable:
    """Adapt a patching ``Metric`` (last-position logits, pair index) to ``score(output)``."""
    def score(out):
        logits = (out.logits if hasattr(out, "logits") else out[0])[:, -1]
        return metric(logits, torch.arange(logits.shape[0], device=logits.device))
    return score


def load_basis(path) -> tuple[torch.Tensor, str | None]:
    """A patch direction from disk: ``(basis [d] or [k, d], site or None)``.

    Reads a steering-direction folder written by ``actlab.steer.Direction.save`` / ``actlab steer extract`` (or
    the ``direction.safetensors`` inside it; the direction's site comes with it), a ``basis.safetensors`` written by
    ``actlab patch subspace``, or any safetensors file holding a ``direction`` (or single ``vector``) tensor.
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"direction file {p} does not exist")
    folder = p if p.is_dir() else p.parent
    if (folder / "direction.json").exists() and (p.is_dir() or p.name == "direction.safetensors"):
        from actlab.steer import Direction

        d = Direction.load(folder)
        return d.vector.float(), d.site
    if p.is_dir():
        raise FileNotFoundError(f"{p} is a folder without direction.json; pass a steer direction folder or a "
                                f".safetensors file with a 'direction' tensor")
    from actlab.artifact import load_tensors

    t = load_tensors(p)  # unreadable / corrupted / non-finite: ArtifactError naming the file and tensor
    key = "direction" if "direction" in t else ("vector" if set(t) == {"vector"} else None)
    if key is None:
        raise KeyError(f"{p} holds no 'direction' tensor (it has {sorted(t)}); expected a [d] or [k, d] "
                       f"'direction' tensor or a steer direction folder")
    v = t[key].float()
    if v.dim() not in (1, 2):
        raise ValueError(f"{p}: '{key}' must be a [d] or [k, d] tensor; got shape {list(v.shape)}")
    return v, None


# -- illusion check --------------------------------------------------------------------------------------
@dataclass
class IllusionReport:
    """The spec's diagnostics for one patched direction ``v`` (all effects normalised, 1 = full source behaviour).

    ``v_row``/``v_null``: components of ``v`` in the row space / null space of the readout ``W`` (un-normalised);
    ``effect_*``: patching along ``v``, ``v_row/|v_row|``, ``v_null/|v_null|``, and the whole activation;
    ``var_*``: variance over the dataset of the projection on each unit direction (dormant components: ~0).
    """

    v: torch.Tensor
    v_row: torch.Tensor
    v_null: torch.Tensor
    effect_v: float
    effect_row: float
    effect_null: float
    effect_full: float | None
    var_v: float | None
    var_row: float | None
    var_null: float | None
    flags: list[str] = field(default_factory=list)

    @property
    def illusion_likely(self) -> bool:
        return bool(self.flags)

    def summary(self) -> dict:
        return {"effect_v": self.effect_v, "effect_row": self.effect_row, "effect_null": self.effect_null,
                "effect_full": self.effect_full, "norm_row": float(self.v_row.norm()),
                "norm_null": float(self.v_null.norm()), "var_v": self.var_v, "var_row": self.var_row,
                "var_null": self.var_null, "flags": self.flags, "illusion_likely": self.illusion_likely}


def rowspace_split(v: torch.Tensor, W: torch.Tensor, rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P_row v, v - P_row v)`` for the row space of ``W`` [out, d] (what ``W h`` reads of ``h``)."""
    if W.dim() != 2 or W.shape[1] != v.shape[-1]:
        raise ValueError(f"readout W must be [out, d={v.shape[-1]}] (it reads the site as W @ h); got "
                         f"{list(W.shape)}")
    _, s, vh = torch.linalg.svd(W.double(), full_matrices=False)
    basis = vh[s > rtol * s.max()]  # [r, d]
    row = (v.double() @ basis.T) @ basis
    return row.to(v.dtype), (v.double() - row).to(v.dtype)


def illusion_check(v: torch.Tensor, W: torch.Tensor, effect: Callable[[torch.Tensor], float], *,
                   acts: torch.Tensor | None = None, full_effect: float | None = None, tol: float = 0.1,
                   dormant_tol: float = 1e-3) -> IllusionReport:
    """Diagnose a 1-D patch direction ``v`` [d] read downstream by ``W`` [out, d].

    ``effect(direction) -> normalised effect`` patches along a unit direction; ``acts`` [n, d] (the site over a
    dataset) gives the projection variances; ``full_effect`` is the whole-component patch. Flags:
    ``no_component_reproduces`` (neither part alone gets within ``tol`` of the effect of ``v``),
    ``needs_null_space`` (the row-space part alone falls short while ``v`` has a null-space part),
    ``dormant_row_component`` (the read part has ~0 variance on the data),
    ``full_patch_no_effect`` (patching all of ``h`` does nothing while ``v`` does).
    """
    if v.dim() != 1:
        raise ValueError(f"illusion_check takes one direction [d]; got shape {list(v.shape)}")
    v = v / v.norm()
    v_row, v_null = rowspace_split(v, W)
    e_v = float(effect(v))
    nr, nn_ = float(v_row.norm()), float(v_null.norm())
    e_row = float(effect(v_row / nr)) if nr > 1e-8 else 0.0
    e_null = float(effect(v_null / nn_)) if nn_ > 1e-8 else 0.0
    var = [None, None, None]
    if acts is not None:
        a = acts.reshape(-1, acts.shape[-1]).double()
        var = [float((a @ (u.double() / max(float(u.norm()), 1e-12))).var()) if float(u.norm()) > 1e-8 else 0.0
               for u in (v, v_row, v_null)]
    flags = []
    big = max(abs(e_v), 1e-12)
    if abs(e_v) > tol:
        if abs(e_row - e_v) > tol * big and abs(e_null - e_v) > tol * big:
            flags.append("no_component_reproduces")
        if nn_ > tol and abs(e_row - e_v) > tol * big:
            flags.append("needs_null_space")
        if full_effect is not None and abs(full_effect) < tol:
            flags.append("full_patch_no_effect")
    if var[1] is not None and nr > 1e-8 and var[1] <= dormant_tol * max(var[0], var[2], 1e-12):
        flags.append("dormant_row_component")
    return IllusionReport(v, v_row, v_null, e_v, e_row, e_null, full_effect, *var, flags)


def readout_weight(m: Model, site: str) -> torch.Tensor:
    """The weight ``W`` [out, d] that reads a site: ``blocks.{i}.mlp_act`` -> the MLP down projection (from the
    architecture adapter, ``W_out(i).T``); ``module:<path>:in`` of an ``nn.Linear`` -> its weight. Other sites are
    read by several modules: pass ``W`` yourself."""
    parts = site.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "mlp_act" and parts[1].isdigit():
        m.check_sites([site])
        return m.adapter.W_out(int(parts[1])).detach().T  # TransformerLens [d_mlp, d_model] -> reads as W @ h
    spec = m.sitemap.resolve(site)
    mod = dict(m.module.named_modules()).get(spec.module)
    if spec.io == "in" and isinstance(mod, torch.nn.Linear) and spec.heads is None:
        return mod.weight.detach()
    raise ValueError(f"no single readout weight for {site!r}: use an 'mlp_act' site or a 'module:<linear>:in' site "
                     f"(an nn.Linear), or pass W (the matrix that reads the site) directly")


# -- distributed alignment search ------------------------------------------------------------------------
@dataclass
class DASResult:
    """A learned subspace: ``basis`` [k, d] (orthonormal rows) and the training loss per step."""

    basis: torch.Tensor
    losses: list[float]


def das(m: Model, base, source, site: str, loss_fn: Callable, *, k: int = 1, steps: int = 200, lr: float = 0.05,
        positions="all", seed: int = 0, progress: bool = False) -> DASResult:
    """Learn a k-dim subspace whose patch makes the base run behave like the source (distributed alignment search).

    ``loss_fn(output) -> scalar`` scores the patched base run (e.g. ``lm_target_loss(target_ids)``); the rotation is
    kept orthonormal by ``torch.nn.utils.parametrizations.orthogonal``; model weights are untouched.
    """
    from tqdm.auto import tqdm

    m.check_sites([site])
    if steps < 1 or k < 1:
        raise ValueError(f"das needs steps >= 1 and k >= 1; got steps={steps}, k={k}")
    src = m.record(source, [site], stop_early=True)[site].detach()
    d = src.shape[-1]
    if k > d:
        raise ValueError(f"k={k} exceeds the site width {d}")
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(d, k, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g))
    lin = torch.nn.utils.parametrizations.orthogonal(lin)
    lin.to(device=src.device)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="das", disable=not progress):
        with torch.enable_grad():
            basis = lin.weight.to(src.dtype)
            with m.intervene({site: SubspacePatch(source=src, basis=basis, orthonormalize=False, positions=positions)}):
                loss = loss_fn(m(base))
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    log.info("DAS at %s: loss %.4f -> %.4f", site, losses[0], losses[-1])
    return DASResult(lin.weight.detach().clone(), losses)


def lm_target_loss(target_ids) -> Callable:
    """Cross-entropy of the source-consistent answer token(s) at the last position (a DAS objective)."""
    t = torch.as_tensor(target_ids, dtype=torch.long).reshape(-1)

    def loss(out):
        logits = (out.logits if hasattr(out, "logits") else out[0])[:, -1]
        tt = t.to(logits.device).expand(logits.shape[0]) if t.numel() == 1 else t.to(logits.device)
        return torch.nn.functional.cross_entropy(logits.float(), tt)
    return loss


def interchange_accuracy(m: Model, base, source, site: str, basis: torch.Tensor | None, source_labels, *,
                         positions="all") -> float:
    """Fraction of pairs whose patched prediction (last-position argmax) equals the source-consistent label."""
    labels = torch.as_tensor(source_labels, dtype=torch.long).reshape(-1)
    src = m.record(source, [site], stop_early=True)[site]
    from actlab import Replace
    iv = Replace(value=src, positions=positions) if basis is None else SubspacePatch(source=src, basis=basis,
                                                                                       positions=positions)
    with torch.no_grad(), m.intervene({site: iv}):
        out = m(base)
    pred = (out.logits if hasattr(out, "logits") else out[0])[:, -1].argmax(-1).cpu()
    if pred.shape != labels.shape:
        raise ValueError(f"got {labels.numel()} source labels for {pred.numel()} pairs")
    return float((pred == labels).float().mean())
