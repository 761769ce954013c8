"""SSD full-class forgetting on a 10-class synthetic task (security.md §1 sanity check): the forgotten class's test
accuracy falls near 0 while the other classes keep theirs."""
from __future__ import annotations

import torch
from torch import nn

from actlab.security import predict, ssd


def test_full_class_forgetting(one_thread):
    g = torch.Generator().manual_seed(0)
    means = 1.5 * torch.randn(10, 32, generator=g)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return means[y] + torch.randn(n, 32, generator=g), y

    x, y = draw(3000)
    xt, yt = draw(2000)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(600):
        b = torch.randint(0, len(y), (128,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(m(x[b]), y[b]).backward()
        opt.step()
    m.eval()
    acc = lambda mm, mask: float((predict(mm, xt[mask]) == yt[mask]).float().mean())
    forget, retain = yt == 3, yt != 3
    assert acc(m, forget) > 0.95 and acc(m, retain) > 0.95
    out, st = ssd(m, x[y == 3], y[y == 3], x, y, alpha=10, lam=1)
    # calibrated once (seed 0): forget-class accuracy 0.00, retain 0.98
    assert acc(out, forget) < 0.1
    assert acc(out, retain) > 0.9
    assert st.selected > 0 and st.min_beta <= 1
