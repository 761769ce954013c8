"""Sparse kernels for k-sparse dictionaries: a fused encode/select/decode autograd Function.

Why: with k of n latents active per row, only the encoder forward GEMM has to be dense. The decoder is an
``embedding_bag`` (B*k*d work), the gradient of the active activations is a sampled product (SDDMM) and both
weight gradients are ``CSR^T @ dense`` products with B*k non-zeros, instead of three more dense B x n x d GEMMs.
``eager_sparse_dict`` computes the same thing with plain dense autograd; a test holds the two equal.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from actlab.utils import top_indices

# A selector maps dense pre-activations [B, n] to (values [B, kk], indices [B, kk] int64); values may be 0 where
# a slot is inactive (BatchTopK). The gradient flows to a slot only where its value is > 0 (ReLU semantics).
Selector = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _csr(crow, col, values, size) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def topk_selector(k: int) -> Selector:
    """Per-row top-k of the pre-activations, then ReLU (``relu_topk``)."""
    def select(pre: torch.Tensor):
        return relu_topk(pre, k)
    return select


_ORDER_KEYS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def relu_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pre.topk(k, -1, sorted=False)`` with the values ReLU'd: (values [B, k] >= 0, indices [B, k]).

    Why: ``torch.topk`` on CPU costs ~10-30 ns per element, more than the bf16 encoder GEMM that produced ``pre``.
    Here (CPU, 2-d contiguous) the selection runs on the floats' bit patterns as integers (non-negative floats order
    like their bits, negative ones all below them) through ``actlab.utils.top_indices``'s grouped pruning. The positive part equals
    ``torch.topk``'s; a row with fewer than k positive values gets zeros in the remaining slots at unspecified
    indices (``torch.topk`` would name the largest negatives, which ReLU zeroes too).
    """
    key_dtype = _ORDER_KEYS.get(pre.dtype)
    if pre.device.type != "cpu" or key_dtype is None or pre.dim() != 2 or not pre.is_contiguous():
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        return vals.relu_(), idx
    idx = top_indices(pre.view(key_dtype), k)
    return pre.gather(1, idx).relu_(), idx


def _csr_rows(idx: torch.Tensor, n: int, values: torch.Tensor) -> torch.Tensor:
    """[B, kk] indices (sorted per row) -> CSR [B, n] with the given per-slot values."""
    B, kk = idx.shape
    crow = torch.arange(0, B * kk + 1, kk, device=idx.device)
    return _csr(crow, idx.reshape(-1), values.reshape(-1), (B, n))


class _Transposed:
    """The CSR pattern of S^T ([n, B]) for a fixed index set, reused for several value arrays."""

    def __init__(self, idx: torch.Tensor, n: int):
        B, kk = idx.shape
        flat = idx.reshape(-1)
        self.perm = stable_argsort(flat, n)
        counts = torch.bincount(flat, minlength=n)
        self.crow = torch.zeros(n + 1, dtype=torch.long, device=idx.device)
        torch.cumsum(counts, 0, out=self.crow[1:])
        self.col = torch.div(self.perm, kk, rounding_mode="floor")
        self.n, self.B = n, B

    def mm(self, values: torch.Tensor, dense: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """S^T(values) @ dense -> [n, dense.shape[1]]; with ``out``, accumulate into it in place."""
        S = _csr(self.crow, self.col, values.reshape(-1)[self.perm], (self.n, self.B))
        if out is None:
            return S @ dense
        return torch.addmm(out, S, dense, out=out)


def stable_argsort(flat: torch.Tensor, n: int) -> torch.Tensor:
    """Stable argsort of latent indices in [0, n); numpy's radix sort for n <= 65536 (far faster on CPU than
    torch.sort, whose parallel sort also suffers badly when cores are shared)."""
    if flat.device.type != "cpu":
        return flat.sort(stable=True).indices
    a = flat.numpy()
    a = a.astype(np.uint16) if n <= 65536 else a.astype(np.int32)
    return torch.from_numpy(np.argsort(a, kind="stable"))


_WORKSPACE: dict[tuple, torch.Tensor] = {}


def workspace(shape: tuple[int, ...], dtype: torch.dtype, device, tag: str = "") -> torch.Tensor:
    """A reused scratch buffer (avoids page-faulting a fresh B x n pre-activation matrix every step); ``tag``
    keeps buffers of equal shape that are used together apart."""
    key = (tuple(shape), dtype, str(device), tag)
    buf = _WORKSPACE.get(key)
    if buf is None:
        if len(_WORKSPACE) > 8:
            _WORKSPACE.clear()
        buf = _WORKSPACE[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


class SparseDictFn(torch.autograd.Function):
    """recon = embedding_bag(sel(relu? (x - b_pre) @ W_enc^T + b_enc), W_dec) + b_dec, with sparse backward.

    Inputs: x [B, d_in], W_enc [n, d_in], b_enc [n], W_dec [n, d_out], b_pre [d_in], b_dec [d_out]; the selector
    is a plain Python callable. Outputs: recon [B, d_out], values [B, kk], indices [B, kk] (the last two carry
    no gradient; values are for metrics and auxiliary losses).

    ``grads_in_place``: add the two weight gradients straight into the existing ``W_enc.grad`` / ``W_dec.grad``
    buffers (which the caller zeroes) instead of returning fresh ``[n, d]`` tensors; saves two large allocations
    per step. Other contributions to those gradients still accumulate normally.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_pre, b_dec, select: Selector, grads_in_place: bool = False,
                select_dtype: torch.dtype | None = None):
        xc = x - b_pre
        if select_dtype is None or select_dtype == xc.dtype:
            pre = encoder_preacts(xc, W_enc, b_enc, xc.dtype)
            vals, idx = select(pre)
            del pre
            idx, order = idx.sort(dim=-1)  # CSR wants sorted columns per row
            vals = vals.gather(-1, order)
        else:   # low-precision selection, full-precision values of the selected latents
            pre = encoder_preacts(xc, W_enc, b_enc, select_dtype)
            sel, idx = select(pre)
            del pre
            idx, order = idx.sort(dim=-1)
            live = sel.gather(-1, order) > 0
            vals = exact_preacts(xc, W_enc, b_enc, idx).relu_().mul_(live)
        recon = F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")
        recon += b_dec
        ctx.save_for_backward(xc, W_enc, W_dec, vals, idx)
        ctx.mark_non_differentiable(vals, idx)
        ctx.in_place = grads_in_place and W_enc.grad is not None and W_dec.grad is not None
        ctx.params = (W_enc, W_dec) if ctx.in_place else None
        return recon, vals, idx

    @staticmethod
    def backward(ctx, g_recon, _gv, _gi):
        xc, W_enc, W_dec, vals, idx = ctx.saved_tensors
        n = W_enc.shape[0]
        g_recon = g_recon.contiguous()
        pattern = _csr_rows(idx, n, torch.zeros_like(vals))
        g_vals = torch.sparse.sampled_addmm(pattern, g_recon, W_dec.t()).values().view_as(vals)
        g_pre = g_vals * (vals > 0)
        T = _Transposed(idx, n)
        need = ctx.needs_input_grad
        if ctx.in_place:
            P_enc, P_dec = ctx.params
            T.mm(vals, g_recon, out=P_dec.grad)
            T.mm(g_pre, xc, out=P_enc.grad)
            g_W_dec = g_W_enc = None
        else:
            g_W_dec = T.mm(vals, g_recon) if need[3] else None
            g_W_enc = T.mm(g_pre, xc) if need[1] else None
        g_b_enc = torch.zeros(n, dtype=g_pre.dtype, device=g_pre.device).index_add_(
            0, idx.reshape(-1), g_pre.reshape(-1))
        g_xc_sum = g_b_enc @ W_enc                      # sum over rows of d(loss)/d(xc)
        g_b_dec = g_recon.sum(0) if need[5] else None
        g_b_pre = -g_xc_sum if need[4] else None
        g_x = None
        if need[0]:
            g_x = F.embedding_bag(idx, W_enc, per_sample_weights=g_pre, mode="sum")
        return g_x, g_W_enc, (g_b_enc if need[2] else None), g_W_dec, g_b_pre, g_b_dec, None, None, None


def encoder_preacts(xc: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``xc @ W_enc^T + b_enc`` in ``dtype`` as one GEMM into a reused buffer: the bias rides along as an extra
    input column of ones (a separate ``pre += b_enc`` pass over the [B, n] result costs a third of a bf16 GEMM).
    The result is a workspace buffer: valid until the next call."""
    (B, d), n = xc.shape, W_enc.shape[0]
    if xc.device.type != "cpu":          # GPUs: addmm fuses the bias in the GEMM epilogue
        pre = workspace((B, n), dtype, xc.device)
        return torch.addmm(b_enc.to(dtype), xc.to(dtype), W_enc.to(dtype).t(), out=pre)
    xa = workspace((B, d + 1), dtype, xc.device, "x1")
    wa = workspace((n, d + 1), dtype, xc.device, "w1")
    xa[:, :d].copy_(xc)
    xa[:, d].fill_(1)
    wa[:, :d].copy_(W_enc)
    wa[:, d].copy_(b_enc)
    pre = workspace((B, n), dtype, xc.device)
    return torch.mm(xa, wa.t(), out=pre)


def exact_preacts(xc: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pre-activations ``xc @ W_enc[idx]^T + b_enc[idx]`` at the selected latents only ([B, kk], sorted idx), in
    the parameters' precision: a sampled product (B*kk*d work) instead of the dense B*n*d GEMM."""
    pattern = _csr_rows(idx, W_enc.shape[0], torch.zeros(idx.shape, dtype=xc.dtype, device=xc.device))
    out = torch.sparse.sampled_addmm(pattern, xc.contiguous(), W_enc.t()).values().view(idx.shape)
    return out + b_enc[idx]


def fused_sparse_dict(x, W_enc, b_enc, W_dec, b_pre, b_dec, select: Selector, grads_in_place: bool = False,
                      select_dtype: torch.dtype | None = None):
    """Fused path: returns (recon [B, d_out], values [B, kk], indices [B, kk]).

    ``select_dtype`` (e.g. torch.bfloat16): run the one dense product, the encoder GEMM, and the selection in that
    dtype (fp32 accumulation inside the GEMM), then recompute the selected pre-activations in the parameters'
    precision; decoder, gradients and optimizer stay in full precision (master weights)."""
    return SparseDictFn.apply(x, W_enc, b_enc, W_dec, b_pre, b_dec, select, grads_in_place, select_dtype)


def eager_sparse_dict(x, W_enc, b_enc, W_dec, b_pre, b_dec, select: Selector, grads_in_place: bool = False,
                      select_dtype: torch.dtype | None = None):
    """Dense reference with plain autograd: same outputs as ``fused_sparse_dict`` (always full precision)."""
    pre = (x - b_pre) @ W_enc.t() + b_enc
    with torch.no_grad():
        vals, idx = select(pre.detach().clone())
        idx, order = idx.sort(dim=-1)
        vals = vals.gather(-1, order)
    gate = (vals > 0).to(pre.dtype)
    chosen = pre.gather(-1, idx) * gate
    acts = torch.zeros_like(pre).scatter(-1, idx, chosen)
    recon = acts @ W_dec + b_dec
    return recon, vals, idx


def sparse_decode(vals: torch.Tensor, idx: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """sum_j vals[b, j] * W_dec[idx[b, j]] via embedding_bag (differentiable in vals and W_dec)."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")
