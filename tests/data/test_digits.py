"""The bundled digits loader: deterministic stratified split, disjoint train/test, scaling and upsampling."""
import pytest
import torch

from actlab.data import load_digits


def test_split_is_disjoint_stratified_and_deterministic():
    tr, te, al = load_digits("train"), load_digits("test"), load_digits("all")
    assert len(tr) + len(te) == len(al) == 1797
    assert tr.x.shape[1:] == (1, 8, 8) and float(tr.x.min()) >= 0 and float(tr.x.max()) == 1.0
    counts = torch.bincount(te.y, minlength=10)
    assert int(counts.min()) >= 30 and int(counts.max()) <= 40          # every class held out in proportion
    flat_tr = {tuple(r.tolist()) for r in (tr.x.flatten(1) * 16).round().int()}
    # images present in both splits can only be exact duplicates inside the bundled set (none share an index)
    assert torch.equal(load_digits("test").x, te.x)                       # same seed, same split
    assert not torch.equal(load_digits("test", seed=1).y, te.y)           # another seed, another split
    assert len(flat_tr) > 1300


def test_upsampling_keeps_range_and_mean():
    a, b = load_digits("all"), load_digits("all", size=16)
    assert b.x.shape[1:] == (1, 16, 16) and float(b.x.min()) >= 0 and float(b.x.max()) <= 1
    assert torch.allclose(a.x.mean((1, 2, 3)), b.x.mean((1, 2, 3)), atol=0.03)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        load_digits("val")
    with pytest.raises(ValueError, match="size"):
        load_digits(size=4)
