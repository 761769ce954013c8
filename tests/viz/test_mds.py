"""Most discriminative stimuli: the spec's synthetic digital twin (60 LN units of 3 planted types)."""
from __future__ import annotations

import torch
from sklearn.metrics import adjusted_rand_score

from actlab.viz.mds import MDSConfig, Normalised, assign, channel_responses, mds_cluster


def twin(noise=0.02):
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=1)
    types = torch.arange(60) % 3
    w = t[types] + noise * torch.randn(60, 64, generator=g)
    gain = torch.exp(torch.randn(60, generator=g))         # units with very different gains
    return t, types, lambda x: torch.nn.functional.softplus(3 * gain * (x.flatten(1) @ w.T))


def test_mds_recovers_planted_types_from_a_random_start():
    t, types, resp = twin()
    r = mds_cluster(resp, (64,), MDSConfig(n_clusters=6, init="random"))
    assert adjusted_rand_score(types.numpy(), r.labels.numpy()) > 0.9
    assert r.converged and r.stimuli.shape[0] == 3           # the extra clusters vanished
    # each stimulus correlates most with its own type's template
    c = torch.nn.functional.normalize(r.stimuli.flatten(1), dim=1) @ t.T        # [K, types]
    for k in range(3):
        own = torch.mode(types[r.labels == k]).values
        assert int(c[k].argmax()) == int(own)
    # the assignment step is idempotent once converged
    ref = torch.nn.functional.normalize(torch.randn(256, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    norm = Normalised(resp, ref)
    assert torch.equal(assign(norm, r.stimuli), r.labels)
    assert torch.allclose(r.stimuli.flatten(1).norm(dim=1), torch.ones(3), atol=1e-5)   # the norm constraint


def test_mds_clusters_digits_cnn_channels(digits_cnn):
    r = mds_cluster(channel_responses(digits_cnn, "module:conv3"), (1, 16, 16),
                    MDSConfig(n_clusters=4, rounds=3, steps=20))
    assert r.labels.shape == (64,) and int(r.labels.max()) + 1 == r.stimuli.shape[0] <= 4


def test_stimulus_step_suppresses_the_other_clusters():
    """With overlapping templates (pairwise cos ~0.7) the stimuli must be discriminative, not just strong: each is
    anti-correlated with the other types' templates (maximising raw responses instead drifts every stimulus toward the
    shared component: cos ~0.5 with the others)."""
    from actlab.viz.mds import stimulus_step

    g = torch.Generator().manual_seed(0)
    c = torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0)
    t = torch.nn.functional.normalize(1.5 * c + torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=1),
                                      dim=1)
    types = torch.arange(60) % 3
    w = t[types] + 0.02 * torch.randn(60, 64, generator=g)
    gain = torch.exp(torch.randn(60, generator=g))
    norm = Normalised(lambda x: torch.nn.functional.softplus(3 * gain * (x.flatten(1) @ w.T)),
                      torch.nn.functional.normalize(torch.randn(256, 64, generator=g), dim=1))
    start = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=1)
    stim = stimulus_step(norm, start, types, MDSConfig())
    cos = torch.nn.functional.normalize(stim, dim=1) @ t.T
    off = cos.masked_fill(torch.eye(3, dtype=torch.bool), -1).max(1).values
    assert bool((cos.diagonal() - off > 0.4).all()) and float(off.max()) < 0.1, cos
    assert torch.equal(assign(norm, stim), types)
