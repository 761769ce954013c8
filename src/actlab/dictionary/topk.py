"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token; AuxK loss revives dead latents.

Trained through the sparse fused kernel (``sparse_ops``) unless ``cfg.fused`` is False.
"""
from __future__ import annotations

import torch

from actlab.dictionary.base import Dictionary, StepOut, register_arch
from actlab.dictionary.sparse_ops import (
    Selector,
    eager_sparse_dict,
    fused_sparse_dict,
    sparse_decode,
    topk_selector,
)


def fvu(err: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained of a batch: sum err^2 / sum (y - mean y)^2."""
    return err.pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)


def fvu_of(recon: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``fvu(recon - y, y)`` in fewer passes over [B, d]: a fused squared-error sum (one kernel forward, one
    backward) over the total variance of ``y`` from a one-pass variance (a constant: ``y`` carries no gradient)."""
    with torch.no_grad():
        den = (y.var(0, unbiased=False).sum() * y.shape[0]).clamp_min(1e-12)
    return torch.nn.functional.mse_loss(recon, y, reduction="sum") / den


@register_arch
class TopKSAE(Dictionary):
    """z = TopK(ReLU(W_enc (x - b) + b_enc)); x_hat = z W_dec + b_dec. Loss: FVU + aux_coef * AuxK FVU."""

    arch = "topk"
    aux_coef: float = 1 / 32
    grads_in_place: bool = False   # set by the trainer, which keeps persistent zeroed .grad buffers
    select_dtype: torch.dtype | None = None   # set by the trainer (precision): dtype of the training GEMM + selection

    def selector(self, **kw) -> Selector:
        return topk_selector(self.cfg.k)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Output bias at the mean, then the tied encoder scaled by the least-squares factor of the first batch.

        Why: with ``W_enc = W_dec`` (unit rows) the top-k projections over-shoot (held-out FVU 0.74 at init on
        d 576 / 16,384 latents / k 32 where the best scalar gives 0.64, and Adam needs hundreds of steps to undo
        it). Top-k selection is invariant to that scale (``b_enc`` is 0), so one scalar fits it exactly."""
        super().init_from_data(x, y)
        if self.cfg.is_transcoder:
            return
        xc = (x - self.centre_bias()).to(self.W_enc.dtype)
        vals, idx = self.selector()(xc @ self.W_enc.t())   # training-mode selection (b_enc is 0)
        recon = sparse_decode(vals, idx, self.W_dec)
        den = float(recon.pow(2).sum())
        if den > 0:
            c = float((xc * recon).sum()) / den
            if c > 0:
                self.W_enc.mul_(c)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)
        pre = self.pre_acts(x)
        vals, idx = self.selector()(pre.clone())
        return torch.zeros_like(pre).scatter_(-1, idx, vals)

    def sparse_forward(self, x: torch.Tensor, selector: Selector | None = None):
        """(recon [B, d_out], values [B, kk], indices [B, kk]) through the fused or eager path."""
        fn = fused_sparse_dict if self.cfg.fused else eager_sparse_dict
        recon, vals, idx = fn(x, self.W_enc, self.b_enc, self.W_dec, self.centre_bias(), self.b_dec,
                              selector or self.selector(), self.grads_in_place and self.training,
                              self.select_dtype if self.training else None)
        if self.cfg.skip:
            recon = recon + x @ self.W_skip
        return recon, vals, idx

    def step(self, x: torch.Tensor, y: torch.Tensor, dead: torch.Tensor | None = None, **kw) -> StepOut:
        recon, vals, idx = self.sparse_forward(x, self.selector(x=x, **kw))
        loss = fvu_of(recon, y)
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[idx[vals > 0]] = True
        extra = {"fvu": float(loss.detach())}
        if dead is not None and bool(dead.any()):
            aux = self.auxk_loss(x, (recon.detach() - y), dead)
            extra["auxk"] = float(aux.detach())
            loss = loss + self.aux_coef * aux
        return StepOut(loss, recon, fired, float((vals > 0).sum()) / x.shape[0], extra)

    def auxk_loss(self, x: torch.Tensor, err: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """AuxK: the top-k_aux dead latents must reconstruct the residual error (gradient reaches dead latents)."""
        dead_idx = dead.nonzero().squeeze(1)
        k_aux = min(max(self.cfg.d_in // 2, 1), dead_idx.numel())
        pre = (x - self.centre_bias()) @ self.W_enc[dead_idx].t() + self.b_enc[dead_idx]
        vals, sub = pre.topk(k_aux, dim=-1, sorted=False)
        aux_recon = sparse_decode(vals.relu(), sub, self.W_dec[dead_idx])
        return fvu(aux_recon + err, err)  # err = recon - y, so aux_recon should approximate -err
