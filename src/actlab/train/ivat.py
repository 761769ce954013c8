"""iVAT: the interpretable variant of attention VAT (Kitada & Iyatomi, training-dynamics.md §5).

As in the reference code of the authors' Attention iAT (``shunk031/attention-meets-perturbation``), the perturbation
of example ``i``'s attention scores is built from the differences between its scores and those of the other examples
in the batch, ``D_ij = (a_i - a_j) / ||a_i - a_j||``: it moves attention only along directions in which sentences'
attention already differs, emphasising the tokens whose importance differs. The direction is chosen as in
interpretable adversarial perturbation (Sato et al.): ``r = sum_j alpha_ij D_ij`` with
``alpha = grad_alpha KL(p(y|x,a) || p(y|x,a+r))`` at a random ``xi``-sized start (one power iteration, clean
prediction constant), ``r_ivat = eps r / ||r||`` per example. The rest is VAT (``actlab.train.vat``).
"""
from __future__ import annotations

import torch

from actlab.core.interventions import Fn
from actlab.train.vat import SCORES, _unit, kl


def difference_directions(scores: torch.Tensor) -> torch.Tensor:
    """``D [b, b, T]``: ``D[i, j] = unit(scores[i] - scores[j])`` (zero where the two are equal, e.g. ``i = j``)."""
    diff = scores[:, None, :] - scores[None, :, :]
    return diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-12) * (diff.norm(dim=-1, keepdim=True) > 1e-12)


def ivat_perturbation(model, ids: torch.Tensor, clean_logits: torch.Tensor, eps: float, xi: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``r_ivat [b, T]`` on the attention scores: per example of norm ``eps`` and in the span of that example's
    attention differences to its batch mates (needs a batch of at least 2)."""
    if len(ids) < 2:
        raise ValueError(f"iVAT builds its directions from a batch's attention differences: need a batch of >= 2, "
                         f"got {len(ids)}")
    ref = clean_logits.detach()
    with torch.no_grad():
        d = difference_directions(model.record(ids, sites=[SCORES])[SCORES].float())
    with torch.enable_grad():
        alpha = torch.randn(d.shape[:2], generator=generator).requires_grad_(True)
        r = xi * _unit(torch.einsum("ij,ijt->it", alpha, d))
        with model.intervene({SCORES: Fn(fn=lambda a, c: a + r)}, grad="through"):
            div = kl(ref, model(ids))
        (g,) = torch.autograd.grad(div, alpha)
    return eps * _unit(torch.einsum("ij,ijt->it", g.detach(), d))


def ivat_loss(model, ids: torch.Tensor, clean_logits: torch.Tensor, eps: float, xi: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``KL(p(y|x,a) || p(y|x,a+r_ivat))`` with the clean prediction held constant."""
    r = ivat_perturbation(model, ids, clean_logits, eps, xi, generator)
    with model.intervene({SCORES: Fn(fn=lambda a, c: a + r)}, grad="through"):
        return kl(clean_logits.detach(), model(ids))
