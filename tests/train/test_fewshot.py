"""Few-shot in-context classification with held-out classes (the induction paper's Omniglot setting on the bundled
digits, training-dynamics.md §1): sequences are well formed (labels random per sequence, one per class, query of a
context class but not a context image), the dihedral class pool, and the calibrated effect: with the ideal
previous-token clamp, in-context accuracy on digits never trained on rises with the induction head's label
selectivity, while zeroing layer 0's output keeps both at chance (docs/train.md, seeds 0-2). Not asserted: the
lesioned model's accuracy on the *training* classes (seed 0 finds a one-layer positional shortcut by step 600)."""
from dataclasses import replace

import pytest
import torch

from actlab.train.configs import FewShotConfig
from actlab.train.fewshot import FewShotAttn, dihedral_digits, sample_episodes, train_fewshot


def test_episodes_are_well_formed():
    y = torch.arange(64) % 6                                      # 6 classes of 10-11 images; image i is the scalar i
    x = torch.arange(64, dtype=torch.float32)[:, None]
    ep = sample_episodes(x, y, [1, 2, 4, 5], 200, 2, 3, 5, torch.Generator().manual_seed(0))
    assert ep.images.shape == (200, 7, 1) and ep.labels.shape == (200, 6) and ep.match.shape == (200, 6)
    idx = ep.images[..., 0].long()
    cls = y[idx]
    assert set(cls.flatten().tolist()) <= {1, 2, 4, 5}
    for b in range(200):
        ctx, q = idx[b, :-1], idx[b, -1]
        assert q not in ctx and len(set(ctx.tolist())) == 6                              # distinct images
        by_cls = {c: set(ep.labels[b][cls[b, :-1] == c].tolist()) for c in set(cls[b, :-1].tolist())}
        assert len(by_cls) == 2 and all(len(v) == 1 for v in by_cls.values())            # one label per class
        assert len(set().union(*by_cls.values())) == 2                                   # distinct labels
        assert all(int((cls[b, :-1] == c).sum()) == 3 for c in by_cls)                  # shots per class
        assert by_cls[int(cls[b, -1])] == {int(ep.target[b])}                             # the query's label
        assert torch.equal(ep.match[b], cls[b, :-1] == cls[b, -1])
    assert len(set(ep.labels.flatten().tolist())) == 5                                   # labels vary by sequence
    with pytest.raises(ValueError, match="ways=3 needs at least"):
        sample_episodes(x, y, [1, 2], 4, 3, 1, 5, torch.Generator())
    with pytest.raises(ValueError, match=r"shots \+ 1 = 12"):
        sample_episodes(x, y, [1, 2], 4, 2, 11, 5, torch.Generator())
    with pytest.raises(ValueError, match=r"labels must be \[batch, 2\]"):
        FewShotAttn(1, 5, 5)(torch.zeros(3, 3, 1), torch.zeros(3, 3, dtype=torch.long))


def test_dihedral_pool_and_config_checks():
    x, y = dihedral_digits(8)
    n = len(y) // 8
    assert x.shape == (8 * n, 64) and torch.equal(y[:n] + 70, y[7 * n:])
    img = x.view(8, n, 8, 8)           # the pool holds every transform, so its pixel standardisation is invariant
    mirror = img[0].flip(2)
    for t, want in ((1, torch.rot90(img[0], 1, (1, 2))), (4, mirror), (6, torch.rot90(mirror, 2, (1, 2)))):
        torch.testing.assert_close(img[t], want, atol=1e-4, rtol=0)
    assert not torch.allclose(img[0], img[1]) and dihedral_digits(1)[0].shape == (n, 64)
    with pytest.raises(ValueError, match="train_classes must leave"):
        FewShotConfig(train_classes=9)
    with pytest.raises(ValueError, match="2 <= ways <= n_labels"):
        FewShotConfig(ways=3, n_labels=2)


@pytest.mark.slow
def test_heldout_icl_rises_with_the_induction_head_and_not_without_layer_0(one_thread):
    cfg = FewShotConfig(steps=400, eval_every=100, eval_batch=256, seed=2)     # seed 2: onset at step 300
    data = dihedral_digits(cfg.transforms)
    clamped = train_fewshot(cfg, "prev_token", data)
    lesion = train_fewshot(replace(cfg, steps=300), "zero", data)
    held, sel = clamped["acc_heldout"], clamped["induction"]
    assert clamped["held_out_classes"] == [7, 8, 9] and all(c % 10 < 7 for c in clamped["train_classes"])
    assert held[0] < 0.6 and max(held[-2:]) >= 0.7                     # digits 7-9: never trained on
    assert sel[0] < 0.05 and max(sel[-2:]) > 0.15                       # a layer-1 head picks the query's label
    assert max(lesion["acc_heldout"]) < 0.6 and max(lesion["induction"]) < 0.1
