"""The prompt view's per-token top-k: ``actlab.utils.top_rows`` (grouped pruning) equals ``torch.topk``, and a TopK SAE's shortcut
through its pre-activations equals the top-k of its dense ``encode`` (ids and values)."""
from __future__ import annotations

import pytest
import torch

from actlab.utils import top_rows
from actlab.web.live import top_latents

CHUNK = 128


@pytest.mark.parametrize("n", [CHUNK * 40, CHUNK * 40 + 37, 300])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_top_rows_equals_topk(n, k):
    g = torch.Generator().manual_seed(n * 31 + k)
    z = torch.randn(17, n, generator=g) * torch.rand(17, 1, generator=g) - 0.5
    z[3] = -z[3].abs()                          # a row with no positive value
    z[5, n - 1] = 50.0                          # the maximum in the last column
    v, i = top_rows(z, k)
    rv, ri = z.topk(k, dim=-1)
    assert torch.equal(v, rv) and torch.equal(i, ri)
    assert torch.equal(z.gather(1, i), v)


def _dict(arch: str, n: int, k: int):
    from actlab.dictionary import DictConfig, build

    d = build(DictConfig(arch=arch, d_in=16, d_sae=n, k=k, site="blocks.0.resid_post"), seed=0)
    with torch.no_grad():
        d.b_enc.uniform_(-2.0, -0.5)      # some tokens have fewer than k positive latents
    return d


@pytest.mark.parametrize("arch,k_sae,k", [("topk", 8, 5), ("topk", 4, 6), ("relu", 0, 5)])
def test_top_latents_equal_encode(arch, k_sae, k):
    d = _dict(arch, CHUNK * 24, k_sae or 8)
    x = torch.randn(30, 16, generator=torch.Generator().manual_seed(1)) * torch.linspace(0, 3, 30)[:, None]
    with torch.no_grad():
        v, i = top_latents(d, x, k)
        rv, ri = d.encode(x).topk(k, dim=-1)
    pos = rv > 0
    assert not bool(pos.all())
    assert torch.equal(i[pos], ri[pos]) and torch.allclose(v, rv, atol=1e-6)
    if arch == "topk":
        assert int((v > 0).sum(-1).max()) <= k_sae
