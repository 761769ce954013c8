"""Multifaceted visualization: the spec's OR neuron (two facets, ARI 1.0, one image per template)."""
from __future__ import annotations

import torch
from sklearn.metrics import adjusted_rand_score

import actlab
from actlab.viz.facets import FacetsConfig, multifaceted
from actlab.viz.maximize import MaximizeConfig, maximize
from actlab.viz.objectives import Unit, objective


class OrNeuron(torch.nn.Module):
    """``max(<x, A>, <x, B>)`` for two orthogonal 8x8 templates."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.register_buffer("t", torch.stack([a.flatten(), b.flatten()]))

    def forward(self, x):
        return (x.flatten(1) @ self.t.T).max(1).values[:, None]


def templates():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 2, generator=g, dtype=torch.float64))
    return q[:, 0].float().view(1, 8, 8), q[:, 1].float().view(1, 8, 8)


def or_data(n=200):
    a, b = templates()
    g = torch.Generator().manual_seed(1)
    which = torch.randint(0, 2, (n,), generator=g)
    amp = 1 + torch.rand(n, generator=g)
    x = torch.where(which.view(-1, 1, 1, 1) == 0, a, b) * amp.view(-1, 1, 1, 1)
    return x + 0.05 * torch.randn(x.shape, generator=g), which


def corr(x, t):
    return float(torch.corrcoef(torch.stack([x.flatten(), t.flatten()]))[0, 1])


def test_or_neuron_two_facets_ari_one_and_one_template_each():
    a, b = templates()
    m = actlab.wrap(OrNeuron(a, b))
    x, which = or_data()
    f = objective(m, Unit(neuron=0))
    cfg = MaximizeConfig(steps=60, lr=0.2, optimizer="sgd", param="pixel", squash=False, max_norm=1.0, jitter=0, scale=0, noise=0.0)
    fac = multifaceted(m, f, x, FacetsConfig(n_facets=2, top=100), max_cfg=cfg)
    assert adjusted_rand_score(which[fac.top].numpy(), fac.labels.numpy()) == 1.0
    imgs = fac.result.images
    ca = [corr(i, a) for i in imgs]
    cb = [corr(i, b) for i in imgs]
    j = max(range(2), key=lambda i: ca[i])   # the facet that is A
    assert ca[j] > 0.8 and cb[1 - j] > 0.8, (ca, cb)
    assert fac.diversity() > 1.0
    # one random start finds one template (or a blend), never both
    single = maximize(f, (1, 1, 8, 8), MaximizeConfig(steps=60, lr=0.2, optimizer="sgd", param="pixel", squash=False, max_norm=1.0,
                                                       jitter=0, scale=0, noise=0.1, seed=3)).images[0]
    assert not (corr(single, a) > 0.8 and corr(single, b) > 0.8)


def test_facets_on_the_digits_cnn_with_a_hidden_code(digits_cnn, digits16):
    tr, _ = digits16
    f = objective(digits_cnn, Unit(neuron=7))
    fac = multifaceted(digits_cnn, f, tr.x, FacetsConfig(n_facets=3, top=60, tsne=True), code_site="module:conv3",
                       max_cfg=MaximizeConfig(steps=30, lr=0.1))
    assert fac.result.images.shape == (3, 1, 16, 16)
    assert sorted(set(fac.labels.tolist())) == [0, 1, 2]
    # each facet image drives the unit above its starting mean image
    assert bool((fac.result.values > f(fac.means).detach()).all())
