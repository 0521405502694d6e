"""An asyncio client of the music server, and the small pieces of client-side logic the bridge
node builds on (reconnect backoff, ordering guard, rolling statistics). No rclpy.

    async with MusicClient('ws://127.0.0.1:8765', token='secret') as client:
        await client.send_prompt(protocol.Prompt(prompt_id=1, text='calm piano'))
        event = await client.receive()   # protocol.AudioFrame or a server control message
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import itertools
import random
import threading
import time

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from muse_protocol import protocol


class ServerError(Exception):
    """The server answered with an ``error`` message (fatal ones end the session)."""

    def __init__(self, error: protocol.Error):
        super().__init__(f'{error.code_name} ({error.code}): {error.message}')
        self.error = error
        self.code = error.code
        self.fatal = error.fatal


class ConnectionLost(Exception):
    """The WebSocket closed; ``code``/``reason`` are the close frame's (None if none arrived)."""

    def __init__(self, code: int | None, reason: str = ''):
        super().__init__(f'connection closed (code {code}{": " + reason if reason else ""})')
        self.code = code
        self.reason = reason


_CLOSED = object()  # queued after the last item once the connection is closed


class MusicClient:
    """One session with the server.

    A reader task receives every frame: pongs resolve :meth:`ping`, everything else goes, in
    arrival order, to a bounded queue read by :meth:`receive` (a full queue stops the reader,
    which lets TCP push back on the server instead of buffering without bound).
    """

    def __init__(self, url: str, token: str = '', client_name: str = 'muse_client',
                 encoding: protocol.Encoding = protocol.Encoding.PCM_S16LE,
                 open_timeout: float = 10.0, max_queue: int = 256):
        self.url = url
        self.token = token
        self.client_name = client_name
        self.encoding = protocol.Encoding(encoding)
        self.open_timeout = open_timeout
        self.welcome: protocol.Welcome | None = None
        self._ws = None
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._reader: asyncio.Task | None = None
        self._pings: dict[int, asyncio.Future] = {}
        self._close_info: tuple[int | None, str] | None = None  # set once the reader ended
        self._ping_ids = itertools.count(1)

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    @property
    def queue_depth(self) -> int:
        """Frames and messages received but not yet taken by :meth:`receive`."""
        return self._queue.qsize()

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def connect(self) -> protocol.Welcome:
        """Open the connection and complete hello/welcome.

        Raises :class:`ServerError` when the server refuses (bad token, busy, ...),
        :class:`ConnectionLost`, ``OSError`` or ``TimeoutError`` when it cannot be reached.
        """
        try:
            self._ws = await connect(self.url, open_timeout=self.open_timeout,
                                     max_size=protocol.MAX_AUDIO_FRAME_BYTES, compression=None,
                                     user_agent_header=f'muse_client/{protocol.PROTOCOL_VERSION}')
        except asyncio.TimeoutError:
            raise TimeoutError(f'no WebSocket handshake with {self.url} within '
                               f'{self.open_timeout:g} s') from None
        except InvalidHandshake as exc:
            # e.g. a proxy in front of the servers answering 503 while none is ready: the
            # same as a connection that closed before the welcome (the link retries)
            raise ConnectionLost(None, f'WebSocket handshake refused: {exc}') from None
        try:
            try:
                await self._ws.send(protocol.Hello(
                    protocol=protocol.PROTOCOL_VERSION, token=self.token, client=self.client_name,
                    encoding=self.encoding.wire_name).to_json())
            except ConnectionClosed:
                pass  # refused before the hello went out: the reason is waiting in recv()
            raw = await asyncio.wait_for(self._ws.recv(), self.open_timeout)
            reply = protocol.decode_control(raw, protocol.SERVER_MESSAGES)
        except ConnectionClosed as exc:
            await self._ws.close()
            raise ConnectionLost(*_close_info(exc)) from None
        except (asyncio.TimeoutError, protocol.ProtocolError) as exc:
            await self._ws.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise TimeoutError(f'no welcome from {self.url} within {self.open_timeout:g} s') from None
            raise protocol.MalformedFrame(f'bad reply to hello from {self.url}: {exc}') from None
        if isinstance(reply, protocol.Error):
            await self._ws.close()
            raise ServerError(reply)
        if not isinstance(reply, protocol.Welcome) or reply.protocol != protocol.PROTOCOL_VERSION:
            await self._ws.close()
            raise protocol.MalformedFrame(f'expected a protocol {protocol.PROTOCOL_VERSION} '
                                          f'welcome from {self.url}, got {reply!r}')
        self.welcome = reply
        self._reader = asyncio.create_task(self._read(), name='muse-client-reader')
        return reply

    async def send_prompt(self, prompt: protocol.Prompt):
        await self._send(prompt.to_json())

    async def stop(self):
        await self._send(protocol.Stop().to_json())

    async def send_raw(self, data):
        """Send a frame as is (tests use it to send what a well-behaved client would not)."""
        await self._send(data)

    async def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time [s] of one ping/pong on this connection."""
        ping_id = next(self._ping_ids)
        future = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = future
        try:
            await self._send(protocol.Ping(id=ping_id, t_client=time.monotonic()).to_json())
            pong = await asyncio.wait_for(future, timeout)
        finally:
            self._pings.pop(ping_id, None)
        return time.monotonic() - pong.t_client

    async def receive(self, timeout: float | None = None):
        """The next audio frame or server message (Error, Stopped, Shutdown), in arrival order.

        Raises :class:`ConnectionLost` once the connection is closed and everything before the
        close was received; a :class:`protocol.ProtocolError` for a frame that did not decode
        (the session goes on); ``TimeoutError`` if nothing arrives within ``timeout``.
        """
        if self._ws is None:
            raise ConnectionLost(None, 'not connected')
        if self._close_info is not None and self._queue.empty():
            raise ConnectionLost(*self._close_info)
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f'nothing received within {timeout:g} s') from None
        if item is _CLOSED:
            raise ConnectionLost(*self._close_info)
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self):
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _send(self, data):
        if self._ws is None:
            raise ConnectionLost(None, 'not connected')
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionLost(*_close_info(exc)) from None

    async def _read(self):
        max_bytes = self.welcome.max_frame_bytes
        try:
            async for raw in self._ws:
                try:
                    if isinstance(raw, str):
                        item = protocol.decode_control(raw, protocol.SERVER_MESSAGES)
                    else:
                        item = protocol.decode_audio_frame(raw, max_bytes)
                except protocol.ProtocolError as exc:
                    item = exc
                if isinstance(item, protocol.Pong):
                    future = self._pings.get(item.id)
                    if future is not None and not future.done():
                        future.set_result(item)
                    continue
                await self._queue.put(item)
        except ConnectionClosed:
            pass
        finally:
            self._close_info = _ws_close_info(self._ws)
            for future in self._pings.values():
                if not future.done():
                    future.set_exception(ConnectionLost(*self._close_info))
            # wakes a waiting receive(); with a full queue, receive() finds _close_info later
            try:
                self._queue.put_nowait(_CLOSED)
            except asyncio.QueueFull:
                pass


def _close_info(exc: ConnectionClosed):
    frame = exc.rcvd or exc.sent
    return (frame.code, frame.reason) if frame is not None else (None, '')


def _ws_close_info(ws):
    return ws.close_code, ws.close_reason or ''


# ---------------------------------------------------------------- client-side logic


class ExponentialBackoff:
    """Reconnect delays: ``min_s * 2**attempt`` capped at ``max_s``, with jitter.

    Jitter draws each delay uniformly from ``[(1 - jitter) * d, d]``, so clients that lost the
    same server do not all come back at the same instant.
    """

    def __init__(self, min_s: float, max_s: float, jitter: float = 0.5, rng=None):
        if not 0.0 < min_s <= max_s:
            raise ValueError(f'backoff needs 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}')
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f'backoff jitter must be in [0, 1], got {jitter}')
        self.min_s, self.max_s, self.jitter = min_s, max_s, jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform((1.0 - self.jitter) * ceiling, ceiling)

    def reset(self):
        self.attempt = 0


class OrderGuard:
    """Admits audio frames only in strictly increasing (prompt_id, seq) order."""

    def __init__(self):
        self.last: tuple[int, int] | None = None

    def admit(self, prompt_id: int, seq: int) -> bool:
        key = (prompt_id, seq)
        if self.last is not None and key <= self.last:
            return False
        self.last = key
        return True

    def next_seq(self, prompt_id: int) -> int:
        """Where a resumed stream of ``prompt_id`` should continue numbering."""
        if self.last is not None and self.last[0] == prompt_id:
            return self.last[1] + 1
        return 0


class RollingStats:
    """The last ``size`` samples of a quantity, for medians and percentiles (thread-safe: the
    bridge adds from its asyncio thread while diagnostics read from the executor)."""

    def __init__(self, size: int = 200):
        self._values = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float):
        with self._lock:
            self._values.append(float(value))

    def __len__(self):
        return len(self._values)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100); NaN when empty."""
        with self._lock:
            values = list(self._values)
        return float(np.percentile(values, q)) if values else float('nan')

    @property
    def last(self) -> float:
        return self._values[-1] if self._values else float('nan')


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._times = collections.deque()
        self._lock = threading.Lock()

    def tick(self):
        with self._lock:
            self._times.append(self._clock())
            self._trim()

    def rate(self) -> float:
        with self._lock:
            self._trim()
            return len(self._times) / self.window_s

    def _trim(self):
        cutoff = self._clock() - self.window_s
        while self._times and self._times[0] < cutoff:
            self._times.popleft()


# ---------------------------------------------------------------- the bridge's resilient link

class LinkState(enum.Enum):
    CONNECTING = 'connecting'
    CONNECTED = 'connected'
    BACKOFF = 'waiting to reconnect'
    CLOSED = 'closed'


class ReconnectingLink:
    """Keeps one session with the server alive for the bridge node, on an asyncio loop.

    * reconnects with :class:`ExponentialBackoff` (jittered) whenever the session ends;
    * re-sends the current prompt after a reconnect, with ``first_seq`` continuing the seq
      numbering of what was already delivered (the server marks that fragment FIRST, since the
      restarted stream is not sample-continuous with the last one);
    * delivers frames to ``on_frame(frame)`` only in strictly increasing (prompt_id, seq) order;
    * measures round-trip time, prompt-to-first-fragment latency and fragment rate.

    Every method but :meth:`snapshot` must be called on the link's loop (the node uses
    ``loop.call_soon_threadsafe``). ``on_frame`` and ``log`` are called on the loop.
    """

    def __init__(self, url: str, token: str | None, on_frame, *, client_name='muse_cloud_bridge',
                 encoding=protocol.Encoding.PCM_S16LE, reconnect_min_s=0.5, reconnect_max_s=10.0,
                 open_timeout_s=5.0, ping_period_s=2.0, log=None, rng=None):
        self.url = url
        self.token = token or ''
        self.on_frame = on_frame
        self.client_name = client_name
        self.encoding = protocol.Encoding(encoding)
        self.backoff = ExponentialBackoff(reconnect_min_s, reconnect_max_s, rng=rng)
        self.open_timeout_s = open_timeout_s
        self.ping_period_s = ping_period_s
        self._log = log or (lambda level, message: None)
        self.guard = OrderGuard()
        self.state = LinkState.BACKOFF
        self.session_id = ''
        self.welcome: protocol.Welcome | None = None
        self.rtt_s = RollingStats(100)
        self.first_fragment_latency_s = RollingStats(100)
        self.fragment_rate = RateMeter(5.0)
        self.counters = collections.Counter()
        self.last_error = ''
        self.disconnected_since = time.monotonic()
        self._prompt: protocol.Prompt | None = None
        self._awaiting_first: tuple[int, float] | None = None  # (prompt_id, monotonic received)
        self._client: MusicClient | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._restarting = False  # the session is being ended on purpose (reconnect)
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------ commands (on the loop)

    def set_prompt(self, prompt: protocol.Prompt, received_at: float | None = None):
        """Make ``prompt`` the current one and send it now if connected."""
        current = self._prompt
        if current is not None and prompt.prompt_id == current.prompt_id:
            return  # a latched prompt delivered again
        received_at = time.monotonic() if received_at is None else received_at
        if current is not None and prompt.prompt_id < current.prompt_id:
            # The prompt source restarted its numbering: the server (and the ordering guard)
            # would refuse the smaller ids, so a fresh session starts the new numbering.
            self._log('warn', f'prompt_id went back from {current.prompt_id} to '
                      f'{prompt.prompt_id}: starting a new server session')
            self.guard = OrderGuard()
            self._prompt = prompt
            self._awaiting_first = (prompt.prompt_id, received_at)
            self.reconnect()
            return
        self._prompt = prompt
        self._awaiting_first = (prompt.prompt_id, received_at)
        if self._client is not None and self.state is LinkState.CONNECTED:
            self._spawn(self._send_prompt(self._client, prompt))

    def reconfigure(self, **settings):
        """Change url, token, reconnect bounds or ping period; reconnects if url/token changed."""
        reconnect = False
        for key, value in settings.items():
            if key == 'url':
                reconnect |= value != self.url
                self.url = value
            elif key == 'token':
                reconnect |= (value or '') != self.token
                self.token = value or ''
            elif key == 'reconnect_min_s':
                self.backoff.min_s = value
            elif key == 'reconnect_max_s':
                self.backoff.max_s = value
            elif key == 'ping_period_s':
                self.ping_period_s = value
            else:
                raise ValueError(f'unknown link setting {key!r}')
        if reconnect:
            self.reconnect()

    def reconnect(self):
        """End the current session (if any) and connect again right away."""
        self.backoff.reset()
        self._wake.set()
        if self._client is not None:
            self._restarting = True
            self._spawn(self._client.close())

    async def close(self):
        self._closing = True
        self._wake.set()
        if self._client is not None:
            await self._client.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine):
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def snapshot(self) -> dict:
        """A consistent-enough view for diagnostics (any thread)."""
        return {
            'state': self.state.value,
            'server_url': self.url,
            'session_id': self.session_id,
            'disconnected_for_s': (0.0 if self.state is LinkState.CONNECTED
                                   else time.monotonic() - self.disconnected_since),
            'rtt_ms_last': self.rtt_s.last * 1e3,
            'rtt_ms_p50': self.rtt_s.percentile(50) * 1e3,
            'first_fragment_ms_p50': self.first_fragment_latency_s.percentile(50) * 1e3,
            'first_fragment_ms_p95': self.first_fragment_latency_s.percentile(95) * 1e3,
            'fragments_per_s': self.fragment_rate.rate(),
            'prompt_id': self._prompt.prompt_id if self._prompt is not None else -1,
            'queue_depth': self._client.queue_depth if self._client is not None else 0,
            **{key: self.counters[key] for key in
               ('fragments', 'connects', 'connect_failures', 'server_errors',
                'dropped_out_of_order', 'bad_frames', 'ping_timeouts')},
            'last_error': self.last_error,
        }

    # ------------------------------------------------------------ the connection loop

    async def run(self):
        """Connect, serve, reconnect, until :meth:`close`."""
        while not self._closing:
            self.state = LinkState.CONNECTING
            client = MusicClient(self.url, token=self.token, client_name=self.client_name,
                                 encoding=self.encoding, open_timeout=self.open_timeout_s)
            try:
                self.welcome = await client.connect()
            except (OSError, TimeoutError, ConnectionLost, ServerError,
                    protocol.ProtocolError) as exc:
                self.counters['connect_failures'] += 1
                self._error(f'cannot connect to {self.url}: {exc}')
            else:
                await self._serve(client)
            if self._closing:
                break
            self.state = LinkState.BACKOFF
            delay = self.backoff.next_delay()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
        self.state = LinkState.CLOSED

    async def _serve(self, client: MusicClient):
        self._client = client
        self.session_id = client.welcome.session_id
        self.state = LinkState.CONNECTED
        self.counters['connects'] += 1
        self.backoff.reset()
        self._log('info', f'connected to {self.url} (session {self.session_id}, backend '
                  f'{client.welcome.backend}, {client.welcome.sample_rate} Hz)')
        pinger = asyncio.create_task(self._ping_loop(client))
        try:
            if self._prompt is not None:
                await self._send_prompt(client, self._prompt)
            while True:
                try:
                    item = await client.receive()
                except protocol.ProtocolError as exc:
                    self.counters['bad_frames'] += 1
                    self._error(f'undecodable frame from the server: {exc}')
                    continue
                if isinstance(item, protocol.AudioFrame):
                    self._deliver(item)
                elif isinstance(item, protocol.Error):
                    self.counters['server_errors'] += 1
                    self._error(f'server error {item.code_name}: {item.message}')
                elif isinstance(item, protocol.Shutdown):
                    self._log('warn', f'server is shutting down (grace {item.grace_s:g} s)')
        except ConnectionLost as exc:
            if not (self._closing or self._restarting):
                self._error(f'lost the server at {self.url}: {exc}')
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
            await client.close()
            self._client = None
            self._restarting = False
            self.session_id = ''
            self.disconnected_since = time.monotonic()

    async def _send_prompt(self, client: MusicClient, prompt: protocol.Prompt):
        resumed = dataclasses.replace(prompt, first_seq=self.guard.next_seq(prompt.prompt_id))
        try:
            await client.send_prompt(resumed)
        except ConnectionLost:
            pass  # the receive loop notices and reconnects; the prompt goes again then

    def _deliver(self, frame: protocol.AudioFrame):
        if not self.guard.admit(frame.prompt_id, frame.seq):
            self.counters['dropped_out_of_order'] += 1
            self._error(f'dropped fragment ({frame.prompt_id}, {frame.seq}) arriving after '
                        f'{self.guard.last}')
            return
        if self._awaiting_first is not None and self._awaiting_first[0] == frame.prompt_id:
            self.first_fragment_latency_s.add(time.monotonic() - self._awaiting_first[1])
            self._awaiting_first = None
        self.counters['fragments'] += 1
        self.fragment_rate.tick()
        self.on_frame(frame)

    async def _ping_loop(self, client: MusicClient):
        misses = 0
        while True:
            try:
                self.rtt_s.add(await client.ping(timeout=max(2.0, 2 * self.ping_period_s)))
                misses = 0
            except (TimeoutError, asyncio.TimeoutError):
                misses += 1
                self.counters['ping_timeouts'] += 1
                if misses >= 2:  # a silent server: drop it and reconnect
                    self._error('server stopped answering pings')
                    await client.close()
                    return
            except ConnectionLost:
                return
            await asyncio.sleep(self.ping_period_s)

    def _error(self, message: str):
        self.last_error = message
        self._log('warn', message)
