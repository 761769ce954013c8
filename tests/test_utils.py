"""actlab.utils.prefetch: same items in the same order, producer errors surface in the consumer, early close stops
the producer."""
from __future__ import annotations

import threading
import time

import pytest

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
