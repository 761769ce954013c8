"""Attribution graphs (circuit-tracer's scheme): nodes are active transcoder latents, error nodes (one per block and
position), token embeddings and target logits; ``adjacency[t, s]`` is the direct effect of source s on target t's
pre-activation in the local replacement model. Rows are computed for the logits, then for latents in order of their
influence on the logits so far (a backward search that stops at ``max_feature_nodes``).

Node order, as circuit-tracer stores it: ``[selected latents, errors (layer-major), tokens, targets]``. Every
computed row satisfies ``pre_activation = row.sum() + bias`` exactly (``identity_error`` reports the worst case).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actlab.circuits.config import GraphConfig
from actlab.circuits.replacement import ReplacementModel

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from actlab.dictionary import Dictionary
    from actlab.models import Model

Tensor = torch.Tensor
KIND = "attribution-graph"
VERSION = 1


@dataclass
class AttributionGraph:
    """A dense attribution graph (see the module doc); ``save``/``load`` as an actlab artifact folder."""

    prompt: str
    input_tokens: Tensor          # [P]
    active_features: Tensor       # [n_active, 3] (layer, pos, latent)
    activation_values: Tensor     # [n_active]
    selected_features: Tensor     # [n_sel]: indices into active_features, the latent nodes
    adjacency: Tensor             # [N, N], rows = targets, columns = sources
    logit_tokens: Tensor          # [K] target vocabulary ids (empty for a latent target)
    logit_probabilities: Tensor   # [K] (a latent target: [1.0])
    n_layers: int
    bias: Tensor                  # [N]: constant part of each computed row's pre-activation (0 elsewhere)
    pre_activation: Tensor        # [N]: the model's own value of each computed row (latent pre-act, logit - mean)
    computed: Tensor              # [N] bool: rows computed
    dropped: Tensor               # [N]: sum of each computed row's edges from active latents left out of the graph
    target_feature: list[int] | None = None   # (layer, pos, latent) when the target is a latent
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(self.input_tokens.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.selected_features.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.logit_probabilities.shape[0])

    @property
    def target_weights(self) -> Tensor:
        """``[N]``: the targets' weights (probabilities) at the end, 0 elsewhere (circuit-tracer's logit_weights)."""
        w = torch.zeros(self.adjacency.shape[0], dtype=self.adjacency.dtype)
        w[-self.n_targets:] = self.logit_probabilities.to(w.dtype)
        return w

    @property
    def identity_error(self) -> float:
        """max |sum of a computed row's edges + its bias + its edges from latents left out (``max_feature_nodes``)
        - the node's pre-activation| (0 up to rounding)."""
        r = self.computed
        total = self.adjacency[r].sum(1) + self.bias[r] + self.dropped[r]
        return float((total - self.pre_activation[r]).abs().max()) if r.any() else 0.0

    def node_kind(self, i: int) -> str:
        """'feature', 'error', 'token' or 'logit' (a latent target is 'target')."""
        nf, L, P = self.n_features, self.n_layers, self.n_pos
        if i < nf:
            return "feature"
        if i < nf + L * P:
            return "error"
        if i < nf + (L + 1) * P:
            return "token"
        return "logit" if self.target_feature is None else "target"

    def node_label(self, i: int) -> str:
        """A readable name: ``L{layer}/f{latent}@{pos}``, ``err L{layer}@{pos}``, ``tok {id}@{pos}``, ``logit {id}``."""
        nf, L, P = self.n_features, self.n_layers, self.n_pos
        k = self.node_kind(i)
        if k == "feature":
            l_, p, j = self.active_features[self.selected_features[i]].tolist()
            return f"L{l_}/f{j}@{p}"
        if k == "error":
            l_, p = divmod(i - nf, P)
            return f"err L{l_}@{p}"
        if k == "token":
            p = i - nf - L * P
            return f"tok {int(self.input_tokens[p])}@{p}"
        t = i - nf - (L + 1) * P
        if self.target_feature is not None:
            l_, p, j = self.target_feature
            return f"target L{l_}/f{j}@{p}"
        return f"logit {int(self.logit_tokens[t])}"

    # -- persistence --------------------------------------------------------------------------------------
    _TENSORS = ("input_tokens", "active_features", "activation_values", "selected_features", "adjacency",
                "logit_tokens", "logit_probabilities", "bias", "pre_activation", "computed", "dropped")

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` + ``graph.safetensors`` (an actlab artifact of kind 'attribution-graph')."""
        from actlab.artifact import save_artifact

        tensors = {k: getattr(self, k).contiguous() for k in self._TENSORS}
        tensors["computed"] = tensors["computed"].to(torch.uint8)
        cfg = {"prompt": self.prompt, "n_layers": self.n_layers, "target_feature": self.target_feature,
               "meta": self.meta}
        return save_artifact(path, KIND, cfg, tensors, version=VERSION, tensors_file="graph.safetensors")

    @classmethod
    def load(cls, path: str | Path) -> AttributionGraph:
        from actlab.artifact import load_artifact

        art = load_artifact(path, KIND, version=VERSION, tensors_file="graph.safetensors")
        t = dict(art.tensors)
        t["computed"] = t["computed"].bool()
        c = art.config
        return cls(prompt=c["prompt"], n_layers=int(c["n_layers"]), target_feature=c.get("target_feature"),
                   meta=c.get("meta", {}), **t)


@torch.no_grad()
def salient_logits(logits: Tensor, max_n_logits: int = 10, desired_logit_prob: float = 0.95
                   ) -> tuple[Tensor, Tensor]:
    """(ids, probabilities) of the fewest top logits whose cumulative probability reaches ``desired_logit_prob``
    (at most ``max_n_logits``), as circuit-tracer picks them."""
    probs = torch.softmax(logits.double(), -1)
    top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
    cut = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(desired_logit_prob, dtype=top_p.dtype))) + 1
    return top_i[:cut], top_p[:cut].float()


def _token_id(model: Model, t: Any) -> int:
    if isinstance(t, str):
        ids = model.tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"target {t!r} is {len(ids)} tokens for this tokenizer ({ids}); give one token or its id")
        return int(ids[0])
    return int(t)


def attribute(model: Model, transcoders: Mapping[str, Dictionary] | Sequence[Dictionary], prompt: Any,
              cfg: GraphConfig | None = None, *, target: Any = None, target_feature: Sequence[int] | None = None,
              dtype: torch.dtype = torch.float32, progress: bool = False) -> AttributionGraph:
    """The attribution graph of ``prompt`` (text or ids) through per-layer ``transcoders``.

    Targets: the salient logits at the last position (default), one or more given tokens (``target``: id or
    one-token string, or a list), or one active latent ``target_feature = (layer, pos, latent)``.
    """
    cfg = cfg or GraphConfig()
    rm = ReplacementModel.build(model, transcoders, prompt, dtype=dtype)
    L, P = rm.n_layers, rm.n_pos
    nA = rm.n_features
    probs_all = torch.softmax(rm.logits.double(), -1)
    tf = None
    if target_feature is not None:
        tf = [int(v) for v in target_feature]
        hit = ((rm.features == torch.tensor(tf)).all(1)).nonzero()[:, 0]
        if not hit.numel():
            raise ValueError(f"target_feature {tf} (layer, pos, latent) is not active on this prompt")
        t_idx = hit
        tl, tp, tv = rm.encoder_rows(t_idx)
        logit_ids, logit_p = torch.zeros(0, dtype=torch.long), torch.ones(1)
        t_pre = rm.feature_pre(t_idx)
        t_bias = rm.constants(t_idx, logit_ids)[0]
        candidates = (rm.features[:, 0] < tf[0]).nonzero()[:, 0]
    else:
        if target is None:
            logit_ids, logit_p = salient_logits(rm.logits, cfg.max_n_logits, cfg.desired_logit_prob)
        else:
            items = target if isinstance(target, (list, tuple)) else [target]
            logit_ids = torch.tensor([_token_id(model, t) for t in items])
            logit_p = probs_all[logit_ids].float()
        vec, _ = rm.logit_vectors(logit_ids)
        tl, tp, tv = torch.full((len(logit_ids),), L), torch.full((len(logit_ids),), P - 1), vec
        t_pre = (rm.logits[logit_ids] - rm.logits.mean()).cpu()
        t_bias = rm.constants(torch.zeros(0, dtype=torch.long), logit_ids)[1]
        candidates = torch.arange(nA)
    K = int(logit_p.shape[0])
    n_max = len(candidates) if cfg.max_feature_nodes <= 0 else min(cfg.max_feature_nodes, len(candidates))
    src = rm.row_size                                   # columns over all active latents
    t_rows = rm.rows(tl, tp, tv)
    feat_rows: dict[int, Tensor] = {}
    visited = torch.zeros(nA, dtype=torch.bool)
    bs = max(1, cfg.batch_size)
    while len(feat_rows) < n_max:
        if n_max == len(candidates):
            pending = candidates[~visited[candidates]]
        else:
            infl = _partial_influence(t_rows, logit_p, feat_rows, nA)
            order = candidates[infl[candidates].argsort(descending=True)]
            pending = order[~visited[order]][:min(cfg.update_interval * bs, n_max - len(feat_rows))]
        if not pending.numel():
            break
        for s in range(0, len(pending), bs):
            idx = pending[s:s + bs]
            r = rm.rows(*rm.encoder_rows(idx))
            for j, row in zip(idx.tolist(), r):
                feat_rows[j] = row
            visited[idx] = True
            if progress:
                print(f"rows {len(feat_rows)}/{n_max}", flush=True)
    sel = torch.tensor(sorted(feat_rows), dtype=torch.long)
    n_sel = len(sel)
    cols = torch.cat([sel, torch.arange(nA, src)])
    N = n_sel + (L + 1) * P + K
    A = torch.zeros(N, N, dtype=dtype)
    F = torch.stack([feat_rows[j] for j in sel.tolist()]) if n_sel else None
    if F is not None:
        A[:n_sel, :src - nA + n_sel] = F[:, cols]
    A[N - K:, :src - nA + n_sel] = t_rows[:, cols]
    bias = torch.zeros(N, dtype=dtype)
    pre = torch.zeros(N, dtype=dtype)
    dropped = torch.zeros(N, dtype=dtype)
    left_out = torch.ones(nA, dtype=torch.bool)
    left_out[sel] = False
    if F is not None:
        dropped[:n_sel] = F[:, :nA][:, left_out].sum(1)
    dropped[N - K:] = t_rows[:, :nA][:, left_out].sum(1)
    computed = torch.zeros(N, dtype=torch.bool)
    if n_sel:
        c_f, _ = rm.constants(sel, torch.zeros(0, dtype=torch.long))
        bias[:n_sel], pre[:n_sel], computed[:n_sel] = c_f.cpu(), rm.feature_pre(sel).cpu(), True
    bias[N - K:], pre[N - K:], computed[N - K:] = t_bias.to(dtype), t_pre.to(dtype), True
    meta = {"model": model.name, "fit_error": rm.fit_error, "n_active": nA, "config": cfg.__dict__.copy(),
            "transcoders": [tc.cfg.site for tc in rm.transcoders]}
    text = prompt if isinstance(prompt, str) else model.tokenizer.decode(rm.input_ids.tolist()) \
        if model.tokenizer is not None else ""
    return AttributionGraph(text, rm.input_ids, rm.features, rm.values, sel, A, logit_ids, logit_p, L, bias, pre,
                            computed, dropped, tf, meta)


def _partial_influence(t_rows: Tensor, logit_p: Tensor, feat_rows: dict[int, Tensor], nA: int) -> Tensor:
    """Influence of every active latent on the targets through the rows computed so far (power series)."""
    keys = list(feat_rows)
    R = torch.cat([torch.stack([feat_rows[k] for k in keys])[:, :nA] if keys else t_rows[:0, :nA],
                   t_rows[:, :nA]]).abs().double()
    R = R / R.sum(1, keepdim=True).clamp_min(1e-10)
    row_of = torch.full((nA,), -1, dtype=torch.long)
    if keys:
        row_of[torch.tensor(keys)] = torch.arange(len(keys))
    prod = torch.cat([torch.zeros(len(keys), dtype=torch.double), logit_p.double()]) @ R
    infl = prod.clone()
    for _ in range(10_000):
        nxt = torch.zeros(len(keys) + len(logit_p), dtype=torch.double)
        has = row_of >= 0
        nxt[row_of[has]] = prod[has]
        prod = nxt @ R
        if not prod.any():
            break
        infl += prod
    return infl


__all__ = ["AttributionGraph", "GraphConfig", "attribute", "salient_logits"]
