"""Linear probes and linear mode connectivity: the evaluation tools of the random-teacher recipe (§3)."""
from __future__ import annotations

from collections.abc import Callable

import torch


def linear_probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                          *, c: float = 1.0, max_iter: int = 500) -> float:
    """Held-out accuracy of a multinomial logistic-regression probe (features standardised on the training set)."""
    from sklearn.linear_model import LogisticRegression

    xtr, xte = x_train.detach().double(), x_test.detach().double()
    if xtr.dim() != 2 or xte.dim() != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"probe features must be [n, d] with equal d; got {list(xtr.shape)} and {list(xte.shape)}")
    if len(xtr) != len(y_train) or len(xte) != len(y_test):
        raise ValueError(f"probe features and labels differ in length: {len(xtr)} vs {len(y_train)}, "
                         f"{len(xte)} vs {len(y_test)}")
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-8)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(((xtr - mu) / sd).numpy(), y_train.cpu().numpy())
    return float(clf.score(((xte - mu) / sd).numpy(), y_test.cpu().numpy()))


@torch.no_grad()
def interpolation_losses(module: torch.nn.Module, state_a: dict, state_b: dict, alphas,
                         loss_fn: Callable[[torch.nn.Module], torch.Tensor]) -> list[float]:
    """Loss of ``module`` at ``(1 - alpha) * state_a + alpha * state_b`` for each alpha (linear mode connectivity);
    ``module`` is left at its original parameters."""
    if state_a.keys() != state_b.keys():
        raise KeyError(f"the two states hold different parameters: {sorted(state_a.keys() ^ state_b.keys())[:5]}")
    keep = {k: v.clone() for k, v in module.state_dict().items()}
    out = []
    try:
        for a in alphas:
            a = float(a)
            if a == 0.0:
                mix = state_a
            elif a == 1.0:
                mix = state_b
            else:
                mix = {k: (1 - a) * state_a[k] + a * state_b[k] if state_a[k].is_floating_point() else state_a[k]
                       for k in state_a}
            module.load_state_dict(mix)
            out.append(float(loss_fn(module)))
    finally:
        module.load_state_dict(keep)
    return out
