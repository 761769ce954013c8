"""MoEfication (Zhang et al. 2022, "MoEfication: Transformer Feed-forward Layers are Mixtures of Experts"): turn a
dense Llama-family model into a Mixtral folder with the same function, so MoTE can run on a real model when no MoE
checkpoint is at hand.

Each block's gated MLP neurons are split into ``n_experts`` equal groups by balanced k-means on their (unit) gate
vectors; the router is a ridge regression from the MLP input to the norm of each group's output (its write to the
residual stream) on real text: the "which experts matter for this token" predictor, scaled down so the softmax over the selected experts is uniform to
about 1e-3, and each expert's down projection is multiplied by ``top_k`` so a token gets the plain sum of its
selected experts. With ``top_k == n_experts`` the folder reproduces the dense model (tested); with fewer it drops
the groups the router predicts to matter least.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from actlab.models import Model

UNIFORM_TOL = 1e-3
"""Largest router-logit spread kept per layer (softmax weights within ~UNIFORM_TOL of uniform)."""


def balanced_kmeans(x: torch.Tensor, k: int, iters: int = 8, seed: int = 0) -> torch.Tensor:
    """``[n]`` cluster ids of the rows of ``x`` (cosine k-means), every cluster exactly ``n // k`` rows: each
    round assigns (row, cluster) pairs greedily by similarity under the capacity, then recomputes the centres."""
    n = x.shape[0]
    if k < 1 or n % k:
        raise ValueError(f"cannot split {n} neurons into {k} equal experts (n_experts must divide d_mlp)")
    cap = n // k
    xn = torch.nn.functional.normalize(x.float(), dim=1)
    g = torch.Generator().manual_seed(seed)
    centres = xn[torch.randperm(n, generator=g)[:k]]
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        sim = xn @ centres.t()                                       # [n, k]
        order = torch.argsort(sim.flatten(), descending=True).tolist()
        got, left, done = [-1] * n, [cap] * k, 0
        for flat in order:
            r, c = divmod(flat, k)
            if got[r] < 0 and left[c]:
                got[r] = c
                left[c] -= 1
                done += 1
                if done == n:
                    break
        assign = torch.tensor(got)
        new = torch.stack([torch.nn.functional.normalize(xn[assign == c].mean(0), dim=0) for c in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return assign


@dataclass
class MoefyReport:
    folder: Path
    n_experts: int
    top_k: int
    groups: list[torch.Tensor] = field(default_factory=list)
    """Per block, ``[n_experts, d_expert]`` neuron indices of each expert."""
    router_r2: list[float] = field(default_factory=list)
    """Per block, R^2 of the ridge router on its fitting tokens."""


def _router_data(model: Model, texts: Sequence[str], layers: Sequence[int], context_length: int, n_tokens: int,
                 seed: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    from actlab.data import pack_contexts

    ids = pack_contexts(model.tokenizer, list(texts), context_length, seed=seed).input_ids
    ids = ids[: max(1, n_tokens // context_length)].to(model.device)
    if ids.numel() < n_tokens // 2:
        raise ValueError(f"need about {n_tokens} tokens of text to fit the routers; got {ids.numel()}")
    sites = [f"blocks.{i}.{s}" for i in layers for s in ("mlp_in", "mlp_act")]
    acts = model.record({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, sites=sites, dtype=torch.float32)
    xin = {i: acts[f"blocks.{i}.mlp_in"].flatten(0, 1) for i in layers}
    act = {i: acts[f"blocks.{i}.mlp_act"].flatten(0, 1) for i in layers}
    return xin, act


def moefy(model: Model, out_dir: str | Path, texts: Sequence[str], *, n_experts: int = 8, top_k: int = 4,
          n_tokens: int = 2048, context_length: int = 128, ridge: float = 1e-2, seed: int = 0,
          layer_chunk: int = 6) -> MoefyReport:
    """Write a Mixtral folder (weights + tokenizer) equivalent to the dense Llama-family ``model`` with each MLP split
    into ``n_experts`` experts, ``top_k`` per token; routers fitted on ``n_tokens`` tokens of ``texts``."""
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = model.module.config
    if getattr(cfg, "model_type", None) not in ("llama", "mistral", "qwen2"):
        raise ValueError(f"moefy needs a dense Llama-family model (gated MLP); {model.name} is "
                         f"{getattr(cfg, 'model_type', '?')!r}")
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k={top_k} must be in 1..n_experts={n_experts}")
    ad, L = model.adapter, model.n_layers
    d_mlp = ad.W_in(0).shape[1]
    if d_mlp % n_experts:
        raise ValueError(f"n_experts={n_experts} must divide d_mlp={d_mlp}")
    de = d_mlp // n_experts
    mcfg = MixtralConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=de,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=getattr(cfg, "head_dim", None),
        hidden_act=cfg.hidden_act, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id, tie_word_embeddings=cfg.tie_word_embeddings, num_local_experts=n_experts,
        num_experts_per_tok=top_k, rope_parameters=dict(cfg.rope_parameters), dtype=torch.float32)
    moe = MixtralForCausalLM(mcfg).eval()
    src = model.module.state_dict()
    own = moe.state_dict()
    with torch.no_grad():
        for name, t in src.items():   # embeddings, attention, norms, head: copied as they are
            if ".mlp." not in name and name in own:
                own[name].copy_(t.float())
    rep = MoefyReport(Path(out_dir), n_experts, top_k)
    for start in range(0, L, layer_chunk):
        layers = list(range(start, min(L, start + layer_chunk)))
        xin, act = _router_data(model, texts, layers, context_length, n_tokens, seed)
        for i in layers:
            wg, wu, wd = ad.W_gate(i).detach().float(), ad.W_in(i).detach().float(), ad.W_out(i).detach().float()
            assign = balanced_kmeans(wg.t(), n_experts, seed=seed)
            groups = torch.stack([(assign == e).nonzero().squeeze(1) for e in range(n_experts)])  # [E, de]
            # what dropping an expert costs the token: the norm of its write to the residual stream
            target = torch.stack([(act[i][:, g] @ wd[g]).norm(dim=1) for g in groups], 1)         # [n, E]
            x = xin[i]
            w = torch.linalg.solve(x.t() @ x + ridge * x.shape[0] * torch.eye(x.shape[1]), x.t() @ target)  # [d, E]
            pred = x @ w
            rep.router_r2.append(float(1 - (pred - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum()))
            spread = float((pred.amax(1) - pred.amin(1)).max()) or 1.0
            mlp = moe.model.layers[i].mlp
            with torch.no_grad():
                mlp.gate.weight.copy_((w * (UNIFORM_TOL / spread)).t())
                mlp.experts.gate_up_proj.copy_(torch.cat([wg.t()[groups], wu.t()[groups]], 1))   # [E, 2de, d]
                mlp.experts.down_proj.copy_(wd.t()[:, groups].permute(1, 0, 2) * top_k)          # [E, d, de]
            rep.groups.append(groups)
        del xin, act
    out = Path(out_dir)
    moe.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    return rep


def demo_texts(n: int = 200) -> list[str]:
    """The first ``n`` documents of the bundled demo corpus (the routers' fitting text by default)."""
    import json

    from actlab.data.corpus import demo_corpus

    with open(demo_corpus()) as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def moefied(model: Model, *, n_experts: int = 8, top_k: int = 6, n_tokens: int = 2048, seed: int = 0) -> Path:
    """The folder of :func:`moefy` applied to ``model`` with routers fitted on the demo corpus, built once under the
    actlab cache (``moefy/<model>-E<n>-k<k>-t<tokens>-s<seed>``) and reused."""
    import shutil
    import tempfile

    from actlab.utils import cache_dir

    name = f"{model.name.replace('/', '--')}-E{n_experts}-k{top_k}-t{n_tokens}-s{seed}"
    final = cache_dir() / "moefy" / name
    if (final / "config.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=final.parent))
    try:
        moefy(model, tmp, demo_texts(), n_experts=n_experts, top_k=top_k, n_tokens=n_tokens, seed=seed)
        tmp.rename(final)
    except OSError:
        if not (final / "config.json").exists():   # not a concurrent builder that got there first
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
