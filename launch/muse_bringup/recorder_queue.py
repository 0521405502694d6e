"""A bounded queue that drops its oldest item when full, counting what it dropped.

The session recorder takes messages on the executor thread and writes them on a worker: when
the writer falls behind (a slow disk, a starved CPU), memory must not grow without bound, and
the newest messages are worth more than the oldest (the session's end is what the report
summarises). Plain module (no rclpy).
"""

import collections
import threading


class DropOldestQueue:

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self.dropped = 0
        self._items = collections.deque()
        self._ready = threading.Condition()

    def put(self, item):
        """Never blocks: when full, the oldest waiting item is dropped (and counted)."""
        with self._ready:
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify()

    def put_last(self, item):
        """Queue ``item`` even when full (an end marker must not be dropped)."""
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def get(self):
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()

    def qsize(self):
        with self._ready:
            return len(self._items)
