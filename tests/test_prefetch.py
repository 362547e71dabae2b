"""The background reader: order kept, errors re-raised where they happened, clean early exit."""

from __future__ import annotations

import threading
import time

import pytest

from anonymize.sources.base import prefetch


def test_order_is_kept():
    assert list(prefetch(iter(range(100)))) == list(range(100))


def test_an_error_in_the_reader_reaches_the_consumer_after_the_good_items():
    def source():
        yield 1
        yield 2
        raise ValueError("broken stream")

    got = []

    def consume() -> None:
        for item in prefetch(source()):
            got.append(item)

    with pytest.raises(ValueError, match="broken stream"):
        consume()
    assert got == [1, 2]


def test_stopping_early_ends_the_reader_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    for item in prefetch(endless()):
        if item == 3:
            break
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
