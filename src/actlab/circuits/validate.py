"""Validation by intervention: ablate the graph's most influential latents one at a time and compare the change of
the target (de-meaned logit, or a latent's pre-activation) with what the graph predicts.

Prediction: the linear total effect in the graph, downstream latents responding with slope 1 (active ReLU-like
units): per-unit effects ``e = u (I - W)^-1`` with ``W[t, s] = A[t, s] / a_s`` over the computed latent rows and
``u[s] = A[target, s] / a_s``; ablating ``scale`` of latent s predicts ``-scale * a_s * e[s]``. ``direct`` is the
direct edge alone. Actual: a forward pass of the model with the latent's write removed from its MLP output, either
the real model downstream (``mode='model'``: real MLPs, attention and norms recomputed) or the replacement model
(``mode='replacement'``: every MLP is its transcoder plus the clean error, so downstream latents respond through
their own nonlinearity; attention and norms still recomputed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.circuits.prune import node_influence
from actlab.circuits.replacement import encode_prompt, transcoder_layers

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from actlab.circuits.graph import AttributionGraph
    from actlab.dictionary import Dictionary
    from actlab.models import Model

Tensor = torch.Tensor
MODES = ("replacement", "model")


@dataclass
class AblationResult:
    """Per ablated node: ``labels``, ``predicted`` / ``direct`` / ``actual`` target change; ``correlation`` is
    Pearson's r of predicted vs actual (``direct_correlation`` for the direct edge alone)."""

    labels: list[str]
    predicted: Tensor
    direct: Tensor
    actual: Tensor
    correlation: float
    direct_correlation: float
    mode: str
    scale: float
    baseline_error: float
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "scale": self.scale, "correlation": self.correlation,
                "direct_correlation": self.direct_correlation, "baseline_error": self.baseline_error,
                "nodes": [{"node": lab, "predicted": float(p), "direct": float(d), "actual": float(a)}
                          for lab, p, d, a in zip(self.labels, self.predicted, self.direct, self.actual)],
                **self.meta}


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation (nan when either side is constant)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else float("nan")


def total_effects(graph: AttributionGraph, target: int = 0) -> tuple[Tensor, Tensor]:
    """(total, direct) effect per unit activation of each latent node on target ``target``: ``[n_features]``."""
    nf = graph.n_features
    a = graph.activation_values[graph.selected_features].double()
    A = graph.adjacency.double()
    t = A.shape[0] - graph.n_targets + target
    u = A[t, :nf] / a
    W = A[:nf, :nf] / a[None, :]
    e = torch.linalg.solve((torch.eye(nf, dtype=torch.float64) - W).T, u)
    return e, u


@torch.no_grad()
def _target_value(model: Model, enc: dict, graph: AttributionGraph, target: int, hooks: list) -> float:
    L = graph.n_layers
    if graph.target_feature is not None:
        l_, p, j = graph.target_feature
        site = f"blocks.{l_}.mlp_in"
        with model.hooks(hooks):
            x = model.record(enc, [site], stop_early=False)[site][0, p]
        tc = graph.meta["_tcs"][l_]
        return float(tc.pre_acts(tc.check_input(x.to(tc.W_enc)))[j])
    with model.hooks(hooks):
        logits = model.record(enc, ["logits"], stop_early=False)["logits"][0, -1].double()
    tok = int(graph.logit_tokens[target])
    del L
    return float(logits[tok] - logits.mean())


def _hooks(tcs: list[Dictionary], errors: dict[int, Tensor] | None, ablate: tuple[int, int, int, float] | None):
    """Site handlers: the replacement MLPs (when ``errors``: transcoder of the MLP input + the clean error) and the
    removal of ``amount * W_dec[latent]`` from block ``layer``'s MLP output at ``pos`` (``ablate``)."""
    pairs: list = []
    store: dict[int, Tensor] = {}
    for i, tc in enumerate(tcs):
        if errors is None and (ablate is None or ablate[0] != i):
            continue

        def cap(act, ctx, i=i):
            store[i] = act

        def rep(act, ctx, i=i, tc=tc):
            out = act
            if errors is not None:
                x = store.pop(i)[0].to(tc.W_enc)
                out = (tc(x) + errors[i].to(tc.W_enc))[None].to(act)
            if ablate is not None and ablate[0] == i:
                _, p, j, amount = ablate
                out = out.clone()
                out[0, p] = out[0, p] - (amount * tc.W_dec[j]).to(out)
            return out

        if errors is not None:
            pairs.append((f"blocks.{i}.mlp_in", cap))
        pairs.append((f"blocks.{i}.mlp_out", rep))
    return pairs


@torch.no_grad()
def validate_by_ablation(model: Model, transcoders: Mapping[str, Dictionary] | Sequence[Dictionary],
                         graph: AttributionGraph, k: int = 10, *, mode: str = "replacement", scale: float = 1.0,
                         target: int = 0) -> AblationResult:
    """Ablate (remove ``scale`` of the write of) each of the ``k`` most influential latent nodes in turn; compare
    the actual change of the target with the graph's prediction (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale (fraction of the activation removed) must be in (0, 1]; got {scale}")
    if not 0 <= target < graph.n_targets:
        raise ValueError(f"target {target} out of range: the graph has {graph.n_targets} targets")
    tcs = transcoder_layers(model, transcoders)
    enc = encode_prompt(model, graph.input_tokens.tolist())
    nf = graph.n_features
    if nf == 0:
        raise ValueError("the graph has no latent nodes to ablate")
    infl = node_influence(graph)[:nf]
    order = infl.argsort(descending=True)[:min(k, nf)]
    e, u = total_effects(graph, target)
    errors = None
    if mode == "replacement":
        sites = [s for i in range(len(tcs)) for s in (f"blocks.{i}.mlp_in", f"blocks.{i}.mlp_out")]
        rec = model.record(enc, sites, stop_early=False)
        errors = {}
        for i, tc in enumerate(tcs):
            x = rec[f"blocks.{i}.mlp_in"][0].to(tc.W_enc)
            errors[i] = rec[f"blocks.{i}.mlp_out"][0].to(tc.W_enc) - tc(x)
    graph.meta["_tcs"] = tcs
    try:
        clean = _target_value(model, enc, graph, target, [])
        base = _target_value(model, enc, graph, target, _hooks(tcs, errors, None))
        labels, pred, direct, actual = [], [], [], []
        for n in order.tolist():
            l_, p, j = graph.active_features[graph.selected_features[n]].tolist()
            a = float(graph.activation_values[graph.selected_features[n]])
            labels.append(graph.node_label(n))
            pred.append(-scale * a * float(e[n]))
            direct.append(-scale * a * float(u[n]))
            actual.append(_target_value(model, enc, graph, target, _hooks(tcs, errors, (l_, p, j, scale * a))) - base)
    finally:
        graph.meta.pop("_tcs", None)
    P, D, Ac = torch.tensor(pred), torch.tensor(direct), torch.tensor(actual)
    return AblationResult(labels, P, D, Ac, pearson(P, Ac), pearson(D, Ac), mode, scale, abs(base - clean),
                          {"clean_target": clean, "k": len(labels)})


__all__ = ["AblationResult", "pearson", "total_effects", "validate_by_ablation"]
