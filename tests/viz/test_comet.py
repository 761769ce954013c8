"""COMET-style selector-predictor: the completeness term makes the mask cover both redundant cues."""
from __future__ import annotations

import pytest
import torch

from actlab.viz.comet import CometConfig, cue_coverage, train_comet, two_cue_data
from actlab.viz.vision import accuracy, digits_cnn, fit_classifier


@pytest.fixture(scope="module")
def cues():
    det_data = two_cue_data(1000, keep_both=0.3, seed=5)       # the detector has seen each cue alone
    with torch.random.fork_rng():
        torch.manual_seed(0)
        det = fit_classifier(digits_cnn(8, 2), det_data.x, det_data.y, epochs=4, lr=5e-3)
    one = two_cue_data(300, keep_both=0.0, seed=2)
    assert accuracy(det, one.x, one.y) > 0.95                   # it finds either cue on its own
    return det, two_cue_data(1000, seed=0), two_cue_data(300, seed=1)


def test_data_has_two_disjoint_cues():
    d = two_cue_data(50)
    c = d.signal_cues
    assert (c[:, 0].flatten(1).sum(1) == 9).all() and (c[:, 1].flatten(1).sum(1) == 5).all()
    assert not (c[:, 0] & c[:, 1]).any()
    assert torch.equal(d.x[:, 0][c.any(1)].sign().view(-1), ((2 * d.y - 1).repeat_interleave(14)).float())


@pytest.mark.slow
def test_completeness_covers_both_cues(cues):
    det, tr, te = cues
    full = train_comet(tr.x, tr.y, det, lambda: digits_cnn(8, 2), CometConfig(complement=0.5, area=1.0, epochs=6))
    cov = cue_coverage(full.mask(te.x), te.signal_cues)
    assert float(cov.min()) > 0.9, cov
    assert float((full.predict(te.x) == te.y).float().mean()) > 0.97
    assert float(full.mask(te.x).mean()) < 0.5                   # not the whole image
    # without the complement term the predictor is just as accurate on a mask that misses evidence
    plain = train_comet(tr.x, tr.y, det, lambda: digits_cnn(8, 2), CometConfig(complement=0.0, area=0.25, epochs=6))
    cov0 = cue_coverage(plain.mask(te.x), te.signal_cues)
    assert float((plain.predict(te.x) == te.y).float().mean()) > 0.97
    assert float(cov0.min()) < 0.5, cov0
