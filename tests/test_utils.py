"""actlab.utils.prefetch: same items in the same order, producer errors surface in the consumer, early close stops
the producer."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from actlab.utils import prefetch


def test_same_items_same_order_and_runs_ahead():
    made = []

    def gen():
        for i in range(50):
            made.append(i)
            yield i
    it = prefetch(gen(), depth=3)
    assert next(it) == 0
    deadline = time.time() + 5
    while len(made) < 4 and time.time() < deadline:   # the producer is ahead of the consumer by the queue depth
        time.sleep(0.01)
    assert len(made) >= 4
    assert [0] + list(it) == list(range(50))


def test_producer_error_raised_in_consumer_after_the_items_before_it():
    def gen():
        yield 1
        yield 2
        raise ValueError("bad document 3")
    got = []
    with pytest.raises(ValueError, match="bad document 3"):
        for x in prefetch(gen()):
            got.append(x)
    assert got == [1, 2]


def test_early_close_stops_the_producer():
    produced = []

    def gen():
        for i in range(10 ** 6):
            produced.append(i)
            yield i
    before = {t.name for t in threading.enumerate()}
    it = prefetch(gen(), depth=2)
    assert next(it) == 0
    it.close()
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) <= n + 1 and n < 10
    assert "actlab-prefetch" not in {t.name for t in threading.enumerate()} - before


@pytest.mark.parametrize("n,k", [(16384, 32), (4096, 1), (5157, 5), (1000, 400), (64, 64), (7, 3)])
def test_top_indices_is_an_exact_topk_on_floats_and_int_keys(n, k):
    from actlab.utils import top_indices, top_rows

    g = torch.Generator().manual_seed(n + k)
    z = torch.randn(9, n, generator=g)
    z[2, -1] = 99.0                                     # the maximum in the last column
    z[4] = -z[4].abs()                                  # no positive entry
    got = top_indices(z, k)
    assert torch.equal(got.sort(-1).values, z.topk(k, dim=-1).indices.sort(-1).values)
    keys = (z * 1e4).round().to(torch.int32)            # integer keys take the same path
    kv = keys.gather(1, top_indices(keys, k)).sort(-1).values
    assert torch.equal(kv, keys.topk(k, dim=-1).values.sort(-1).values)
    v, i = top_rows(z, k)
    rv, ri = z.topk(k, dim=-1)
    assert torch.equal(v, rv) and torch.equal(i, ri)
