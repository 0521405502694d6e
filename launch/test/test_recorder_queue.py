"""The session recorder's write queue: bounded, the oldest dropped and counted."""

import threading

import pytest
from muse_bringup.recorder_queue import DropOldestQueue


def test_a_full_queue_drops_the_oldest_and_counts_it():
    queue = DropOldestQueue(3)
    for item in range(5):
        queue.put(item)
    assert (queue.qsize(), queue.dropped) == (3, 2)
    assert [queue.get() for _ in range(3)] == [2, 3, 4]


def test_the_end_marker_is_never_dropped():
    queue = DropOldestQueue(1)
    queue.put('message')
    queue.put_last(None)
    assert queue.dropped == 0
    assert [queue.get(), queue.get()] == ['message', None]


def test_get_waits_for_a_put_from_another_thread():
    queue = DropOldestQueue(2)
    got = []
    reader = threading.Thread(target=lambda: got.append(queue.get()))
    reader.start()
    queue.put('x')
    reader.join(timeout=10)
    assert got == ['x']


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match='capacity'):
        DropOldestQueue(0)
