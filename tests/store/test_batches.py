"""The shuffled batch iterator: every row exactly once, bounded windows, deterministic, rank-disjoint."""
import pytest
import torch

from actlab.store import HarvestConfig, harvest

SITE = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def store(tiny, corpus, tmp_path_factory):
    torch.set_num_threads(1)
    return harvest(tiny("tiny-llama"), HarvestConfig(
        data=str(corpus), sites=[SITE], out=str(tmp_path_factory.mktemp("b") / "s"), tokens=4000, dtype="bf16",
        context_length=32, shard_rows=450, progress=False))


def _key_rows(x):
    return sorted(map(tuple, x.float().tolist()))


def test_shuffled_epoch_covers_every_row_once(store):
    full = store.read(SITE, slice(None))
    bs = list(store.batches(SITE, batch_size=256, buffer_rows=1200, seed=3))
    assert all(b.shape == (256, 64) and b.dtype == torch.float32 for b in bs[:-1])
    allb = torch.cat(bs)
    assert allb.shape == (4000, 64)
    assert _key_rows(allb) == _key_rows(full)
    # shuffled: not the stored order, and batches mix rows from several shards
    assert not torch.equal(allb, full.float())
    # same seed -> same order; another seed -> another order
    again = torch.cat(list(store.batches(SITE, batch_size=256, buffer_rows=1200, seed=3)))
    other = torch.cat(list(store.batches(SITE, batch_size=256, buffer_rows=1200, seed=4)))
    assert torch.equal(allb, again) and not torch.equal(allb, other)
    dropped = list(store.batches(SITE, batch_size=256, buffer_rows=1200, drop_last=True))
    assert len(dropped) == 4000 // 256 and all(len(b) == 256 for b in dropped)


def test_sequential_equals_read(store):
    seq = torch.cat(list(store.batches(SITE, batch_size=300, shuffle=False, dtype=torch.bfloat16, buffer_rows=1000)))
    assert torch.equal(seq, store.read(SITE, slice(None)))


def test_ranks_are_disjoint_and_equal_sized(store):
    parts = [torch.cat(list(store.batches(SITE, batch_size=100, buffer_rows=800, rank=r, world=3, drop_last=True)))
             for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    from collections import Counter

    got = Counter(r for p in parts for r in _key_rows(p))
    full = Counter(_key_rows(store.read(SITE, slice(None))))
    assert not got - full  # a sub-multiset of the store: no row served twice across ranks
    assert sum(got.values()) == 3 * len(parts[0]) >= 4000 - 3 * 100 - 3
    with pytest.raises(ValueError, match="rank 3 is outside"):
        next(store.batches(SITE, rank=3, world=3))


def test_window_bounds_rows_in_flight(store, monkeypatch):
    import actlab.store.batches as B

    sizes = []
    orig = B._windows

    def spy(segs, size):
        out = orig(segs, size)
        sizes.extend(sum(b - a for _, a, b in w) for w in out)
        return out

    monkeypatch.setattr(B, "_windows", spy)
    list(store.batches(SITE, batch_size=64, buffer_rows=1000))
    assert max(sizes) <= 1000 and sum(sizes) == 4000


def test_unknown_site(store):
    with pytest.raises(KeyError, match="not in this store"):
        store.read("blocks.0.mlp_out", [0])
    with pytest.raises(KeyError, match="not in this store"):
        next(store.batches("nope"))
    with pytest.raises(IndexError, match="out of range"):
        store.read(SITE, [4000])


def test_block_shuffle_covers_every_row_once(store):
    full = store.read(SITE, slice(None))
    got = torch.cat(list(store.batches(SITE, batch_size=300, buffer_rows=1000, block_rows=16, dtype=torch.bfloat16)))
    assert _key_rows(got) == _key_rows(full) and not torch.equal(got, full)


def test_default_window_one_permutation(store):
    """The default window (64 MiB) holds this whole store: batches are one uniform permutation of it (rows of a
    batch in random order, not storage order); fp32 batches are the bf16 ones widened exactly."""
    full = store.read(SITE, slice(None))
    a = torch.cat(list(store.batches(SITE, batch_size=256, seed=1, dtype="bf16")))
    c = torch.cat(list(store.batches(SITE, batch_size=256, seed=1)))
    assert _key_rows(a) == _key_rows(full) and not torch.equal(a, full)
    row_of = {r: i for i, r in enumerate(map(tuple, full.float().tolist()))}
    order = torch.tensor([row_of[r] for r in map(tuple, a.float().tolist())])
    sorted_batches = sum(bool((b[1:] > b[:-1]).all()) for b in order.split(256))
    assert sorted_batches == 0  # order inside a batch is shuffled too
    # one window: batches draw from the whole store (the first batch spans most of it)
    assert order[:256].max() - order[:256].min() > 0.8 * len(full)
    assert c.dtype == torch.float32 and torch.equal(c, a.float())


def test_windows_keep_shards_whole():
    """Whole segments while they fit (a tensor's crc is checked on the bytes read), longer ones split."""
    from actlab.store.batches import _windows

    segs = [(0, 0, 450), (1, 0, 450), (2, 0, 450), (3, 100, 1200)]
    wins = _windows(segs, 1000)
    assert wins == [[(0, 0, 450), (1, 0, 450)], [(2, 0, 450)], [(3, 100, 1100)], [(3, 1100, 1200)]]
    assert all(sum(b - a for _, a, b in w) <= 1000 for w in wins)
