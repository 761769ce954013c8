"""Direct logit attribution: the final residual stream at one position, split into what wrote it (token and
position embeddings, every attention head through its W_O, each attention output bias, each MLP, optionally the
latents of SAEs / transcoders plus their bias and error terms), each read out to a logit (or logit difference).

Exactness: the final norm's scale is frozen at its clean value (``frozen_norm``), so the read-out is affine:
``logit = sum_c (centre(c) * gain) . u + bias . u + b_U . u`` with ``u = W_U[:, target] (- W_U[:, contrast])``.
LayerNorm's centring (mean removal) is applied to each component separately; its scale (std) and RMSNorm's RMS are
treated as constants. The contributions then sum to the model's logit (difference) up to float rounding (tested at
1e-4 on every tiny causal architecture). Pre-LN blocks only: every writer adds into the residual stream, GPT-NeoX's
parallel residual included (attention and MLP each write once per block).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.lens.logit_lens import _encode
from actlab.lens.readout import _require_head, frozen_norm
from actlab.models import Unsupported

if TYPE_CHECKING:
    from actlab.dictionary import Dictionary
    from actlab.models import Model

Tensor = torch.Tensor
DICT_SITES = ("attn_out", "attn.z", "mlp_out")


@dataclass
class DLAResult:
    """``values [batch, component]``: each component's direct effect on the logit (difference) in logit units;
    ``labels``: component names (``embed``, ``pos_embed``, ``blocks.{i}.attn.z#h`` for head h, ``blocks.{i}.attn.bias``,
    ``blocks.{i}.mlp_out``, ``<site>:f{j}`` for dictionary latent j, ``<site>:b_dec``, ``<site>:error``,
    ``<site>:skip``, ``final_norm.bias``, ``unembed.bias``); ``logit [batch]``: the model's own logit (difference);
    ``resid_error [batch]``: max |sum of components - final residual| (0 up to rounding)."""

    labels: list[str]
    values: Tensor
    logit: Tensor
    resid_error: Tensor
    target: Tensor
    contrast: Tensor | None
    position: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """``[batch]``: the sum of the contributions (equals ``logit``)."""
        return self.values.sum(-1)

    def top(self, k: int = 10, row: int = 0) -> list[tuple[str, float]]:
        """The ``k`` components with the largest |contribution| in one row, as (label, value)."""
        v = self.values[row]
        idx = v.abs().topk(min(k, v.numel())).indices
        return [(self.labels[int(i)], float(v[i])) for i in idx]

    def by_layer(self, row: int = 0) -> dict[str, float]:
        """Contributions summed per block (``blocks.{i}.attn``, ``blocks.{i}.mlp``) plus the non-block terms."""
        out: dict[str, float] = {}
        for lab, v in zip(self.labels, self.values[row].tolist()):
            key = lab.split(":")[0]
            parts = key.split(".")
            if parts[0] == "blocks":
                key = f"blocks.{parts[1]}.{'mlp' if parts[2].startswith('mlp') else 'attn'}"
            out[key] = out.get(key, 0.0) + v
        return out

    def plot(self, path: str, row: int = 0, k: int = 20) -> str:
        """A PNG bar chart of the top-k components of one row (written atomically); returns the path."""
        from actlab.lens.plots import plot_dla

        return plot_dla(self, path, row, k)


def _token_ids(model: Model, tok: Any, n: int, what: str) -> Tensor:
    """One id per row from an int, a string (must be one token), or a list of either."""
    items = tok if isinstance(tok, (list, tuple)) else [tok] * n
    if isinstance(tok, Tensor):
        items = tok.reshape(-1).tolist() if tok.numel() > 1 else [int(tok)] * n
    if len(items) != n:
        raise ValueError(f"{what}: {len(items)} token ids given for a batch of {n} inputs")
    ids = []
    for t in items:
        if isinstance(t, str):
            enc = model.tokenizer(t, add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                raise ValueError(f"{what} {t!r} is {len(enc)} tokens for this tokenizer ({enc}); give one token or "
                                 f"its id")
            t = enc[0]
        ids.append(int(t))
    vocab = model.adapter.W_U.shape[1]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"{what} ids {bad} out of range for a vocabulary of {vocab}")
    return torch.tensor(ids)


def _check_dict_site(model: Model, site: str, d: Dictionary) -> tuple[int, str]:
    parts = site.split(".")
    kind = ".".join(parts[2:])
    if parts[0] != "blocks" or not parts[1].isdigit() or kind not in DICT_SITES:
        raise ValueError(f"dictionary site {site!r}: direct logit attribution splits blocks.{{i}}.attn_out, "
                         f"blocks.{{i}}.attn.z or blocks.{{i}}.mlp_out (a transcoder is keyed by its output site)")
    if d.cfg.normalize_activations != "none":
        raise ValueError(f"dictionary at {site}: per-token input normalisation {d.cfg.normalize_activations!r} is "
                         f"not linear; direct logit attribution needs normalize_activations='none'")
    if d.cfg.is_transcoder and kind != "mlp_out":
        raise ValueError(f"a transcoder is keyed by the site it predicts (blocks.i.mlp_out); got {site!r}")
    return int(parts[1]), kind


@torch.no_grad()
def direct_logit_attribution(model: Model, inputs: Any, target: Any, contrast: Any = None, *, position: int = -1,
                             dictionaries: Mapping[str, Dictionary] | None = None,
                             heads: bool = True) -> DLAResult:
    """Split the logit of ``target`` (minus that of ``contrast``) at ``position`` into its direct contributions.

    ``inputs``: text(s), ids or a tokenized dict (left padding is fine: position counts each row's real tokens,
    -1 = the last). ``target``/``contrast``: a token id or one-token string, or one per row. ``dictionaries``:
    ``{site: Dictionary}`` for ``blocks.{i}.attn_out`` / ``blocks.{i}.attn.z`` (SAEs, replacing that layer's heads)
    or ``blocks.{i}.mlp_out`` (an SAE on it, or a transcoder predicting it from ``cfg.site``), replacing that layer's
    component by latents + ``b_dec`` + error. ``heads=False`` keeps each attention layer whole (``attn_out``).
    """
    _require_head(model)
    ad = model.adapter
    L = ad.n_layers
    dictionaries = dict(dictionaries or {})
    dsite = {s: _check_dict_site(model, s, d) for s, d in dictionaries.items()}
    enc = _encode(model, inputs)
    n = enc["input_ids"].shape[0]
    tgt = _token_ids(model, target, n, "target")
    con = None if contrast is None else _token_ids(model, contrast, n, "contrast")
    sites = ["embed", "blocks.0.resid_pre", f"blocks.{L - 1}.resid_post", "logits"]
    for i in range(L):
        sites += [f"blocks.{i}.attn.z" if heads else f"blocks.{i}.attn_out", f"blocks.{i}.mlp_out"]
    for s, d in dictionaries.items():
        sites += [s] + ([d.cfg.site] if d.cfg.is_transcoder else [])
        if dsite[s][1] == "attn_out":
            sites.append(s)
    model.check_sites(sites)
    acts = model.record(enc, list(dict.fromkeys(sites)), positions=position, stop_early=False)
    dev = acts["logits"].device
    x = acts[f"blocks.{L - 1}.resid_post"].float()
    fn = frozen_norm(model, x)
    W_U = ad.W_U.detach().float()
    u = W_U[:, tgt.to(W_U.device)].T
    if con is not None:
        u = u - W_U[:, con.to(W_U.device)].T
    u = u.to(dev)
    w = fn.gain.to(dev) * u                                       # [b, d]: read-out weight per dimension

    labels: list[str] = []
    cols: list[Tensor] = []
    resid = torch.zeros_like(x)

    def add(label: str, vec: Tensor) -> None:  # vec [b, d] (or [d]) written into the residual
        nonlocal resid
        vec = vec.float().expand_as(x)
        resid = resid + vec
        labels.append(label)
        cols.append((fn.centre(vec) * w).sum(-1))

    def add_latents(site: str, acts_bn: Tensor, dec_nd: Tensor) -> None:  # latents' writes acts * dec rows
        contrib = acts_bn.float() * (w @ fn.centre(dec_nd.float()).T)     # [b, n]
        nonlocal resid
        resid = resid + acts_bn.float() @ dec_nd.float()
        labels.extend(f"{site}:f{j}" for j in range(dec_nd.shape[0]))
        cols.extend(contrib.unbind(-1))

    pre = acts["blocks.0.resid_pre"].float()
    try:
        has_pos = ad.W_pos is not None      # learned absolute positions (GPT-2); rotary models raise Unsupported
    except Unsupported:
        has_pos = False
    if has_pos:
        tok = acts["embed"].float()
        add("embed", tok)
        add("pos_embed", pre - tok)
    else:
        add("embed", pre)
    for i in range(L):
        # -- attention ---------------------------------------------------------------------------
        a_site = f"blocks.{i}.attn_out"
        z_site = f"blocks.{i}.attn.z"
        W_O = ad.W_O(i).detach().float().to(dev)                         # [h, dh, d]
        b_O = ad.b_O(i)
        if a_site in dictionaries:
            _dict_terms(a_site, dictionaries[a_site], acts[a_site], None, add, add_latents)
        elif z_site in dictionaries:
            _dict_terms(z_site, dictionaries[z_site], acts[z_site].flatten(-2), W_O, add, add_latents)
            if b_O is not None:
                add(f"blocks.{i}.attn.bias", b_O.detach().to(dev))
        elif heads:
            per_head = torch.einsum("bhe,hed->bhd", acts[z_site].float(), W_O)
            for h in range(per_head.shape[1]):
                add(f"{z_site}#{h}", per_head[:, h])
            if b_O is not None:
                add(f"blocks.{i}.attn.bias", b_O.detach().to(dev))
        else:
            add(a_site, acts[a_site])
        # -- MLP ---------------------------------------------------------------------------------
        m_site = f"blocks.{i}.mlp_out"
        if m_site in dictionaries:
            d = dictionaries[m_site]
            src = acts[d.cfg.site] if d.cfg.is_transcoder else acts[m_site]
            _dict_terms(m_site, d, src, None, add, add_latents, target=acts[m_site])
        else:
            add(m_site, acts[m_site])
    if fn.bias is not None:
        labels.append("final_norm.bias")
        cols.append((fn.bias.to(dev)[None] * u).sum(-1))
    b_U = ad.b_U
    if b_U is not None:
        bU = b_U.detach().float().to(dev)
        labels.append("unembed.bias")
        cols.append(bU[tgt.to(dev)] - (bU[con.to(dev)] if con is not None else 0.0))
    logits = acts["logits"].float()
    logit = logits.gather(-1, tgt.to(dev)[:, None])[:, 0]
    if con is not None:
        logit = logit - logits.gather(-1, con.to(dev)[:, None])[:, 0]
    values = torch.stack(cols, -1)
    return DLAResult(labels, values, logit, (resid - x).abs().amax(-1), tgt, con, position,
                     {"model": model.name, "norm_centred": fn.centred, "norm_fit_error": fn.fit_error,
                      "dictionaries": {s: d.cfg.arch for s, d in dictionaries.items()}})


def _dict_terms(site: str, d: Dictionary, x: Tensor, W_O: Tensor | None, add, add_latents,
                target: Tensor | None = None) -> None:
    """Latents, decoder bias, skip and error of a dictionary at ``site``; ``W_O`` maps an attn.z decoder to d_model.

    ``x``: the dictionary's input; ``target``: what it reconstructs (default ``x``: an SAE)."""
    x = x.to(d.W_dec.dtype).to(d.W_dec.device)
    a = d.encode(x)
    y = x if target is None else target.to(x.dtype).to(x.device)
    recon = d.decode(a, x)
    dev = W_O.device if W_O is not None else y.device

    def out(v: Tensor) -> Tensor:  # d_out (or heads*d_head) -> d_model
        v = v.float().to(dev)
        if W_O is None:
            return v
        h, dh, _ = W_O.shape
        return torch.einsum("...he,hed->...d", v.reshape(*v.shape[:-1], h, dh), W_O)

    add_latents(site, a.to(dev), out(d.W_dec.detach()))
    add(f"{site}:b_dec", out(d.b_dec.detach()))
    if d.cfg.skip:
        add(f"{site}:skip", out(d.skip_term(x)))
    add(f"{site}:error", out(y - recon))


__all__ = ["DLAResult", "direct_logit_attribution"]
