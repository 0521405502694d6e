"""One client session of the music server: handshake, control messages, and the audio pump that
streams fragments, switches prompts without a gap and paces itself to real-time playback.

No rclpy, no torch. The WebSocket is duck-typed (``send``, ``recv``, ``close``, async iteration),
which the ``websockets`` connection provides.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from muse_protocol import protocol
from muse_server.backends.base import MusicBackend, PromptSpec
from muse_server.streaming import AudioTail, PlaybackPacer, StreamRunner

logger = logging.getLogger('muse_music_server')

# Session-phase control messages (a second hello is an unknown type there).
SESSION_MESSAGES = {m.type: m for m in (protocol.Prompt, protocol.Stop)}
HANDSHAKE_MESSAGES = {protocol.Hello.type: protocol.Hello}
LOGGED_ERRORS_PER_SESSION = 5


@dataclass(frozen=True)
class SessionConfig:
    """What a session needs from the server's configuration."""

    token: str | None = None            # None = no authentication
    max_ahead_s: float = 2.0            # audio sent beyond real-time playback [s]
    # Steer a running stream to a new prompt when its backend can (a musical transition on the
    # bar line, heard after the audio already sent) instead of opening a new stream that the
    # player crossfades in at once. Off by default: it trades ~1-2.5 s of latency for music.
    retarget: bool = False
    # Fork the running stream just ahead of the listener (MusicStream.fork) when the backend
    # can and the client splices REPLACES frames: the change is heard within a beat (synth),
    # so this is on by default. With retarget off, only such forks steer a stream.
    fork: bool = True
    # A stream its backend can retarget is kept less far ahead: a prompt change continues it
    # after the audio already sent, so this is the change's latency (a new stream cuts in).
    retarget_ahead_s: float = 1.0
    # A fork starts this far after the listener's estimated play position: time for the fork
    # to be computed and reach the player before that point is heard.
    fork_margin_s: float = 0.1
    # The listener plays this much behind the pacer's estimate (the player's prebuffer_s,
    # 0.3 s by default). A player that buffers less skips the fork's head up to its play
    # position (nothing heard twice, no gap); one that buffers more hears the change later.
    listener_delay_s: float = 0.3
    context_s: float = 4.0              # tail of sent audio handed to a new stream [s]
    max_frame_bytes: int = protocol.DEFAULT_MAX_AUDIO_FRAME_BYTES
    fragment_s: float = 0.5             # what the backend was asked for (announced in welcome)
    hello_timeout_s: float = 2.0
    stream_close_timeout_s: float = 30.0  # wait for a busy backend call before giving up
    # A client whose unread data stays above the write buffer's high-water mark this long is
    # not reading: its connection is dropped, whatever it sends meanwhile.
    write_timeout_s: float = 10.0
    # Control messages a client may send per second (and in a burst); beyond, reading pauses
    # (TCP pushes back on the client) and RATE_LIMITED is answered once per second.
    messages_per_s: float = 10.0
    message_burst: int = 20
    server_name: str = 'muse_music_server'


@dataclass
class _Stream:
    """The stream currently heard by the listener (or about to be)."""

    prompt: protocol.Prompt
    runner: StreamRunner
    next_seq: int
    fresh: bool = True  # its next frame starts a stream (FIRST)
    restarts: int = 0
    held: tuple | None = None  # (fragment, started_ns, finished_ns) not yet sent, see _pump
    retargets: bool = False  # its backend may steer it to a new prompt (until it says no)
    retargeted_at: float | None = None  # prompt received [monotonic s]; its next frame CONTINUES
    replaces: int = 0  # with retargeted_at: samples of sent audio its next frame replaces (fork)
    samples_sent: int = 0  # samples of its runner's stream sent so far (over retargets too)


@dataclass(frozen=True)
class _PromptRequest:
    prompt: protocol.Prompt
    received_at: float  # monotonic


STOP = 'stop'  # the command of a 'stop' message


class _SeqExhausted(Exception):
    """A stream used up the seq numbers of its prompt (only a first_seq near the top and
    tiny frames get there; the protocol's ordering forbids wrapping around)."""

    def __init__(self, stream: _Stream):
        super().__init__(f'prompt {stream.prompt.prompt_id} used up its seq numbers')
        self.stream = stream


class MessageRate:
    """A token bucket: ``rate`` messages per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._updated = clock()

    def wait_s(self) -> float:
        """Take one token; -> how long to wait first (0: none) to stay within the rate."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate


class _Switch:
    """A prompt being prepared in the background: open its stream, generate its first fragment."""

    def __init__(self, prompt: protocol.Prompt, task: asyncio.Task, received_at: float):
        self.prompt = prompt
        self.task = task
        self.received_at = received_at


class Session:
    """One WebSocket connection. ``run()`` returns when the connection is over.

    Two tasks share the session: the receive loop turns client messages into one pending
    command (the newest prompt, or stop), and the pump, the only one to touch streams and send
    audio, carries commands out.
    """

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
        self.client_replaces = False   # the client splices REPLACES frames (its hello says so)
        self.failed_hello = False  # the client failed the handshake (the server throttles it)
        # receive loop -> pump
        self._wakeup = asyncio.Event()
        self._command: _PromptRequest | str | None = None  # the newest wins
        self._halted = False
        self._last_prompt_id = -1
        # the pump's: what plays, what is being prepared, what is being let go
        self._current: _Stream | None = None
        self._switch: _Switch | None = None
        self._superseded: set[asyncio.Task] = set()  # preparations a newer prompt replaced
        self._closers: set[asyncio.Task] = set()      # old streams closing in the background
        self._last_sent = (-1, -1)
        self._pacer = PlaybackPacer(config.max_ahead_s, listener_delay_s=config.listener_delay_s)
        self._tail = AudioTail(config.context_s, backend.sample_rate, backend.channels)
        self._fragment_s = config.fragment_s  # duration of the last fragment generated
        self._max_frame_samples = 0
        self._message_rate = MessageRate(config.messages_per_s, config.message_burst)
        self._rate_limited_at = -1.0
        self._errors_logged = 0

    # ------------------------------------------------------------ lifecycle

    async def handshake(self, admit=lambda: None) -> bool:
        """Wait for a valid hello and answer welcome; False (connection closed) on failure.

        ``admit()`` is asked once the client is authenticated: None lets it in, a
        ``(code, message)`` refuses it (the server's session limit).
        """
        refusal = await self._check_hello()
        if refusal is not None:
            self.failed_hello = True
        else:
            refusal = admit()
        if refusal is not None:
            await self._fail(*refusal)
            return False
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

    async def _check_hello(self):
        """-> None for a valid hello from a client holding the token, else (code, message)."""
        code = protocol.ErrorCode
        try:
            raw = await asyncio.wait_for(self.ws.recv(), self.config.hello_timeout_s)
        except asyncio.TimeoutError:
            return code.HELLO_TIMEOUT, f'no hello within {self.config.hello_timeout_s:g} s'
        if isinstance(raw, (bytes, bytearray, memoryview)):
            return (code.HELLO_REQUIRED,
                    'the first message must be a hello text frame, got a binary frame')
        try:
            hello = protocol.decode_control(raw, HANDSHAKE_MESSAGES)
        except protocol.UnknownMessageType as exc:
            return code.HELLO_REQUIRED, f'the first message must be hello: {exc}'
        except protocol.InvalidField as exc:
            if exc.field == 'token':  # its text is a secret, or a near miss of one: not shown
                return exc.code, (f"bad hello: field 'token' is not a string of at most "
                                  f'{protocol.MAX_TOKEN_CHARS} Unicode characters')
            return exc.code, f'bad hello: {exc}'
        except protocol.ProtocolError as exc:
            return exc.code, f'bad hello: {exc}'
        if self.config.token is not None and not same_secret(hello.token, self.config.token):
            return code.UNAUTHORIZED, 'wrong or missing token'
        try:
            self.encoding = protocol.Encoding.from_wire_name(hello.encoding)
        except protocol.InvalidField as exc:
            return code.UNSUPPORTED_ENCODING, str(exc)
        self.client_name = hello.client
        self.client_replaces = hello.replace
        return None

    async def run(self):
        """Serve the session until the client leaves or the server closes it."""
        pump = asyncio.create_task(self._pump(), name=f'pump-{self.id}')
        receive = asyncio.create_task(self._receive_loop(), name=f'receive-{self.id}')
        watchdog = asyncio.create_task(self._watch_writes(), name=f'watchdog-{self.id}')
        try:
            await asyncio.wait({pump, receive, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if self._halted and not receive.done():
                # shutting down: keep answering (SHUTTING_DOWN) until the server closes us
                await asyncio.wait({receive, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            for task in (pump, receive, watchdog):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not is_connection_closed(exc):
                        logger.error('session %s: %s failed', self.id, task.get_name(),
                                     exc_info=exc)
                        await self._fail(protocol.ErrorCode.INTERNAL_ERROR,
                                         f'internal error: {type(exc).__name__}')
        finally:
            for task in (pump, receive, watchdog):
                task.cancel()
            await asyncio.gather(pump, receive, watchdog, return_exceptions=True)
            await self._release_streams()

    async def notify_shutdown(self, grace_s: float):
        """Tell the client the server is stopping (within ``grace_s``), and stop generating."""
        self._halted = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(self.ws.send(protocol.Shutdown(grace_s=grace_s).to_json()),
                                   grace_s)
        except Exception as exc:  # gone, or not reading: the server closes it after grace_s
            logger.debug('session %s: shutdown notice not sent: %r', self.id, exc)

    async def _release_streams(self):
        closing = list(self._closers) + list(self._superseded)
        if self._current is not None:
            closing.append(self._current.runner.close())
        if self._switch is not None:
            closing.append(self._discard(self._switch))
        self._current = self._switch = None
        if closing:
            try:
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True),
                                       self.config.stream_close_timeout_s)
            except asyncio.TimeoutError:
                # the streams still close once their calls return (StreamRunner)
                logger.warning('session %s: a backend call did not finish within %g s; '
                               'leaving it behind', self.id, self.config.stream_close_timeout_s)

    async def _watch_writes(self):
        """Drop a client that does not read what is sent to it (see write_timeout_s)."""
        transport = getattr(self.ws, 'transport', None)
        if transport is None:  # not a websockets connection
            await asyncio.Event().wait()
        period = self.config.write_timeout_s / 4
        stalled_since = None
        while True:
            await asyncio.sleep(period)
            if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                stalled_since = None
                continue
            now = time.monotonic()
            stalled_since = now if stalled_since is None else stalled_since
            if now - stalled_since >= self.config.write_timeout_s:
                logger.info('session %s: dropping a client that read nothing for %g s',
                            self.id, self.config.write_timeout_s)
                self.stats['evicted'] += 1
                transport.abort()
                return

    # ------------------------------------------------------------ control messages

    async def _receive_loop(self):
        async for raw in self.ws:
            await self._keep_rate()
            if isinstance(raw, (bytes, bytearray, memoryview)):
                await self._reply_error(protocol.ErrorCode.UNEXPECTED_BINARY,
                                        f'clients send text frames only; got {len(raw)} binary bytes')
                continue
            try:
                message = protocol.decode_control(raw, SESSION_MESSAGES)
            except protocol.ProtocolError as exc:
                await self._reply_error(exc.code, str(exc))
                continue
            if isinstance(message, protocol.Prompt):
                await self._on_prompt(message)
            elif isinstance(message, protocol.Stop):
                self._command = STOP
                self._wakeup.set()

    async def _keep_rate(self):
        """Pause reading a client over its message rate (the first time in a second, say so)."""
        wait_s = self._message_rate.wait_s()
        if wait_s <= 0.0:
            return
        now = time.monotonic()
        if now - self._rate_limited_at >= 1.0:
            self._rate_limited_at = now
            await self._reply_error(
                protocol.ErrorCode.RATE_LIMITED,
                f'more than {self.config.messages_per_s:g} messages/s; reading paused')
        await asyncio.sleep(wait_s)

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
        self._command = _PromptRequest(prompt, time.monotonic())
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
            try:
                await self._pump_once()
            except _SeqExhausted as exc:
                if exc.stream is self._current:
                    self._current = None
                    self._close_in_background(exc.stream.runner)
                await self._reply_error(protocol.ErrorCode.INVALID_FIELD,
                                        f'{exc}; send a new prompt', exc.stream.prompt.prompt_id)

    async def _pump_once(self):
        if self._command is STOP:
            self._command = None
            await self._stop()
            return
        if await self._retarget_requested():
            return
        self._start_requested_switch()
        if self._switch is not None and self._switch.task.done():
            await self._complete_switch()
            return
        if self._current is None:
            await self._wakeup.wait()
            return
        # While a switch is prepared, old audio is made only as the listener needs it, so
        # that the old stream competes as little as possible with the new one's start.
        limit = 3 * self._fragment_s if self._switch is not None else None
        if limit is None and self._current.retargets:
            limit = self.config.retarget_ahead_s
        delay = self._pacer.delay_before_next(self._fragment_s, limit)
        if delay > 0:
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except asyncio.TimeoutError:
                pass
            return
        generated = await self._next_noticing_prompts()
        if generated is None:
            return
        self._fragment_s = len(generated[0]) / self.backend.sample_rate
        if self._current.held is not None:
            await self._send(self._current, *self._current.held)
        self._current.held = generated

    async def _next_noticing_prompts(self):
        """The current stream's next fragment; a prompt arriving meanwhile starts being
        prepared at once instead of after the fragment."""
        generating = asyncio.ensure_future(self._next_of_current())
        woken = None
        try:
            while not generating.done():
                woken = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait({generating, woken}, return_when=asyncio.FIRST_COMPLETED)
                if woken.done():
                    self._wakeup.clear()
                    if not self._may_retarget():  # else tried once the fragment is made
                        self._start_requested_switch()
                woken.cancel()
            return generating.result()
        finally:
            generating.cancel()
            if woken is not None:
                woken.cancel()

    def _may_retarget(self) -> bool:
        current = self._current
        return (isinstance(self._command, _PromptRequest) and current is not None
                and current.retargets and current.held is not None)

    async def _retarget_requested(self) -> bool:
        """Steer the running stream to the requested prompt (no new piece): the held fragment,
        the last of the old prompt, goes out LAST and the stream's next one CONTINUES it as the
        new prompt. False when there is nothing to steer or the backend cannot (then the
        prompt gets a new stream, as before)."""
        if not self._may_retarget():
            return False
        request, current = self._command, self._current
        replaces = None
        try:
            replaces = await self._fork(current, request.prompt)
            steered = replaces is not None or (self.config.retarget and await
                                               current.runner.retarget(_to_spec(request.prompt)))
        except Exception as exc:
            logger.warning('session %s: retargeting to prompt %d failed, opening a new stream: '
                           '%s', self.id, request.prompt.prompt_id, exc)
            steered = False
        if not steered:
            current.retargets = False
            return False
        self._command = None
        if self._switch is not None:
            self._supersede(self._switch)
            self._switch = None
        held, current.held = current.held, None
        await self._send(current, *held, last=True)
        self._current = _Stream(request.prompt, current.runner, request.prompt.first_seq,
                                fresh=False, retargets=True, retargeted_at=request.received_at,
                                replaces=replaces or 0, samples_sent=current.samples_sent)
        if replaces:  # the fork replaced audio already sent: the listener will not hear it
            self._current.samples_sent -= replaces
            self._pacer.replaced(replaces / self.backend.sample_rate)
            self._tail.drop_last(replaces)
        self.stats['retargets'] = self.stats.get('retargets', 0) + 1
        return True

    def _forks(self, runner: StreamRunner) -> bool:
        return self.config.fork and self.client_replaces and runner.may_fork

    def _steers(self, runner: StreamRunner) -> bool:
        """Whether prompt changes steer this stream (else each opens a new stream)."""
        return (self.config.retarget and runner.may_retarget) or self._forks(runner)

    async def _fork(self, current: _Stream, prompt: protocol.Prompt) -> int | None:
        """Fork the running stream just ahead of the listener (a client that splices
        REPLACES frames, a backend that forks): -> how many samples of the audio sent, the
        held fragment included, the fork replaces; None when it did not fork."""
        if not self._forks(current.runner):
            return None
        rate = self.backend.sample_rate
        heard = round(self._pacer.heard_s() * rate)   # pacer and samples_sent: the same origin
        sent = current.samples_sent + len(current.held[0])
        at = max(heard + round(self.config.fork_margin_s * rate),
                 sent - protocol.MAX_REPLACES, 0)
        start = await current.runner.fork(_to_spec(prompt), min(at, sent))
        if start is None:
            return None
        return sent - start

    def _start_requested_switch(self):
        """Start preparing the requested prompt, unless a superseded preparation is still
        finishing (then the newest request waits for it: the backend prepares at most two)."""
        if not isinstance(self._command, _PromptRequest) or self._superseded:
            return
        request, self._command = self._command, None
        if self._switch is not None:
            self._supersede(self._switch)
        context = self._tail.get()
        task = asyncio.create_task(self._prepare(request.prompt, context),
                                   name=f'prepare-{request.prompt.prompt_id}')
        task.add_done_callback(lambda _: self._wakeup.set())
        self._switch = _Switch(request.prompt, task, request.received_at)

    def _supersede(self, switch: _Switch):
        task = asyncio.ensure_future(self._discard(switch))
        self._superseded.add(task)

        def done(_):
            self._superseded.discard(task)
            self._wakeup.set()  # a waiting request may start now
        task.add_done_callback(done)

    def _close_in_background(self, runner: StreamRunner):
        """Close a stream without waiting for it; the session's end awaits it."""
        task = asyncio.ensure_future(runner.close())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _prepare(self, prompt: protocol.Prompt, context):
        runner = await StreamRunner.open(self.backend, _to_spec(prompt), context,
                                         name=f'session-{self.id}')
        try:
            first = await runner.next_fragment()
        except BaseException:
            runner.close_soon()
            raise
        return runner, first

    async def _discard(self, switch: _Switch):
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
        old, self._current = self._current, _Stream(switch.prompt, runner, switch.prompt.first_seq,
                                                    retargets=self._steers(runner))
        if old is not None:
            self._close_in_background(old.runner)
            if old.held is not None:
                await self._send(old, *old.held, last=True)
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
        if stream.held is not None:  # the failed stream's audio so far still goes out
            held, stream.held = stream.held, None
            await self._send(stream, *held)
        if stream.restarts == 0:
            try:
                stream.runner, first = await self._prepare(stream.prompt, self._tail.get())
            except Exception as exc:
                logger.warning('session %s: restarting prompt %d failed: %s', self.id,
                               stream.prompt.prompt_id, exc)
            else:
                stream.fresh = True
                stream.samples_sent = 0   # the new runner's stream starts over
                stream.restarts += 1
                self._pacer.restart()
                return first
        await self._end_current(protocol.ErrorCode.BACKEND_ERROR,
                                f'the stream of prompt {stream.prompt.prompt_id} failed',
                                stream.prompt.prompt_id)
        return None

    async def _end_current(self, code, message, prompt_id):
        stream, self._current = self._current, None
        self._close_in_background(stream.runner)
        await self._reply_error(code, message, prompt_id)

    async def _stop(self):
        if self._switch is not None:
            self._supersede(self._switch)
            self._switch = None
        stream, self._current = self._current, None
        if stream is not None:
            if stream.held is not None:
                await self._send(stream, *stream.held, last=True)
            await stream.runner.close()
        prompt_id, seq = self._last_sent
        await self.ws.send(protocol.Stopped(prompt_id=prompt_id, last_seq=seq).to_json())

    async def _send(self, stream: _Stream, fragment, started_ns, finished_ns, last=False):
        """Send one fragment as one or more audio frames (split to fit max_frame_bytes)."""
        chunk = self._max_frame_samples
        pieces = range(0, len(fragment), chunk)
        if stream.next_seq + len(pieces) - 1 > protocol.UINT32_MAX:
            raise _SeqExhausted(stream)
        for index, start in enumerate(pieces):
            part = fragment[start:start + chunk]
            flags = protocol.Flags(0)
            replaces = 0
            if stream.fresh:
                flags |= protocol.Flags.FIRST
                stream.fresh = False
            elif stream.retargeted_at is not None:
                flags |= protocol.Flags.CONTINUES
                if stream.replaces:
                    flags |= protocol.Flags.REPLACES
                    replaces, stream.replaces = stream.replaces, 0
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
                generation_started_ns=started_ns, generation_finished_ns=finished_ns,
                replaces=replaces)
            await self.ws.send(protocol.encode_audio_frame(frame, self.config.max_frame_bytes))
            self._last_sent = (frame.prompt_id, frame.seq)
            stream.next_seq += 1
            stream.samples_sent += len(part)
            self._pacer.sent(len(part) / self.backend.sample_rate)
            self._tail.append(part)
            self.stats['fragments'] += 1


def same_secret(given: str, expected: str) -> bool:
    """Constant-time token comparison on bytes (surrogatepass: encoding cannot raise)."""
    return hmac.compare_digest(given.encode('utf-8', 'surrogatepass'),
                               expected.encode('utf-8', 'surrogatepass'))


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
