"""An asyncio client of the music server: one WebSocket session, hello/welcome, prompts out,
audio frames and server messages in. No rclpy. The reconnecting link the bridge uses is
:mod:`muse_protocol.link`.

    async with MusicClient('ws://127.0.0.1:8765', token='secret') as client:
        await client.send_prompt(protocol.Prompt(prompt_id=1, text='calm piano'))
        event = await client.receive()   # protocol.AudioFrame or a server control message

Liveness and round-trip time come from WebSocket ping/pong control frames (websockets'
keepalive), which websockets answers and reads as they arrive, not behind queued audio.
"""

from __future__ import annotations

import asyncio
import collections

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from muse_protocol import protocol

# What a client buffers for a consumer that falls behind. The server paces itself to real time,
# so a consumer that keeps up never comes near it; one that stalls for minutes does, and then
# reading stops, keepalive pongs go unread and the connection ends (1011) as a dead one.
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024


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


class MusicClient:
    """One session with the server.

    A reader task receives every frame as it arrives (so WebSocket pongs are read on time) into
    a buffer read by :meth:`receive`, in arrival order. Past ``max_buffered_bytes`` the reader
    stops, which lets TCP push back on the server instead of buffering without bound.
    ``keepalive_interval_s``/``keepalive_timeout_s``: websockets pings the server this often and
    closes the connection (1011) when a pong is this late.
    """

    def __init__(self, url: str, token: str = '', client_name: str = 'muse_client',
                 encoding: protocol.Encoding = protocol.Encoding.PCM_S16LE,
                 open_timeout: float = 10.0, keepalive_interval_s: float | None = 20.0,
                 keepalive_timeout_s: float | None = 20.0,
                 max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES, replace: bool = False):
        self.url = url
        self.replace = replace   # we splice REPLACES frames (hello's `replace`)
        self.token = token
        self.client_name = client_name
        self.encoding = protocol.Encoding(encoding)
        self.open_timeout = open_timeout
        self.keepalive_interval_s = keepalive_interval_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.max_buffered_bytes = max_buffered_bytes
        self.welcome: protocol.Welcome | None = None
        self._ws = None
        self._items: collections.deque = collections.deque()  # (item, wire bytes)
        self._buffered_bytes = 0
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._close_info: tuple[int | None, str] | None = None  # set once the reader ended

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    @property
    def queue_depth(self) -> int:
        """Frames and messages received but not yet taken by :meth:`receive`."""
        return len(self._items)

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    @property
    def latency(self) -> float:
        """Round-trip time [s] of the last keepalive ping (0 before the first pong)."""
        return self._ws.latency if self._ws is not None else 0.0

    async def connect(self) -> protocol.Welcome:
        """Open the connection and complete hello/welcome.

        Raises :class:`ServerError` when the server refuses (bad token, busy, ...),
        :class:`ConnectionLost`, ``OSError`` or ``TimeoutError`` when it cannot be reached.
        """
        try:
            self._ws = await connect(self.url, open_timeout=self.open_timeout,
                                     max_size=protocol.MAX_AUDIO_FRAME_BYTES, compression=None,
                                     ping_interval=self.keepalive_interval_s,
                                     ping_timeout=self.keepalive_timeout_s,
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
                    encoding=self.encoding.wire_name, replace=self.replace).to_json())
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
        """Round-trip time [s] of one WebSocket ping/pong on this connection."""
        if self._ws is None:
            raise ConnectionLost(None, 'not connected')
        try:
            pong = await self._ws.ping()
            return await asyncio.wait_for(pong, timeout)
        except ConnectionClosed as exc:
            raise ConnectionLost(*_close_info(exc)) from None
        except asyncio.TimeoutError:
            raise TimeoutError(f'no pong within {timeout:g} s') from None

    async def receive(self, timeout: float | None = None):
        """The next audio frame or server message (Error, Stopped, Shutdown), in arrival order.

        Raises :class:`ConnectionLost` once the connection is closed and everything before the
        close was received; a :class:`protocol.ProtocolError` for a frame that did not decode
        (the session goes on); ``TimeoutError`` if nothing arrives within ``timeout``.
        """
        if self._ws is None:
            raise ConnectionLost(None, 'not connected')
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._items:
            if self._close_info is not None:
                raise ConnectionLost(*self._close_info)
            self._arrived.clear()
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                raise TimeoutError(f'nothing received within {timeout:g} s') from None
        item, size = self._items.popleft()
        self._buffered_bytes -= size
        if self._buffered_bytes <= self.max_buffered_bytes:
            self._drained.set()
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
        close_info = None
        try:
            async for raw in self._ws:
                try:
                    if isinstance(raw, str):
                        item = protocol.decode_control(raw, protocol.SERVER_MESSAGES)
                    else:
                        item = protocol.decode_audio_frame(raw, max_bytes)
                except protocol.ProtocolError as exc:
                    item = exc
                self._items.append((item, len(raw)))
                self._buffered_bytes += len(raw)
                self._arrived.set()
                while self._buffered_bytes > self.max_buffered_bytes:
                    self._drained.clear()
                    await self._drained.wait()
        except ConnectionClosed as exc:  # ended abnormally, e.g. by our keepalive (1011)
            close_info = _close_info(exc)
        finally:
            self._close_info = close_info or (self._ws.close_code, self._ws.close_reason or '')
            self._arrived.set()  # wakes a waiting receive()


def _close_info(exc: ConnectionClosed):
    frame = exc.rcvd or exc.sent
    return (frame.code, frame.reason) if frame is not None else (None, '')
