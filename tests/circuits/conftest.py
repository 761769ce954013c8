"""Fixtures for attribution-graph tests: tiny models with random biases and norm gains, random transcoders at every
block, and a tiny GPT-2 with a planted two-latent chain (token X -> latent A at block 0 -> latent B at block 1 ->
logit T) whose MLPs compute exactly what the planted transcoders say (up to GELU vs ReLU)."""
from __future__ import annotations

import pytest
import torch

X_TOKEN, T_TOKEN = 100, 200
PROMPT = [1, 40, 60, 80, X_TOKEN]          # <bos>, three bytes, X last



def random_transcoders(model, arch: str = "relu", d_sae: int = 32, skip: bool = False, seed: int = 0):
    """One transcoder per block (mlp_in -> mlp_out) with random weights and biases; some latents fire."""
    from actlab.dictionary import DictConfig, build

    g = torch.Generator().manual_seed(100 + seed)
    d = model.adapter.d_model
    out = []
    for i in range(model.adapter.n_layers):
        c = DictConfig(arch=arch, d_in=d, d_sae=d_sae, d_out=d, k=min(8, d_sae), site=f"blocks.{i}.mlp_in",
                       site_out=f"blocks.{i}.mlp_out", skip=skip)
        t = build(c, seed=seed + i)
        with torch.no_grad():
            t.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.5)
            t.b_pre.copy_(torch.randn(d, generator=g) * 0.1)
            t.b_dec.copy_(torch.randn(d, generator=g) * 0.1)
            if skip:
                t.W_skip.copy_(torch.randn(d, d, generator=g) * 0.05)
        out.append(t)
    return out




def _plant_unit(ad, i: int, x: torch.Tensor, pos: int, out_dir: torch.Tensor, margin: float = 6.0):
    """Make MLP ``i`` one GELU unit that fires (pre-activation +margin) only at ``pos`` and writes ``out_dir``;
    returns (encoder row, encoder bias). ``x [P, d]``: the block's MLP inputs on the prompt."""
    P = x.shape[0]
    want = torch.full((P,), 0.0)
    want[pos] = 2 * margin
    w = torch.linalg.lstsq(x.double(), want.double()[:, None]).solution[:, 0].float()   # w.x_p = 2m at pos, else 0
    b = -margin
    with torch.no_grad():
        W_in, W_out = ad.W_in(i), ad.W_out(i)
        W_in.zero_()
        W_in[:, 0] = w
        ad.b_in(i).zero_()
        ad.b_in(i)[0] = b
        W_out.zero_()
        W_out[0] = out_dir
        ad.b_out(i).zero_()
    return w, b


@pytest.fixture(scope="module")
def planted():
    """(model, transcoders, (A latent, B latent)) for the planted chain; the prompt is ``PROMPT`` (X last)."""
    from actlab import load_model
    from actlab.dictionary import DictConfig, build

    m = load_model("tiny-gpt2")                                     # a fresh module: edited in place below
    ad = m.adapter
    d = ad.d_model
    g = torch.Generator().manual_seed(7)
    ids = torch.tensor([PROMPT])
    u = torch.randn(d, generator=g)
    u = 8.0 * u / u.norm()                                          # A's write
    W_U = ad.W_U.detach()
    v = W_U[:, T_TOKEN] - W_U.mean(1)
    v = 8.0 * v / v.norm()                                          # B's write: raises T
    x0 = m.record(ids, ["blocks.0.mlp_in"])["blocks.0.mlp_in"][0]
    wA, bA = _plant_unit(ad, 0, x0, len(PROMPT) - 1, u)
    x1 = m.record(ids, ["blocks.1.mlp_in"])["blocks.1.mlp_in"][0]
    wB, bB = _plant_unit(ad, 1, x1, len(PROMPT) - 1, v)
    tcs = []
    A, B = 3, 5
    for i, (w, b, out) in enumerate(((wA, bA, u), (wB, bB, v))):
        c = DictConfig(arch="relu", d_in=d, d_sae=8, d_out=d, site=f"blocks.{i}.mlp_in",
                       site_out=f"blocks.{i}.mlp_out")
        t = build(c, seed=i)
        with torch.no_grad():
            t.b_pre.zero_()
            t.b_dec.zero_()
            t.W_dec.mul_(0.3)                                       # distractors: small writes
            t.b_enc.copy_(torch.randn(8, generator=g) * 0.3)        # some distractors fire
            j = A if i == 0 else B
            t.W_enc[j] = w
            t.b_enc[j] = b
            t.W_dec[j] = out
        tcs.append(t)
    return m, tcs, (A, B)
