"""ReLU SAE with a decoder-norm-weighted L1 penalty (Anthropic, April 2024 update): z = ReLU(W_enc(x-b)+b_enc),
loss = mean ||x - x_hat||^2 + l1_coef * mean sum_i z_i ||W_dec_i||. The decoder norm is left free."""
from __future__ import annotations

from actlab.dictionary.base import Dictionary, StepOut, register_arch
from actlab.dictionary.topk import fvu


@register_arch
class ReLUSAE(Dictionary):
    arch = "relu"
    normalize_decoder = False

    def encode(self, x):
        return self.pre_acts(self.check_input(x)).relu()

    def step(self, x, y, dead=None, **kw) -> StepOut:
        z = self.pre_acts(x).relu()
        recon = self.decode(z, x)
        err = recon - y
        mse = err.pow(2).sum(-1).mean()
        sparsity = (z * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + self.cfg.l1_coef * sparsity
        active = z > 0
        return StepOut(loss, recon, active.any(0), float(active.sum()) / x.shape[0],
                       {"fvu": float(fvu(err.detach(), y)), "l1": float(sparsity.detach())})
