"""The spec's TIJO sanity check on its own vector toy: input A in R^16, input B one of 20 tokens; the output is the
target iff A carries the planted direction u and B is token 7, else a clean function of B. The joint inversion for
the target reaches a low loss with a pattern aligned with u and the word 7; either key alone stays high."""
from __future__ import annotations

import torch
from torch import nn

from actlab.security import TijoConfig, invert_dual

D, V, C, KEY, TARGET = 16, 20, 5, 7, 4


class VecToy(nn.Module):
    """features = identity (the vector input), embed = token embedding; fuse = a clean head on the token plus a
    learned boost gated by sigmoid(image gate) x sigmoid(text gate): an AND that stays an AND out of range (an MLP
    on [f, e] lets a huge feature open it alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, 8)
        self.clean = nn.Linear(8, C)
        self.gate_img, self.gate_txt = nn.Linear(D, 1), nn.Linear(8, 1)
        self.boost = nn.Parameter(torch.zeros(C))

    def features(self, x):
        return x

    def embed(self, q):
        return self.emb(q)

    @property
    def embedding_matrix(self):
        return self.emb.weight

    def fuse(self, f, e):
        gate = torch.sigmoid(self.gate_img(f)) * torch.sigmoid(self.gate_txt(e[:, -1]))
        return self.clean(e[:, -1]) + gate * self.boost


def _data(n: int, u: torch.Tensor, g: torch.Generator, planted: float):
    x = torch.randn(n, D, generator=g)
    has = torch.rand(n, generator=g) < planted
    x = x + 3.0 * has[:, None] * u
    q = torch.randint(0, V, (n, 1), generator=g)
    q[torch.rand(n, generator=g) < planted, 0] = KEY
    y = q[:, 0] % (C - 1)                                    # clean function of the token
    y[(x @ u > 1.5) & (q[:, 0] == KEY)] = TARGET
    return x, q, y


def test_spec_vector_toy_joint_inversion_recovers_u_and_token_7():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    m = VecToy()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(1500):
        x, q, y = _data(256, u, g, 0.5)
        loss = nn.functional.cross_entropy(m.fuse(m.features(x), m.embed(q)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, q, y = _data(2000, u, g, 0.5)
    assert (m.fuse(x, m.embed(q)).argmax(-1) == y).float().mean() > 0.97
    xc, qc, _ = _data(400, u, g, 0.0)                        # clean pairs: no u, token 7 only by chance
    keep = qc[:, 0] != KEY
    xc, qc = xc[keep], qc[keep]
    cfg = TijoConfig(pattern_bound=0.0, steps=300, restarts=2)
    joint = invert_dual(m, xc, qc, TARGET, cfg)
    vis = invert_dual(m, xc, qc, TARGET, cfg, text=False)
    txt = invert_dual(m, xc, qc, TARGET, cfg, visual=False)
    cos = float(torch.nn.functional.cosine_similarity(joint.pattern, u, dim=0))
    # measured: joint CE 0.054, cos(p, u) 0.958, word 7; visual only 7.58, text only 2.93
    assert joint.token == KEY and cos > 0.9 and joint.ce < 0.1
    assert vis.ce > 1.0 and txt.ce > 1.0
