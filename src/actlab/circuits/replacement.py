"""The local replacement model of one prompt: every MLP replaced by its transcoder plus an error term, attention
patterns and normalisation scales frozen at their clean values (circuit-tracer's construction).

With those freezes the residual stream is an affine function of its sources: the token (+ position) embeddings, the
transcoder latents' writes ``a_f * W_dec[f]``, and the error vectors (true MLP output - transcoder output). Every
node's pre-activation (a latent's encoder input ``W_enc[f] . (mlp_in - b_pre) + b_enc[f]``, or a de-meaned logit)
is then exactly the sum of one edge per source plus a constant (biases: norm biases, ``b_V``/``b_O``, ``b_dec``,
``b_enc``). ``rows`` computes edges by an exact hand-written transpose of that affine map, a batch of targets at a
time; ``forward`` is the affine map itself, run once with the true sources (it must reproduce the model's own
activations, else ``Unsupported``) and once with none (the constants).

Pre-LN blocks only (GPT-2, Llama/Mistral/Qwen/SmolLM, Mixtral, GPT-NeoX with or without parallel residual); each
block must have exactly two norms (before attention and before the MLP), found from the modules' own inputs and
outputs, not from their names.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from actlab.lens import FrozenNorm, frozen_norm
from actlab.models import Unsupported

if TYPE_CHECKING:
    from actlab.dictionary import Dictionary
    from actlab.models import Model

Tensor = torch.Tensor


def encode_prompt(model: Model, prompt: Any) -> dict[str, Tensor]:
    """One prompt as ``{input_ids [1, P], attention_mask}``: a text, a list of ids or a 1-D/2-D id tensor."""
    if isinstance(prompt, str):
        enc = dict(model.tokenize(prompt))
    else:
        ids = torch.as_tensor(prompt, dtype=torch.long)
        ids = ids[None] if ids.dim() == 1 else ids
        enc = {"input_ids": ids.to(model.device)}
    ids = enc["input_ids"]
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"an attribution graph is built for one prompt; got input ids of shape {list(ids.shape)}")
    enc["attention_mask"] = torch.ones_like(ids)
    return enc


def transcoder_layers(model: Model, transcoders: Mapping[str, Dictionary] | Sequence[Dictionary]
                      ) -> list[Dictionary]:
    """One transcoder per block, in layer order, each reading ``blocks.{i}.mlp_in`` and predicting
    ``blocks.{i}.mlp_out`` with a linear input (``normalize_activations='none'``)."""
    items = list(transcoders.values()) if isinstance(transcoders, Mapping) else list(transcoders)
    L = model.adapter.n_layers
    by_layer: dict[int, Dictionary] = {}
    for d in items:
        c = d.cfg
        if not c.is_transcoder:
            raise ValueError(f"dictionary at {c.site!r} is an SAE; attribution graphs need transcoders "
                             f"(blocks.i.mlp_in -> blocks.i.mlp_out)")
        parts = c.site.split(".")
        want_out = f"blocks.{parts[1]}.mlp_out" if len(parts) == 3 else None
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] != "mlp_in" \
                or c.site_out != want_out:
            raise ValueError(f"transcoder {c.site!r} -> {c.site_out!r}: attribution graphs need transcoders from "
                             f"blocks.i.mlp_in to blocks.i.mlp_out")
        if c.normalize_activations != "none":
            raise ValueError(f"transcoder at {c.site}: per-token input normalisation {c.normalize_activations!r} "
                             f"is not linear; attribution graphs need normalize_activations='none'")
        i = int(parts[1])
        if i in by_layer:
            raise ValueError(f"two transcoders for block {i}")
        by_layer[i] = d
    missing = [i for i in range(L) if i not in by_layer]
    if missing:
        raise ValueError(f"attribution graphs need a transcoder at every block of this {L}-block model; missing "
                         f"blocks {missing}")
    return [by_layer[i] for i in range(L)]


def _block_norms(model: Model, enc: dict, acts: dict[str, Tensor]) -> list[tuple[str, str]]:
    """(pre-attention norm path, pre-MLP norm path) of every block, found from the norm-like modules' recorded
    inputs/outputs in one forward pass (the pre-MLP norm outputs ``mlp_in``, the pre-attention one reads
    ``resid_pre``), never from their names."""
    ad = model.adapter
    d = ad.d_model
    cands: list[list[str]] = []
    for i in range(ad.n_layers):
        root = ad.block_path(i)
        cands.append([f"{root}.{name}" for name, mod in ad.block(i).named_modules()
                      if name and not list(mod.children()) and isinstance(getattr(mod, "weight", None), torch.Tensor)
                      and mod.weight.dim() == 1 and mod.weight.shape[0] == d
                      and not isinstance(mod, (torch.nn.Linear, torch.nn.Embedding))])
    sites = [s for c in cands for p in c for s in (f"module:{p}:in", f"module:{p}")]
    rec = model.record(enc, sites, stop_early=False) if sites else {}

    def close(a: Tensor, b: Tensor) -> bool:
        return a.shape == b.shape and bool((a - b).abs().max() <= 1e-4 * max(1.0, float(b.abs().max())))

    out = []
    for i, c in enumerate(cands):
        pre = acts[f"blocks.{i}.resid_pre"][0].float()
        mlp_in = acts[f"blocks.{i}.mlp_in"][0].float()
        ln2 = [p for p in c if close(rec[f"module:{p}"][0].float(), mlp_in)]
        ln1 = [p for p in c if p not in ln2 and close(rec[f"module:{p}:in"][0].float(), pre)]
        extra = [p for p in c if p not in ln1 + ln2]
        if len(ln1) != 1 or len(ln2) != 1 or extra:
            raise Unsupported(ad.name, f"block {i}: attribution graphs need exactly one norm before attention and "
                                       f"one before the MLP; found pre-attention {ln1}, pre-MLP {ln2}, other "
                                       f"norm-like modules {extra}")
        out.append((ln1[0], ln2[0]))
    return out


def _norm(n: FrozenNorm, x: Tensor, bias: bool = True) -> Tensor:
    """The frozen norm applied to ``x [..., P, d]``: ``centre(x) * gain (+ bias)``."""
    y = n.centre(x) * n.gain
    return y + n.bias if bias and n.bias is not None else y


def _norm_t(n: FrozenNorm, g: Tensor) -> Tensor:
    """Transpose of the frozen norm's linear part (the centring projection is symmetric)."""
    return n.centre(g * n.gain)


@dataclass
class ReplacementModel:
    """The local replacement model of one prompt (see the module doc). Built by ``ReplacementModel.build``."""

    input_ids: Tensor            # [P]
    embed: Tensor                # [P, d]: resid_pre of block 0 (token + position embedding)
    norm1: list[FrozenNorm]
    norm2: list[FrozenNorm]
    norm_final: FrozenNorm
    patterns: list[Tensor]       # [H, P(query), P(key)] per block
    W_V: list[Tensor]            # [kv_heads, d, d_head]
    b_V: list[Tensor | None]     # [kv_heads, d_head]
    W_O: list[Tensor]            # [H, d_head, d]
    b_O: list[Tensor | None]     # [d]
    parallel: bool
    transcoders: list[Dictionary]
    features: Tensor             # [n, 3] (layer, pos, latent) of every active latent, sorted
    values: Tensor               # [n] their activations
    errors: Tensor               # [L, P, d]: true mlp_out - transcoder output
    mlp_in: Tensor               # [L, P, d]: the model's own MLP inputs (checked against ``forward``)
    logits: Tensor               # [vocab] at the last position
    W_U: Tensor                  # [d, vocab]
    b_U: Tensor | None
    fit_error: float             # max relative mismatch of the affine model vs the model's own activations

    @property
    def n_layers(self) -> int:
        return len(self.transcoders)

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def row_size(self) -> int:
        """Sources per row: active latents, then errors (layer-major), then token embeddings."""
        return self.n_features + (self.n_layers + 1) * self.n_pos

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def build(cls, model: Model, transcoders: Mapping[str, Dictionary] | Sequence[Dictionary], prompt: Any,
              dtype: torch.dtype = torch.float32) -> ReplacementModel:
        """Record one clean forward of ``prompt`` and freeze it into the affine replacement model."""
        ad = model.adapter
        if ad.post_norm:
            raise Unsupported(ad.name, "post-LN blocks (the norm after the residual add) are not supported by "
                                       "attribution graphs; pre-LN causal models only")
        if ad.unembed is None or ad.final_norm is None:
            raise Unsupported(ad.name, "attribution graphs to logits need an unembedding and a final norm")
        tcs = transcoder_layers(model, transcoders)
        L = ad.n_layers
        enc = encode_prompt(model, prompt)
        sites = ["blocks.0.resid_pre", f"blocks.{L - 1}.resid_post", "logits"]
        for i in range(L):
            sites += [f"blocks.{i}.resid_pre", f"blocks.{i}.attn.pattern", f"blocks.{i}.attn_out",
                      f"blocks.{i}.mlp_in", f"blocks.{i}.mlp_out"]
        acts = model.record(enc, list(dict.fromkeys(sites)), stop_early=False)
        f32 = {k: v[0].to(dtype) for k, v in acts.items()}
        parallel = bool(getattr(ad, "parallel", False))
        n1, n2, pats, WV, bV, WO, bO, errs, feats, vals = [], [], [], [], [], [], [], [], [], []
        mods = dict(model.module.named_modules())
        norms = _block_norms(model, enc, acts)
        for i in range(L):
            p1, p2 = norms[i]
            pre = f32[f"blocks.{i}.resid_pre"]
            mid = pre if parallel else pre + f32[f"blocks.{i}.attn_out"]
            n1.append(_cast(frozen_norm(model, pre, norm=mods[p1]), dtype))
            n2.append(_cast(frozen_norm(model, mid, norm=mods[p2]), dtype))
            pats.append(f32[f"blocks.{i}.attn.pattern"].permute(1, 0, 2).contiguous())
            WV.append(ad.W_V(i).detach().to(dtype))
            bv = ad.b_V(i)
            bV.append(None if bv is None else bv.detach().to(dtype))
            WO.append(ad.W_O(i).detach().to(dtype))
            bo = ad.b_O(i)
            bO.append(None if bo is None else bo.detach().to(dtype))
            tc = tcs[i]
            x = acts[f"blocks.{i}.mlp_in"][0]
            xin = x.to(device=tc.W_enc.device, dtype=tc.W_enc.dtype)
            a = tc.encode(xin)
            recon = tc.decode(a, xin)
            errs.append(f32[f"blocks.{i}.mlp_out"] - recon.to(device=pre.device, dtype=dtype))
            pos, lat = a.nonzero(as_tuple=True)
            feats.append(torch.stack([torch.full_like(pos, i), pos, lat], 1).cpu())
            vals.append(a[pos, lat].to(dtype).cpu())
        final_in = f32[f"blocks.{L - 1}.resid_post"]
        nf = _cast(frozen_norm(model, final_in), dtype)
        b_U = ad.b_U
        rm = cls(enc["input_ids"][0].cpu(), f32["blocks.0.resid_pre"], n1, n2, nf, pats, WV, bV, WO, bO, parallel,
                 tcs, torch.cat(feats), torch.cat(vals), torch.stack(errs),
                 torch.stack([f32[f"blocks.{i}.mlp_in"] for i in range(L)]), f32["logits"][-1],
                 ad.W_U.detach().to(dtype), None if b_U is None else b_U.detach().to(dtype), 0.0)
        rm.fit_error = rm._check(final_in)
        return rm

    def _check(self, final_in: Tensor) -> float:
        """Run the affine model on the true sources; it must reproduce the recorded MLP inputs and logits."""
        mlp_in, final = self.forward(self.embed, self.injections())
        logits = final[-1] @ self.W_U + (0.0 if self.b_U is None else self.b_U)
        err = 0.0
        for got, want, what in ((mlp_in, self.mlp_in, "MLP inputs"), (logits, self.logits, "last-position logits")):
            e = float((got - want).abs().max() / want.abs().max().clamp_min(1e-6))
            err = max(err, e)
            if not e <= 1e-3:
                raise Unsupported("replacement model", f"the frozen affine model does not reproduce the model's own "
                                                       f"{what} (relative error {e:.3g}); an architecture step it "
                                                       f"does not know (extra norms, attention softcaps, scaled "
                                                       f"residuals)?")
        return err

    # -- the affine map and its transpose ------------------------------------------------------------------
    def injections(self) -> Tensor:
        """``[L, P, d]``: what the sources write at each MLP output (latent writes + errors)."""
        inj = self.errors.clone()
        for i, tc in enumerate(self.transcoders):
            m = self.features[:, 0] == i
            if m.any():
                pos, lat = self.features[m, 1], self.features[m, 2]
                W = tc.W_dec.detach()[lat.to(tc.W_dec.device)].to(inj)
                inj[i].index_add_(0, pos.to(inj.device), W * self.values[m].to(inj)[:, None])
        return inj

    def _attn(self, i: int, h1: Tensor) -> Tensor:
        """Attention output of block ``i`` from its normed input ``h1 [..., P, d]`` with the pattern frozen."""
        v = torch.einsum("...pd,kde->...pke", h1, self.W_V[i])
        if self.b_V[i] is not None:
            v = v + self.b_V[i]
        rep = self.W_O[i].shape[0] // v.shape[-2]
        v = v.repeat_interleave(rep, dim=-2)
        z = torch.einsum("hqk,...khe->...qhe", self.patterns[i], v)
        a = torch.einsum("...qhe,hed->...qd", z, self.W_O[i])
        return a + self.b_O[i] if self.b_O[i] is not None else a

    def _attn_t(self, i: int, g: Tensor) -> Tensor:
        """Transpose of the attention map's linear part: gradient at the output -> gradient at the normed input."""
        gz = torch.einsum("bqd,hed->bqhe", g, self.W_O[i])
        gv = torch.einsum("hqk,bqhe->bkhe", self.patterns[i], gz)
        kv = self.W_V[i].shape[0]
        gv = gv.reshape(*gv.shape[:2], kv, -1, gv.shape[-1]).sum(3)
        return torch.einsum("bkje,jde->bkd", gv, self.W_V[i])

    def _mlp_const(self, i: int, h2: Tensor) -> Tensor:
        """The transcoder's input-linear part of the MLP output: ``b_dec`` + skip."""
        tc = self.transcoders[i]
        out = tc.b_dec.detach().to(h2)
        if tc.cfg.skip:
            out = out + h2 @ tc.W_skip.detach().to(h2)
        return out

    def forward(self, embed: Tensor, inj: Tensor) -> tuple[Tensor, Tensor]:
        """(MLP inputs ``[L, P, d]``, final normed residual ``[P, d]``) of the affine model for sources
        ``embed [P, d]`` and MLP-output injections ``inj [L, P, d]``; all-zero sources give the constants."""
        x = embed
        ins = []
        for i in range(self.n_layers):
            a = self._attn(i, _norm(self.norm1[i], x))
            mid = x if self.parallel else x + a
            h2 = _norm(self.norm2[i], mid)
            ins.append(h2)
            mlp = inj[i] + self._mlp_const(i, h2)
            x = x + a + mlp if self.parallel else mid + mlp
        return torch.stack(ins), _norm(self.norm_final, x)

    def rows(self, layers: Tensor, positions: Tensor, vectors: Tensor) -> Tensor:
        """Edges into a batch of targets: ``[B, row_size]``.

        Target b reads ``vectors[b] [d]`` at position ``positions[b]`` of block ``layers[b]``'s MLP input (a
        latent's encoder row) or, with ``layers[b] == n_layers``, of the final normed residual (a de-meaned
        unembedding column). Edge to a latent = ``a_f * W_dec[f] . g``, to an error = ``err . g``, to a token =
        ``embed . g``, with ``g`` the exact transpose of the affine map at the source's injection point."""
        L, P = self.n_layers, self.n_pos
        B = int(layers.shape[0])
        dt = self.embed.dtype
        vectors = vectors.to(self.embed)
        out = torch.zeros(B, self.row_size, dtype=dt)
        bidx = torch.arange(B)
        g = torch.zeros(B, P, self.embed.shape[-1], dtype=dt, device=self.embed.device)
        top = layers == L
        if top.any():
            gy = torch.zeros_like(g)
            gy[bidx[top], positions[top]] = vectors[top]
            g = _norm_t(self.norm_final, gy)
        f_layer = self.features[:, 0]
        for i in range(int(layers.max().clamp_max(L)) if B else 0, -1, -1):
            if i == L:
                continue
            self._source_edges(i, g, out)
            seed = layers == i
            gh2 = torch.zeros_like(g)
            if seed.any():
                gh2[bidx[seed], positions[seed]] = vectors[seed]
            tc = self.transcoders[i]
            if tc.cfg.skip:
                gh2 = gh2 + g @ tc.W_skip.detach().to(g).T
            if self.parallel:
                g = g + _norm_t(self.norm2[i], gh2) + _norm_t(self.norm1[i], self._attn_t(i, g))
            else:
                gm = g + _norm_t(self.norm2[i], gh2)
                g = gm + _norm_t(self.norm1[i], self._attn_t(i, gm))
        del f_layer
        tok0 = self.n_features + L * P
        out[:, tok0:tok0 + P] = (g * self.embed).sum(-1).to(out.device)
        return out

    def _source_edges(self, i: int, g: Tensor, out: Tensor) -> None:
        """Fill the edges from block ``i``'s latents and errors, ``g [B, P, d]`` being the gradient at its MLP
        output."""
        P = self.n_pos
        e0 = self.n_features + i * P
        out[:, e0:e0 + P] = (g * self.errors[i]).sum(-1).to(out.device)
        m = (self.features[:, 0] == i).nonzero()[:, 0]
        if not m.numel():
            return
        pos, lat = self.features[m, 1], self.features[m, 2]
        tc = self.transcoders[i]
        W = tc.W_dec.detach()[lat.to(tc.W_dec.device)].to(g) * self.values[m].to(g)[:, None]   # [n, d]: a_f W_dec[f]
        out[:, m] = (g[:, pos.to(g.device)] * W).sum(-1).to(out.device)

    # -- target values -------------------------------------------------------------------------------------
    def encoder_rows(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(layers, positions, encoder rows ``[n, d]``) of active latents ``idx`` (indices into ``features``)."""
        f = self.features[idx]
        rows = torch.stack([self.transcoders[int(l_)].W_enc.detach()[int(j)].to(self.embed)
                            for l_, j in zip(f[:, 0].tolist(), f[:, 2].tolist())]) if len(idx) else \
            torch.zeros(0, self.embed.shape[-1], dtype=self.embed.dtype)
        return f[:, 0], f[:, 1], rows

    def feature_pre(self, idx: Tensor, mlp_in: Tensor | None = None) -> Tensor:
        """Encoder pre-activations ``W_enc[f] . (mlp_in - b_pre) + b_enc[f]`` of latents ``idx`` (default: on
        the model's own MLP inputs)."""
        mlp_in = self.mlp_in if mlp_in is None else mlp_in
        vals = []
        for l_, p, j in self.features[idx].tolist():
            tc = self.transcoders[l_]
            x = mlp_in[l_, p] - tc.b_pre.detach().to(mlp_in)
            vals.append(x @ tc.W_enc.detach()[j].to(mlp_in) + tc.b_enc.detach()[j].to(mlp_in))
        return torch.stack(vals) if vals else torch.zeros(0, dtype=self.embed.dtype)

    def logit_vectors(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(de-meaned unembedding columns ``[k, d]``, de-meaned bias ``[k]``) of vocabulary ids ``tokens``:
        the read-out of ``logit[t] - mean(logits)``, as circuit-tracer attributes."""
        W = self.W_U
        cols = (W[:, tokens] - W.mean(1, keepdim=True)).T
        b = torch.zeros(len(tokens), dtype=W.dtype) if self.b_U is None else \
            (self.b_U[tokens] - self.b_U.mean()).cpu()
        return cols, b

    def constants(self, idx: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The constant (bias) part of the pre-activation of latents ``idx`` and of de-meaned logits ``tokens``:
        the affine model run with every source zero."""
        L, P, d = self.n_layers, self.n_pos, self.embed.shape[-1]
        mlp0, final0 = self.forward(torch.zeros(P, d, dtype=self.embed.dtype, device=self.embed.device),
                                    torch.zeros(L, P, d, dtype=self.embed.dtype, device=self.embed.device))
        cols, b = self.logit_vectors(tokens)
        return self.feature_pre(idx, mlp0), (final0[-1] @ cols.T).cpu() + b


def _cast(n: FrozenNorm, dtype: torch.dtype) -> FrozenNorm:
    return FrozenNorm(n.gain.to(dtype), n.centred, None if n.bias is None else n.bias.to(dtype), n.fit_error)


__all__ = ["ReplacementModel", "encode_prompt", "transcoder_layers"]
