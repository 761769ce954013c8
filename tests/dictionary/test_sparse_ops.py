"""The fused sparse TopK kernel equals the dense eager reference (outputs and every gradient)."""
import pytest
import torch

from actlab.dictionary import DictConfig, build
from actlab.dictionary.batchtopk import batch_topk_selector
from actlab.dictionary.sparse_ops import eager_sparse_dict, fused_sparse_dict, stable_argsort, topk_selector


def _grads(fn, params, x, select, in_place=False):
    P = [p.clone().requires_grad_() for p in params]
    if in_place:
        P[0].grad = torch.zeros_like(P[0])
        P[2].grad = torch.zeros_like(P[2])
    xx = x.clone().requires_grad_()
    recon, vals, idx = fn(xx, P[0], P[1], P[2], P[3], P[4], select, in_place)
    w = torch.linspace(-1, 1, recon.shape[1], dtype=x.dtype)
    ((recon - x).pow(2).sum() + (recon * w).sum()).backward()
    return [recon, vals, idx] + [p.grad for p in P] + [xx.grad]


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("in_place", [False, True])
def test_fused_equals_eager_topk(tied, in_place):
    g = torch.Generator().manual_seed(0)
    B, d, n, k = 48, 12, 96, 5
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    b_pre = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    params = [torch.randn(n, d, generator=g, dtype=torch.float64) / 3, 0.1 * torch.randn(n, generator=g, dtype=torch.float64),
              torch.randn(n, d, generator=g, dtype=torch.float64) / 3, b_pre,
              b_pre if tied else 0.1 * torch.randn(d, generator=g, dtype=torch.float64)]
    a = _grads(fused_sparse_dict, params, x, topk_selector(k), in_place)
    b = _grads(eager_sparse_dict, params, x, topk_selector(k))
    names = ["recon", "vals", "idx", "W_enc", "b_enc", "W_dec", "b_pre", "b_dec", "x"]
    for name, u, v in zip(names, a, b):
        assert torch.equal(u, v) if name == "idx" else torch.allclose(u, v, atol=1e-10), name
    assert a[3].abs().sum() > 0 and a[5].abs().sum() > 0   # gradients are not trivially zero


def test_fused_equals_eager_batchtopk():
    g = torch.Generator().manual_seed(1)
    B, d, n, k = 32, 8, 64, 3
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    params = [torch.randn(n, d, generator=g, dtype=torch.float64) / 3, torch.zeros(n, dtype=torch.float64),
              torch.randn(n, d, generator=g, dtype=torch.float64) / 3, torch.zeros(d, dtype=torch.float64)]
    params.append(params[3])
    sa, sb = {}, {}
    a = _grads(fused_sparse_dict, params, x, batch_topk_selector(k, n, sa))
    b = _grads(eager_sparse_dict, params, x, batch_topk_selector(k, n, sb))
    assert int((a[1] > 0).sum()) == B * k      # exactly B*k active over the batch
    for u, v in zip(a, b):
        assert torch.allclose(u.double(), v.double(), atol=1e-10)


def test_trained_step_fused_equals_eager():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    outs = []
    for fused in (True, False):
        m = build(DictConfig(arch="topk", d_in=16, d_sae=64, k=4, fused=fused), seed=3)
        out = m.step(x, x)
        out.loss.backward()
        outs.append((out.loss.detach(), m.W_enc.grad.clone(), m.W_dec.grad.clone(), m.b_dec.grad.clone()))
    for u, v in zip(*outs):
        assert torch.allclose(u, v, atol=1e-5, rtol=1e-4)


def test_stable_argsort_matches_torch():
    flat = torch.randint(0, 1000, (5000,))
    assert torch.equal(stable_argsort(flat, 1000), flat.sort(stable=True).indices)
    assert torch.equal(stable_argsort(flat, 100000), flat.sort(stable=True).indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,k", [(4096, 32), (16384, 32), (1000, 8), (512, 64)])
def test_relu_topk_equals_torch_topk(dtype, n, k):
    """The grouped selection returns exactly torch.topk's positive values at the same latents (rows with few
    positive values included: their remaining slots are zeros)."""
    from actlab.dictionary.sparse_ops import relu_topk
    g = torch.Generator().manual_seed(n + k)
    pre = torch.randn(64, n, generator=g)
    pre[:4] -= 3.5                                                     # rows with fewer than k positive values
    pre[4] = torch.randn(n, generator=g).round()                      # heavy ties
    pre[5, 7] = 1e4                                                    # one dominant latent in a group
    pre[6, :] = -1.0                                                   # no positive value at all
    pre = pre.to(dtype)
    vals, idx = relu_topk(pre, k)
    ref_v, ref_i = pre.topk(k, dim=-1)
    ref_v = ref_v.relu()
    assert vals.shape == idx.shape == (64, k) and vals.dtype == dtype
    assert torch.equal(vals.float().sort(-1).values, ref_v.float().sort(-1).values)
    assert torch.equal(pre.gather(1, idx).relu(), vals)               # values are those of the indices named
    assert all(len(set(r)) == k for r in idx.tolist())                # k distinct latents per row
    for r in range(64):                      # every latent strictly above the k-th value (no tie) is chosen
        above = (pre[r] > ref_v[r].min().to(dtype)) & (pre[r] > 0)
        assert set(above.nonzero().flatten().tolist()) <= set(idx[r].tolist())
