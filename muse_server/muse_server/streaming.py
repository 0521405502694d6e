"""What a session's audio pump is built from: backend calls on daemon threads (StreamRunner),
real-time pacing (PlaybackPacer) and the tail of sent audio handed to the next stream as context
(AudioTail). No rclpy, no torch, no WebSocket.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time

import numpy as np

from muse_server.backends.base import (BackendError, MusicBackend, MusicStream, PromptSpec,
                                       check_fragment)

logger = logging.getLogger('muse_music_server')


def run_in_daemon_thread(function, *args, name: str = 'muse-backend') -> asyncio.Future:
    """Run blocking ``function(*args)`` on a new daemon thread; await its result on the loop.

    Backend calls can hang (a stuck GPU, a deadlocked library). A thread-pool worker would then
    be joined at interpreter exit and keep the server from stopping; a daemon thread is not.
    Cancelling the returned future abandons the call: it keeps running until it returns.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error):
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work():
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


class StreamRunner:
    """Runs one MusicStream's blocking calls on daemon threads, one at a time.

    A call abandoned by a cancelled coroutine keeps running in its thread; the lock makes
    ``close`` wait for it rather than close a stream under a running call, and an opening that
    is abandoned closes the stream as soon as it is open (it may hold a KV cache on a GPU).
    """

    def __init__(self, channels: int, name: str = 'muse-stream'):
        self._channels = channels
        self._name = name
        self._stream: MusicStream | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    async def open(cls, backend: MusicBackend, spec: PromptSpec, context, name='muse-stream'):
        runner = cls(backend.channels, name)
        try:
            await run_in_daemon_thread(runner._open_blocking, backend, spec, context, name=name)
        except asyncio.CancelledError:
            runner.close_soon()  # waits for the opening to finish, then closes what it opened
            raise
        return runner

    def _open_blocking(self, backend: MusicBackend, spec: PromptSpec, context):
        with self._lock:
            if not self._closed:
                self._stream = backend.open_stream(spec, context)

    def _next_blocking(self):
        with self._lock:
            if self._closed or self._stream is None:
                raise BackendError('stream already closed')
            started = time.time_ns()
            fragment = check_fragment(self._stream.next_fragment(), self._channels)
            return fragment, started, time.time_ns()

    @property
    def may_retarget(self) -> bool:
        """Whether the stream's class implements MusicStream.retarget at all."""
        return self._stream is not None and \
            type(self._stream).retarget is not MusicStream.retarget

    @property
    def may_fork(self) -> bool:
        """Whether the stream's class implements MusicStream.fork at all."""
        return self._stream is not None and type(self._stream).fork is not MusicStream.fork

    def _fork_blocking(self, spec: PromptSpec, at_sample: int):
        with self._lock:
            if self._closed or self._stream is None:
                return None
            return self._stream.fork(spec, at_sample)

    async def fork(self, spec: PromptSpec, at_sample: int) -> int | None:
        """MusicStream.fork on a worker thread: the sample the next fragment starts at."""
        return await run_in_daemon_thread(self._fork_blocking, spec, at_sample, name=self._name)

    def _retarget_blocking(self, spec: PromptSpec) -> bool:
        with self._lock:
            return not self._closed and self._stream is not None \
                and bool(self._stream.retarget(spec))

    def _close_blocking(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._stream is not None:
                self._stream.close()

    def _close_logged(self):
        try:
            self._close_blocking()
        except Exception:  # closing is best effort; the stream is dropped either way
            logger.exception('closing a stream failed')

    async def next_fragment(self):
        """-> (float32 (n, channels), generation start ns, generation end ns)."""
        return await run_in_daemon_thread(self._next_blocking, name=self._name)

    async def retarget(self, spec: PromptSpec) -> bool:
        """MusicStream.retarget on a worker thread: True if the stream now plays ``spec``."""
        return await run_in_daemon_thread(self._retarget_blocking, spec, name=self._name)

    async def close(self):
        await run_in_daemon_thread(self._close_logged, name=self._name)

    def close_soon(self):
        """Close without waiting (safe while being cancelled): after any running call."""
        threading.Thread(target=self._close_logged, name=self._name, daemon=True).start()


class PlaybackPacer:
    """Keeps a stream at most ``max_ahead_s`` ahead of a listener playing it in real time.

    The listener is assumed to start playing when the stream's first fragment is sent and to
    play at real time from then on; if the stream falls behind (the listener ran dry), the
    playback position is rebased to "now" as the listener's would be. What the listener has
    actually heard lags that estimate by ``listener_delay_s`` (its player's prebuffer).
    """

    def __init__(self, max_ahead_s: float, clock=time.monotonic, listener_delay_s: float = 0.0):
        self.max_ahead_s = max_ahead_s
        self.listener_delay_s = listener_delay_s
        self._clock = clock
        self._start = None
        self._sent_s = 0.0
        self._lag_s = listener_delay_s

    def restart(self):
        self._start = None
        self._sent_s = 0.0
        self._lag_s = self.listener_delay_s

    def heard_s(self) -> float:
        """Seconds of the stream the listener has heard by now (estimate)."""
        if self._start is None:
            return 0.0
        return max(0.0, min(self._sent_s, self._clock() - self._start) - self._lag_s)

    def sent(self, duration_s: float):
        now = self._clock()
        if self._start is None:
            self._start = now
        elif self._sent_s < now - self._start:
            self._start = now - self._sent_s
        self._sent_s += duration_s

    def replaced(self, duration_s: float):
        """The last ``duration_s`` sent will not be played (a fork replaces them). A fork
        may start behind the real-time estimate (not behind the listener, who lags it): the
        next send rebases the estimate there, so the listener then lags it that much less."""
        self._sent_s = max(self._sent_s - duration_s, 0.0)
        if self._start is not None:
            behind = (self._clock() - self._start) - self._sent_s
            if behind > 0:
                self._lag_s = max(0.0, self._lag_s - behind)

    def ahead_s(self) -> float:
        if self._start is None:
            return 0.0
        return max(0.0, self._sent_s - (self._clock() - self._start))

    def delay_before_next(self, next_duration_s: float, max_ahead_s: float | None = None) -> float:
        """Seconds to wait before generating a fragment of ``next_duration_s`` so that,
        once sent, the stream is at most ``max_ahead_s`` (default: the pacer's) ahead."""
        limit = self.max_ahead_s if max_ahead_s is None else min(max_ahead_s, self.max_ahead_s)
        threshold = max(limit - next_duration_s, 0.0)
        return max(0.0, self.ahead_s() - threshold)


class AudioTail:
    """The last ``seconds`` of audio sent to the listener, for the next stream's context."""

    def __init__(self, seconds: float, sample_rate: int, channels: int):
        self._max_samples = max(1, int(round(seconds * sample_rate)))
        self._channels = channels
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._samples = 0

    def append(self, audio: np.ndarray):
        self._chunks.append(audio)
        self._samples += len(audio)
        while self._samples - len(self._chunks[0]) >= self._max_samples:
            self._samples -= len(self._chunks.popleft())

    def drop_last(self, samples: int):
        """Forget the last ``samples`` appended (a fork replaced them: never heard)."""
        while samples > 0 and self._chunks:
            last = self._chunks.pop()
            self._samples -= len(last)
            if len(last) > samples:
                self._chunks.append(last[:len(last) - samples])
                self._samples += len(last) - samples
            samples -= len(last)

    def get(self) -> np.ndarray | None:
        if not self._chunks:
            return None
        return np.concatenate(list(self._chunks))[-self._max_samples:].copy()
