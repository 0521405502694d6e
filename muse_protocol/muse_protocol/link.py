"""The bridge's resilient link to the music server: one :class:`MusicClient` session at a time,
reconnected whenever it ends, with the current prompt re-sent so the listener hears one ordered
stream across server restarts. No rclpy.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import random
import time

from muse_protocol import protocol
from muse_protocol.client import ConnectionLost, MusicClient, ServerError
from muse_protocol.stats import RateMeter, RollingStats

# While the listener's music depends on the link (a prompt is current), a lost server is retried
# at least this often, so an outage costs about its own length plus the player's prebuffer
# instead of a grown exponential backoff. Refused connections to a server that is down are cheap.
PLAYING_RECONNECT_MAX_S = 1.0
KEEPALIVE_TIMEOUT_MIN_S = 2.0  # a loaded host can take a while to answer one ping


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

    def next_delay(self, cap_s: float | None = None) -> float:
        """The next delay; ``cap_s`` lowers the ceiling for this one (never below ``min_s``)."""
        ceiling = min(self.max_s, self.min_s * 2.0 ** min(self.attempt, 62))
        if cap_s is not None:
            ceiling = max(self.min_s, min(ceiling, cap_s))
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


class LinkState(enum.Enum):
    CONNECTING = 'connecting'
    CONNECTED = 'connected'
    BACKOFF = 'waiting to reconnect'
    CLOSED = 'closed'


class ReconnectingLink:
    """Keeps one session with the server alive for the bridge node, on an asyncio loop.

    * reconnects with :class:`ExponentialBackoff` (jittered) whenever the session ends, at
      most :data:`PLAYING_RECONNECT_MAX_S` apart while a prompt is current;
    * re-sends the current prompt after a reconnect, with ``first_seq`` continuing the seq
      numbering of what was already delivered (the server marks that fragment FIRST, since the
      restarted stream is not sample-continuous with the last one);
    * delivers frames to ``on_frame(frame)`` only in strictly increasing (prompt_id, seq) order;
    * detects a silent server by WebSocket keepalive pings every ``ping_period_s`` (their
      round-trip time is reported), and measures prompt-to-first-fragment latency and
      fragment rate.

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
        self.ping_period_s = ping_period_s  # takes effect at the next connection
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
        self.last_retry_delay_s = 0.0
        self.disconnected_since = time.monotonic()
        self._prompt: protocol.Prompt | None = None
        self._awaiting_first: tuple[int, float] | None = None  # (prompt_id, monotonic received)
        # Set and cleared on the loop; snapshot() reads it from another thread, once.
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
        client = self._client
        if client is not None and self.state is LinkState.CONNECTED:
            self._spawn(self._send_prompt(client, prompt))

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
        client = self._client
        if client is not None:
            self._restarting = True
            self._spawn(client.close())

    async def close(self):
        self._closing = True
        self._wake.set()
        client = self._client
        if client is not None:
            await client.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine):
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def snapshot(self) -> dict:
        """A consistent-enough view for diagnostics (any thread)."""
        client = self._client  # read once: the loop thread may set it to None meanwhile
        prompt = self._prompt
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
            'prompt_id': prompt.prompt_id if prompt is not None else -1,
            'queue_depth': client.queue_depth if client is not None else 0,
            **{key: self.counters[key] for key in
               ('fragments', 'connects', 'connect_failures', 'server_errors',
                'dropped_out_of_order', 'bad_frames', 'ping_timeouts')},
            'last_error': self.last_error,
        }

    # ------------------------------------------------------------ the connection loop

    def next_retry_delay(self) -> float:
        """How long to wait before the next connection attempt."""
        cap = PLAYING_RECONNECT_MAX_S if self._prompt is not None else None
        return self.backoff.next_delay(cap)

    async def run(self):
        """Connect, serve, reconnect, until :meth:`close`."""
        while not self._closing:
            self.state = LinkState.CONNECTING
            client = MusicClient(
                self.url, token=self.token, client_name=self.client_name, encoding=self.encoding,
                replace=True,   # the bridge forwards `replaces` to the player, which splices it
                open_timeout=self.open_timeout_s, keepalive_interval_s=self.ping_period_s,
                keepalive_timeout_s=max(KEEPALIVE_TIMEOUT_MIN_S, 2 * self.ping_period_s))
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
            self.last_retry_delay_s = self.next_retry_delay()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.last_retry_delay_s)
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
                self._note_latency(client)
                if isinstance(item, protocol.AudioFrame):
                    self._deliver(item)
                elif isinstance(item, protocol.Error):
                    self.counters['server_errors'] += 1
                    self._error(f'server error {item.code_name}: {item.message}')
                elif isinstance(item, protocol.Shutdown):
                    self._log('warn', f'server is shutting down (grace {item.grace_s:g} s)')
        except ConnectionLost as exc:
            if exc.code == 1011 and 'keepalive' in exc.reason:
                self.counters['ping_timeouts'] += 1
                self._error(f'server stopped answering pings at {self.url}')
            elif not (self._closing or self._restarting):
                self._error(f'lost the server at {self.url}: {exc}')
        finally:
            await client.close()
            self._client = None
            self._restarting = False
            self.session_id = ''
            self.disconnected_since = time.monotonic()

    def _note_latency(self, client: MusicClient):
        latency = client.latency
        if latency > 0.0 and latency != self.rtt_s.last:
            self.rtt_s.add(latency)

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

    def _error(self, message: str):
        self.last_error = message
        self._log('warn', message)
