"""Gated SAE (Rajamanoharan et al. 2024): a gate path decides which latents fire (L1 on it), a magnitude path
with tied weights (``W_mag = exp(r_mag) * W_gate``) sets their values; an auxiliary loss (ReLU(pi_gate) must
reconstruct the input through the decoder) ties the gate's magnitude to the data so its L1 makes it sparse."""
from __future__ import annotations

import torch

from actlab.dictionary.base import Dictionary, StepOut, register_arch
from actlab.dictionary.topk import fvu


@register_arch
class GatedSAE(Dictionary):
    arch = "gated"
    normalize_decoder = False

    def __init__(self, cfg, generator=None):
        super().__init__(cfg, generator)
        self.r_mag = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))
        self.b_mag = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))

    def _paths(self, x):
        h = (x - self.centre_bias()) @ self.W_enc.t()
        pi_gate = h + self.b_enc
        pi_mag = h * self.r_mag.exp() + self.b_mag
        return pi_gate, pi_mag

    def encode(self, x):
        pi_gate, pi_mag = self._paths(self.check_input(x))
        return (pi_gate > 0) * pi_mag.relu()

    def step(self, x, y, dead=None, **kw) -> StepOut:
        pi_gate, pi_mag = self._paths(x)
        z = (pi_gate > 0) * pi_mag.relu()
        recon = self.decode(z, x)
        err = recon - y
        mse = err.pow(2).sum(-1).mean()
        gate = pi_gate.relu()
        sparsity = (gate * self.W_dec.norm(dim=1)).sum(-1).mean()
        # the auxiliary path trains the decoder too (as SAELens does): with a frozen decoder copy and a free
        # decoder norm, the decoder shrinks, the norm-weighted L1 and the aux loss lose their grip on the gate and
        # the SAE stays dense (planted-atom recovery 6% instead of 98%)
        aux_recon = gate @ self.W_dec + self.b_dec
        aux = (aux_recon - y).pow(2).sum(-1).mean()
        loss = mse + self.cfg.l1_coef * sparsity + aux
        active = z > 0
        return StepOut(loss, recon, active.any(0), float(active.sum()) / x.shape[0],
                       {"fvu": float(fvu(err.detach(), y)), "l1": float(sparsity.detach()), "aux": float(aux.detach())})

    def _fold_extra(self, s_in, s_out):
        # pre-activations are unchanged by the fold; b_mag, r_mag live in latent units
        return None
