"""Attention-output SAE attribution (Kissane et al., arXiv 2406.17759): for an SAE trained on a layer's
concatenated per-head outputs ``attn.z`` (``[n_heads * d_head]``), which heads a latent belongs to (decoder norm
per head block) and which source tokens drive it at a destination (direct feature attribution, DFA).

DFA is exact because ``z_h[dest] = sum_src A_h[dest, src] v_h[src]`` is linear in the value vectors:
``pre_f = sum_h sum_src A_h[dest, src] (v_h[src] . W_enc[f, h-block]) + b_enc[f] - W_enc[f] . b_dec``
(the SAE centres its input with ``b_dec``). Grouped-query models share each value head among
``n_heads / n_kv_heads`` query heads (head h reads value head ``h // (n_heads / n_kv_heads)``, as HF's repeat_kv).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.lens.logit_lens import _encode

if TYPE_CHECKING:
    from actlab.dictionary import Dictionary
    from actlab.models import Model

Tensor = torch.Tensor


def head_attribution(dictionary: Dictionary | Tensor, n_heads: int) -> Tensor:
    """``[n_latents, n_heads]``: each latent's share of decoder norm per head block,
    ``||W_dec[f, h-block]|| / sum_h' ||W_dec[f, h'-block]||`` (rows sum to 1; a latent is "mostly head h" above 0.9).
    """
    W = dictionary if isinstance(dictionary, Tensor) else dictionary.W_dec
    W = W.detach().float()
    if W.dim() != 2 or n_heads < 1 or W.shape[1] % n_heads:
        raise ValueError(f"decoder of shape {list(W.shape)} does not split into {n_heads} equal head blocks: an "
                         f"attention-output SAE reads concatenated attn.z (width n_heads * d_head)")
    norms = W.reshape(W.shape[0], n_heads, -1).norm(dim=-1)
    return norms / norms.sum(-1, keepdim=True).clamp_min(1e-30)


@dataclass
class DFAResult:
    """Direct feature attribution at one destination position per row.

    ``values [batch, feature, head, src]``: ``A_h[dest, src] * (v_h[src] . W_enc[f, h-block])``; ``bias [feature]``:
    ``b_enc[f] - W_enc[f] . b_dec``; ``pre [batch, feature]``: the SAE's pre-activation computed from the recorded
    ``attn.z`` (``values.sum((2, 3)) + bias`` equals it); ``acts [batch, feature]``: its activation; ``mask [batch,
    src]``: real (non-padding) source columns; ``tokens [batch, src]`` the input ids."""

    features: list[int]
    values: Tensor
    bias: Tensor
    pre: Tensor
    acts: Tensor
    mask: Tensor
    tokens: Tensor
    layer: int
    position: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """``[batch, feature]``: sum over heads and sources plus the bias (equals ``pre``)."""
        return self.values.sum((2, 3)) + self.bias

    def by_source(self) -> Tensor:
        """``[batch, feature, src]``: summed over heads."""
        return self.values.sum(2)

    def by_head(self) -> Tensor:
        """``[batch, feature, head]``: summed over source positions."""
        return self.values.sum(3)


@torch.no_grad()
def direct_feature_attribution(model: Model, dictionary: Dictionary, inputs: Any, layer: int | None = None,
                               features: Sequence[int] | None = None, *, position: int = -1) -> DFAResult:
    """DFA of ``features`` (default every latent) of an SAE on ``blocks.{layer}.attn.z`` at ``position`` of each
    row (counted over the row's real tokens; -1 = last). ``layer`` defaults to the one in ``dictionary.cfg.site``."""
    ad = model.adapter
    if layer is None:
        parts = dictionary.cfg.site.split(".")
        if not (len(parts) == 4 and parts[0] == "blocks" and parts[2:] == ["attn", "z"] and parts[1].isdigit()):
            raise ValueError(f"give layer=: the dictionary's site {dictionary.cfg.site!r} is not blocks.{{i}}.attn.z")
        layer = int(parts[1])
    h, dh, kv = ad.n_heads, ad.d_head, ad.n_kv_heads
    if dictionary.cfg.is_transcoder or dictionary.cfg.d_in != h * dh:
        raise ValueError(f"DFA needs an SAE on blocks.{layer}.attn.z (d_in = n_heads * d_head = {h * dh}); got a "
                         f"{'transcoder' if dictionary.cfg.is_transcoder else 'dictionary'} with d_in="
                         f"{dictionary.cfg.d_in}")
    if dictionary.cfg.normalize_activations != "none":
        raise ValueError(f"DFA needs a linear encoder input; this SAE normalises each token "
                         f"({dictionary.cfg.normalize_activations!r})")
    feats = list(range(dictionary.cfg.d_sae)) if features is None else [int(f) for f in features]
    bad = [f for f in feats if not 0 <= f < dictionary.cfg.d_sae]
    if bad:
        raise ValueError(f"features {bad} out of range for a dictionary of {dictionary.cfg.d_sae} latents")
    enc = _encode(model, inputs)
    p = f"blocks.{layer}"
    with model.recording([f"{p}.attn.pattern", f"{p}.attn.z"], positions=position) as rec_dest, \
            model.recording([f"{p}.attn.v"], positions="all") as rec_all:
        model(enc)
    A = rec_dest[f"{p}.attn.pattern"].float()            # [b, head, src]
    z = rec_dest[f"{p}.attn.z"].float()                  # [b, head, dh]
    v = rec_all[f"{p}.attn.v"].float()                   # [b, src, kv, dh]
    if kv != h:
        v = v.repeat_interleave(h // kv, dim=2)         # head i reads value head i // (h / kv)
    W = dictionary.W_enc.detach().float()[feats].to(v.device)       # [f, h*dh]
    Wh = W.reshape(len(feats), h, dh)
    vdot = torch.einsum("bshe,fhe->bfhs", v, Wh)         # [b, f, head, src]
    values = A[:, None] * vdot
    cb = dictionary.centre_bias().detach().float().to(v.device)
    bias = dictionary.b_enc.detach().float()[feats].to(v.device) - W @ cb
    pre_all = dictionary.pre_acts(z.flatten(1).to(dictionary.W_enc.dtype).to(dictionary.W_enc.device)).float()
    acts_all = dictionary.encode(z.flatten(1).to(dictionary.W_enc.dtype).to(dictionary.W_enc.device)).float()
    return DFAResult(feats, values, bias, pre_all[:, feats].to(v.device), acts_all[:, feats].to(v.device),
                     enc["attention_mask"].bool(), enc["input_ids"], layer, position,
                     {"model": model.name, "arch": dictionary.cfg.arch})


__all__ = ["DFAResult", "direct_feature_attribution", "head_attribution"]
