"""One client session of the music server: handshake, control messages, and the audio pump that
streams fragments, switches prompts without a gap and paces itself to real-time playback.

No rclpy, no torch. The WebSocket is duck-typed (``send``, ``recv``, ``close``, async iteration),
which the ``websockets`` connection provides.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from websockets.exceptions import ConnectionClosed

from muse_protocol import protocol
from muse_server.backends.base import (BackendError, MusicBackend, MusicStream, PromptSpec,
                                             check_fragment)

logger = logging.getLogger('muse_music_server')

# Session-phase control messages (a second hello is an unknown type there).
SESSION_MESSAGES = {m.type: m for m in (protocol.Prompt, protocol.Stop, protocol.Ping)}
HANDSHAKE_MESSAGES = {protocol.Hello.type: protocol.Hello}
LOGGED_ERRORS_PER_SESSION = 5


@dataclass(frozen=True)
class SessionConfig:
    """What a session needs from the server's configuration."""

    token: str | None = None            # None = no authentication
    max_ahead_s: float = 2.0            # audio sent beyond real-time playback [s]
    context_s: float = 4.0              # tail of sent audio handed to a new stream [s]
    max_frame_bytes: int = protocol.DEFAULT_MAX_AUDIO_FRAME_BYTES
    fragment_s: float = 0.5             # what the backend was asked for (announced in welcome)
    hello_timeout_s: float = 5.0
    stream_close_timeout_s: float = 30.0  # wait for a busy backend call before giving up
    server_name: str = 'muse_music_server'


class PlaybackPacer:
    """Keeps a stream at most ``max_ahead_s`` ahead of a listener playing it in real time.

    The listener is assumed to start playing when the stream's first fragment is sent and to
    play at real time from then on; if the stream falls behind (the listener ran dry), the
    playback position is rebased to "now" as the listener's would be.
    """

    def __init__(self, max_ahead_s: float, clock=time.monotonic):
        self.max_ahead_s = max_ahead_s
        self._clock = clock
        self._start = None
        self._sent_s = 0.0

    def restart(self):
        self._start = None
        self._sent_s = 0.0

    def sent(self, duration_s: float):
        now = self._clock()
        if self._start is None:
            self._start = now
        elif self._sent_s < now - self._start:
            self._start = now - self._sent_s
        self._sent_s += duration_s

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

    def get(self) -> np.ndarray | None:
        if not self._chunks:
            return None
        return np.concatenate(list(self._chunks))[-self._max_samples:].copy()


class StreamRunner:
    """Runs one MusicStream's blocking calls on the session's worker threads, one at a time.

    A call abandoned by a cancelled coroutine keeps running in its thread; the lock makes
    ``close`` wait for it rather than close a stream under a running call.
    """

    def __init__(self, stream: MusicStream, executor: ThreadPoolExecutor, channels: int):
        self._stream = stream
        self._executor = executor
        self._channels = channels
        self._lock = threading.Lock()
        self._closed = False

    def _next_blocking(self):
        with self._lock:
            if self._closed:
                raise BackendError('stream already closed')
            started = time.time_ns()
            fragment = check_fragment(self._stream.next_fragment(), self._channels)
            return fragment, started, time.time_ns()

    def _retarget_blocking(self, spec: PromptSpec) -> bool:
        with self._lock:
            return not self._closed and bool(self._stream.retarget(spec))

    def _close_blocking(self):
        with self._lock:
            if not self._closed:
                self._closed = True
                self._stream.close()

    async def next_fragment(self):
        """-> (float32 (n, channels), generation start ns, generation end ns)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._next_blocking)

    async def retarget(self, spec: PromptSpec) -> bool:
        """MusicStream.retarget on the worker thread: True if the stream now plays ``spec``."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._retarget_blocking, spec)

    async def close(self):
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_blocking)
        except Exception:  # closing is best effort; the stream is dropped either way
            logger.exception('closing a stream failed')


@dataclass
class _Stream:
    """The stream currently heard by the listener (or about to be)."""

    prompt: protocol.Prompt
    runner: StreamRunner
    next_seq: int
    fresh: bool = True  # its next frame starts a stream (FIRST)
    restarts: int = 0
    retargeted_at: float | None = None  # prompt received [monotonic s]; its next frame CONTINUES


class _Switch:
    """A prompt being prepared in the background: open its stream, generate its first fragment."""

    def __init__(self, prompt: protocol.Prompt, task: asyncio.Task, received_at: float):
        self.prompt = prompt
        self.task = task
        self.received_at = received_at


class Session:
    """One WebSocket connection. ``run()`` returns when the connection is over."""

    def __init__(self, websocket, backend: MusicBackend, config: SessionConfig, server_stats,
                 is_shutting_down):
        self.id = uuid.uuid4().hex[:12]
        self.ws = websocket
        self.backend = backend
        self.config = config
        self.stats = server_stats
        self._is_shutting_down = is_shutting_down
        self.client_name = ''
        self.encoding = protocol.Encoding.PCM_S16LE
        # current stream + a prompt being prepared + one superseded preparation still finishing
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix=f'session-{self.id}')
        self._wakeup = asyncio.Event()
        self._requested: tuple[protocol.Prompt, float] | None = None  # (prompt, received at)
        self._stop_requested = False
        self._last_prompt_id = -1
        self._current: _Stream | None = None
        self._switch: _Switch | None = None
        self._held = None  # (fragment, started_ns, finished_ns) of the current stream, see _pump
        self._last_sent = (-1, -1)
        self._pacer = PlaybackPacer(config.max_ahead_s)
        self._tail = AudioTail(config.context_s, backend.sample_rate, backend.channels)
        self._max_frame_samples = 0
        self._pump_task: asyncio.Task | None = None
        self._halted = False
        self._fragment_s = config.fragment_s  # duration of the last fragment generated
        self._background: set[asyncio.Task] = set()  # stream closers running detached
        self._errors_logged = 0

    # ------------------------------------------------------------ lifecycle

    async def handshake(self) -> bool:
        """Wait for a valid hello and answer welcome; False (connection closed) on failure."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), self.config.hello_timeout_s)
        except asyncio.TimeoutError:
            await self._fail(protocol.ErrorCode.HELLO_TIMEOUT,
                             f'no hello within {self.config.hello_timeout_s:g} s')
            return False
        if isinstance(raw, (bytes, bytearray, memoryview)):
            await self._fail(protocol.ErrorCode.HELLO_REQUIRED,
                             'the first message must be a hello text frame, got a binary frame')
            return False
        try:
            hello = protocol.decode_control(raw, HANDSHAKE_MESSAGES)
        except protocol.UnknownMessageType as exc:
            await self._fail(protocol.ErrorCode.HELLO_REQUIRED, f'the first message must be hello: {exc}')
            return False
        except protocol.ProtocolError as exc:
            await self._fail(exc.code, f'bad hello: {exc}')
            return False
        if self.config.token is not None and not hmac.compare_digest(
                hello.token.encode(), self.config.token.encode()):
            await self._fail(protocol.ErrorCode.UNAUTHORIZED, 'wrong or missing token')
            return False
        try:
            self.encoding = protocol.Encoding.from_wire_name(hello.encoding)
        except protocol.InvalidField as exc:
            await self._fail(protocol.ErrorCode.UNSUPPORTED_ENCODING, str(exc))
            return False
        self.client_name = hello.client
        self._max_frame_samples = protocol.max_samples_per_frame(
            self.config.max_frame_bytes, self.backend.channels, self.encoding)
        await self.ws.send(protocol.Welcome(
            protocol=protocol.PROTOCOL_VERSION, session_id=self.id, backend=self.backend.name,
            sample_rate=self.backend.sample_rate, channels=self.backend.channels,
            encoding=self.encoding.wire_name, max_frame_bytes=self.config.max_frame_bytes,
            fragment_s=self.config.fragment_s, max_ahead_s=self.config.max_ahead_s,
            server=self.config.server_name).to_json())
        logger.info('session %s: client %r authenticated (%s)', self.id, self.client_name,
                    self.encoding.wire_name)
        return True

    async def run(self):
        """Serve the session until the client leaves or the server closes it."""
        self._pump_task = asyncio.create_task(self._pump(), name=f'pump-{self.id}')
        receive_task = asyncio.create_task(self._receive_loop(), name=f'receive-{self.id}')
        try:
            await asyncio.wait({self._pump_task, receive_task}, return_when=asyncio.FIRST_COMPLETED)
            if self._halted and not receive_task.done():
                # shutting down: keep answering (SHUTTING_DOWN) until the server closes us
                await asyncio.wait({receive_task})
            for task in (self._pump_task, receive_task):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not is_connection_closed(exc):
                        logger.error('session %s: %s failed', self.id, task.get_name(),
                                     exc_info=exc)
                        await self._fail(protocol.ErrorCode.INTERNAL_ERROR,
                                         f'internal error: {type(exc).__name__}')
        finally:
            for task in (self._pump_task, receive_task):
                task.cancel()
            await asyncio.gather(self._pump_task, receive_task, return_exceptions=True)
            await self._release_streams()

    async def notify_shutdown(self, grace_s: float):
        """Tell the client the server is stopping, and stop generating."""
        self._halted = True
        self._wakeup.set()
        try:
            await self.ws.send(protocol.Shutdown(grace_s=grace_s).to_json())
        except Exception as exc:  # the client may already be gone
            logger.debug('session %s: shutdown notice not sent: %r', self.id, exc)

    async def _release_streams(self):
        closing = []
        if self._current is not None:
            closing.append(self._current.runner.close())
        if self._switch is not None:
            closing.append(self._discard_switch(self._switch))
        closing.extend(self._background)
        self._current = self._switch = self._held = None
        if closing:
            try:
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True),
                                       self.config.stream_close_timeout_s)
            except asyncio.TimeoutError:
                logger.warning('session %s: a backend call did not finish within %g s; '
                               'leaving it behind', self.id, self.config.stream_close_timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ control messages

    async def _receive_loop(self):
        async for raw in self.ws:
            if isinstance(raw, (bytes, bytearray, memoryview)):
                await self._reply_error(protocol.ErrorCode.UNEXPECTED_BINARY,
                                        f'clients send text frames only; got {len(raw)} binary bytes')
                continue
            try:
                message = protocol.decode_control(raw, SESSION_MESSAGES)
            except protocol.ProtocolError as exc:
                await self._reply_error(exc.code, str(exc))
                continue
            if isinstance(message, protocol.Ping):
                await self.ws.send(protocol.Pong(id=message.id, t_client=message.t_client,
                                                 t_server=time.time()).to_json())
            elif isinstance(message, protocol.Prompt):
                await self._on_prompt(message)
            elif isinstance(message, protocol.Stop):
                self._stop_requested = True
                self._requested = None
                self._wakeup.set()

    async def _on_prompt(self, prompt: protocol.Prompt):
        if self._is_shutting_down():
            await self._reply_error(protocol.ErrorCode.SHUTTING_DOWN,
                                    'the server is shutting down; prompt not accepted',
                                    prompt.prompt_id)
            return
        if prompt.prompt_id <= self._last_prompt_id:
            await self._reply_error(
                protocol.ErrorCode.STALE_PROMPT,
                f'prompt_id {prompt.prompt_id} is not greater than this session\'s last '
                f'prompt_id {self._last_prompt_id}', prompt.prompt_id)
            return
        self._last_prompt_id = prompt.prompt_id
        # a prompt not yet started is superseded by a newer one
        self._requested = (prompt, time.monotonic())
        self._stop_requested = False
        self.stats['prompts'] += 1
        self._wakeup.set()

    async def _reply_error(self, code, message, prompt_id=-1):
        self.stats['errors'] += 1
        self._errors_logged += 1
        # a misbehaving client must not flood the log: its first errors, then every 100th
        if self._errors_logged <= LOGGED_ERRORS_PER_SESSION or self._errors_logged % 100 == 0:
            logger.info('session %s: %s: %s (%d so far)', self.id, protocol.ErrorCode(code).name,
                        message, self._errors_logged)
        await self.ws.send(protocol.Error.make(code, message, prompt_id=prompt_id).to_json())

    async def _fail(self, code, message):
        """Answer with a fatal error and close the connection with the same code."""
        self.stats['errors'] += 1
        logger.info('session %s: closing: %s (%s)', self.id, message, protocol.ErrorCode(code).name)
        try:
            await send_fatal(self.ws, code, message)
        except Exception as exc:  # the client may already be gone
            logger.debug('session %s: could not deliver %s: %r', self.id, code, exc)

    # ------------------------------------------------------------ the audio pump

    async def _pump(self):
        """The only place that touches streams and sends audio.

        A stream's first fragment goes out at once; after that its newest fragment is held back
        one step (sent when the next one is generated), so that when a newer prompt's first
        fragment is ready, the old stream's true last fragment can go out marked LAST right
        before it. While a switch is being prepared the current stream keeps playing.
        """
        while True:
            self._wakeup.clear()
            if self._halted:
                await self._release_streams()
                return
            if self._stop_requested:
                await self._stop()
                continue
            if self._requested is not None:
                requested, self._requested = self._requested, None
                if not await self._retarget(*requested):
                    self._begin_switch(*requested)
            if self._switch is not None and self._switch.task.done():
                await self._complete_switch()
                continue
            if self._current is None:
                await self._wakeup.wait()
                continue
            # While a switch is prepared, old audio is made only as the listener needs it, so
            # that the old stream competes as little as possible with the new one's start.
            limit = 3 * self._fragment_s if self._switch is not None else None
            delay = self._pacer.delay_before_next(self._fragment_s, limit)
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            generated = await self._next_of_current()
            if generated is None:
                continue
            self._fragment_s = len(generated[0]) / self.backend.sample_rate
            if self._held is not None:
                await self._send(self._current, *self._held)
            self._held = generated

    async def _retarget(self, prompt: protocol.Prompt, received_at: float) -> bool:
        """Steer the running stream to ``prompt`` (no new piece): the held fragment, the last
        of the old prompt, goes out LAST and the stream's next one CONTINUES it as the new
        prompt. False when there is nothing to steer or the backend cannot (then a new stream)."""
        current = self._current
        if current is None or self._held is None:
            return False  # with nothing held back, the old prompt could not be ended LAST
        try:
            steered = await current.runner.retarget(_to_spec(prompt))
        except Exception as exc:
            logger.warning('session %s: retargeting to prompt %d failed, opening a new stream: '
                           '%s', self.id, prompt.prompt_id, exc)
            return False
        if not steered:
            return False
        if self._switch is not None:
            self._detach(self._discard_switch(self._switch))
            self._switch = None
        await self._send(current, *self._held, last=True)
        self._held = None
        self._current = _Stream(prompt, current.runner, prompt.first_seq, fresh=False,
                                retargeted_at=received_at)
        self.stats['retargets'] = self.stats.get('retargets', 0) + 1
        return True

    def _begin_switch(self, prompt: protocol.Prompt, received_at: float):
        if self._switch is not None:
            self._detach(self._discard_switch(self._switch))
        context = self._tail.get()
        task = asyncio.create_task(self._prepare(prompt, context), name=f'prepare-{prompt.prompt_id}')
        task.add_done_callback(lambda _: self._wakeup.set())
        self._switch = _Switch(prompt, task, received_at)

    def _detach(self, coroutine):
        """Run a stream closer without waiting for it; the session's end awaits it."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _prepare(self, prompt: protocol.Prompt, context):
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(self._executor, self.backend.open_stream,
                                            _to_spec(prompt), context)
        runner = StreamRunner(stream, self._executor, self.backend.channels)
        try:
            first = await runner.next_fragment()
        except BaseException:
            await runner.close()
            raise
        return runner, first

    async def _discard_switch(self, switch: _Switch):
        """Close the stream of a switch that lost to a newer prompt (once it is ready)."""
        try:
            runner, _ = await switch.task
        except BaseException:
            return
        await runner.close()

    async def _complete_switch(self):
        switch, self._switch = self._switch, None
        try:
            runner, first = switch.task.result()
        except Exception as exc:
            logger.warning('session %s: prompt %d failed: %s', self.id, switch.prompt.prompt_id, exc)
            await self._reply_error(protocol.ErrorCode.BACKEND_ERROR,
                                    f'could not start prompt {switch.prompt.prompt_id}: {exc}',
                                    switch.prompt.prompt_id)
            return  # the old stream goes on
        old, held = self._current, self._held
        self._current = _Stream(switch.prompt, runner, switch.prompt.first_seq)
        self._held = None
        if old is not None:
            self._detach(old.runner.close())
            if held is not None:
                await self._send(old, *held, last=True)
        self._pacer.restart()
        self._fragment_s = len(first[0]) / self.backend.sample_rate
        await self._send(self._current, *first)
        latency = time.monotonic() - switch.received_at
        self.stats['switch_latency_s'].append(latency)
        logger.info('session %s: prompt %d audible after %.0f ms', self.id,
                    switch.prompt.prompt_id, latency * 1e3)

    async def _next_of_current(self):
        """Next fragment of the current stream; on a backend failure restart the stream once
        from the audio already sent (the restart is marked FIRST), else end it."""
        stream = self._current
        try:
            return await stream.runner.next_fragment()
        except Exception as exc:
            logger.warning('session %s: prompt %d stream failed: %s', self.id,
                           stream.prompt.prompt_id, exc)
            await stream.runner.close()
        if self._held is not None:  # the failed stream's audio so far still goes out
            await self._send(stream, *self._held)
            self._held = None
        if stream.restarts == 0:
            try:
                stream.runner, first = await self._prepare(stream.prompt, self._tail.get())
            except Exception as exc:
                logger.warning('session %s: restarting prompt %d failed: %s', self.id,
                               stream.prompt.prompt_id, exc)
            else:
                stream.fresh = True
                stream.restarts += 1
                self._pacer.restart()
                return first
        await self._reply_error(protocol.ErrorCode.BACKEND_ERROR,
                                f'the stream of prompt {stream.prompt.prompt_id} failed',
                                stream.prompt.prompt_id)
        self._current = None
        self._held = None
        return None

    async def _stop(self):
        self._stop_requested = False
        if self._switch is not None:
            self._detach(self._discard_switch(self._switch))
            self._switch = None
        if self._held is not None:
            await self._send(self._current, *self._held, last=True)
            self._held = None
        if self._current is not None:
            await self._current.runner.close()
            self._current = None
        prompt_id, seq = self._last_sent
        await self.ws.send(protocol.Stopped(prompt_id=prompt_id, last_seq=seq).to_json())

    async def _send(self, stream: _Stream, fragment, started_ns, finished_ns, last=False):
        """Send one fragment as one or more audio frames (split to fit max_frame_bytes)."""
        chunk = self._max_frame_samples
        pieces = range(0, len(fragment), chunk)
        for index, start in enumerate(pieces):
            part = fragment[start:start + chunk]
            flags = protocol.Flags(0)
            if stream.fresh:
                flags |= protocol.Flags.FIRST
                stream.fresh = False
            elif stream.retargeted_at is not None:
                flags |= protocol.Flags.CONTINUES
                latency = time.monotonic() - stream.retargeted_at
                self.stats['switch_latency_s'].append(latency)
                logger.info('session %s: prompt %d retargeted the running stream, sent after '
                            '%.0f ms', self.id, stream.prompt.prompt_id, latency * 1e3)
                stream.retargeted_at = None
            if last and index == len(pieces) - 1:
                flags |= protocol.Flags.LAST
            frame = protocol.AudioFrame(
                prompt_id=stream.prompt.prompt_id, seq=stream.next_seq,
                sample_rate=self.backend.sample_rate, channels=self.backend.channels,
                encoding=self.encoding, flags=flags,
                payload=protocol.encode_samples(part, self.encoding),
                generation_started_ns=started_ns, generation_finished_ns=finished_ns)
            await self.ws.send(protocol.encode_audio_frame(frame, self.config.max_frame_bytes))
            self._last_sent = (frame.prompt_id, frame.seq)
            stream.next_seq += 1
            self._pacer.sent(len(part) / self.backend.sample_rate)
            self._tail.append(part)
            self.stats['fragments'] += 1


async def send_fatal(ws, code: protocol.ErrorCode, message: str):
    """Answer with a fatal error, then close the connection with the same code."""
    await ws.send(protocol.Error.make(code, message, fatal=True).to_json())
    await ws.close(int(code), protocol.ErrorCode(code).name.lower())


def _to_spec(prompt: protocol.Prompt) -> PromptSpec:
    return PromptSpec(prompt_id=prompt.prompt_id, text=prompt.text, style=prompt.style,
                      activity=prompt.activity, energy=prompt.energy,
                      target_bpm=prompt.target_bpm, heart_rate_bpm=prompt.heart_rate_bpm)


def is_connection_closed(exc) -> bool:
    """Whether ``exc`` only says the peer went away (not worth a traceback)."""
    return isinstance(exc, ConnectionClosed)
