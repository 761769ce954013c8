"""Codebook features: 1-sparse planted atoms recovered (MMCS > 0.9, inputs snapped to their own atom > 90 %),
straight-through gradient, forcing a code."""
import pytest
import torch

from actlab.dictionary.codebook import CodebookLayer
from actlab.dictionary.synthetic import mmcs


def one_sparse(n=4096, d=16, m=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
    which = torch.randint(0, m, (n,), generator=g)
    scale = 1 + 0.25 * torch.rand(n, generator=g)
    return scale[:, None] * D[which] + 0.02 * torch.randn(n, d, generator=g), D, which


def test_one_sparse_recovery_and_snapping():
    x, D, which = one_sparse()
    layer = CodebookLayer(16, 24, k=1, dead_after=20, seed=1)
    opt = torch.optim.Adam(layer.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        xb = x[torch.randint(0, x.shape[0], (256,), generator=g)]
        layer(xb)                                   # usage bookkeeping
        loss = layer.aeloss(xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19 and step < 200:
            layer.replace_dead(xb, g)
    assert mmcs(D, layer.codes.detach())[0] > 0.9
    # each input snaps to a code whose nearest atom is the input's generating atom
    atom_of_code = (torch.nn.functional.normalize(layer.codes.detach(), dim=1) @
                    torch.nn.functional.normalize(D, dim=1).t()).argmax(1)
    idx = layer.select(x)[:, 0]
    assert float((atom_of_code[idx] == which).float().mean()) > 0.9


def test_straight_through_and_forcing():
    layer = CodebookLayer(8, 10, k=2, seed=0)
    x = torch.randn(5, 8, requires_grad=True)
    out = layer(x)
    w = torch.randn(5, 8)
    (out * w).sum().backward()
    assert torch.equal(x.grad, w)                   # d out / d x = identity
    assert layer.codes.grad is not None and layer.codes.grad.abs().sum() > 0
    layer.forced = 7
    assert bool((layer.select(x.detach()) == 7).any(-1).all())
    with pytest.raises(ValueError, match="k=11"):
        CodebookLayer(8, 10, k=11)


def test_init_codes_from_activations():
    """k-means initialisation puts the codes on the planted atoms before any training; sampling picks real rows."""
    x, D, _ = one_sparse(n=2048)
    g = torch.Generator().manual_seed(0)
    layer = CodebookLayer(16, 12, k=1).init_codes(x, "kmeans", iters=20, generator=g)
    assert mmcs(D, layer.codes.detach())[0] > 0.9
    layer = CodebookLayer(16, 12, k=1).init_codes(x, "sample", generator=g)
    assert bool((torch.cdist(layer.codes.detach(), x).min(1).values < 1e-3).all())  # every code is an input row
    with pytest.raises(ValueError, match="at least as many rows"):
        CodebookLayer(16, 12).init_codes(x[:5])
    with pytest.raises(ValueError, match="width 16"):
        CodebookLayer(8, 4).init_codes(x)
