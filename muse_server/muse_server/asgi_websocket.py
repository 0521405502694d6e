"""A Starlette (ASGI) WebSocket seen as a ``websockets`` connection, so that the server's
:class:`~muse_server.session.Session` runs unchanged behind any ASGI server, Ray Serve's
proxy included.

Session uses ``recv``, ``send``, ``close(code, reason)``, ``async for`` and, when refusing,
``remote_address``; a closed connection shows as ``websockets``' :class:`ConnectionClosed`,
which the session already treats as "the client left".
"""

from __future__ import annotations

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, CloseCode


class AsgiWebSocket:
    """Wraps an accepted Starlette :class:`WebSocket`."""

    def __init__(self, websocket: WebSocket):
        self._ws = websocket
        self._closed: Close | None = None  # the close frame received or sent, once closed
        self._closed_by_peer = False

    @property
    def remote_address(self):
        client = self._ws.client
        return (client.host, client.port) if client is not None else None

    def _connection_closed(self) -> ConnectionClosed:
        close = self._closed or Close(CloseCode.ABNORMAL_CLOSURE, '')
        return (ConnectionClosed(close, None) if self._closed_by_peer
                else ConnectionClosed(None, close))

    async def recv(self) -> str | bytes:
        """The next text (str) or binary (bytes) message; ConnectionClosed once closed."""
        if self._closed is not None:
            raise self._connection_closed()
        message = await self._ws.receive()
        if message['type'] == 'websocket.disconnect':
            self._closed_by_peer = True
            self._closed = Close(message.get('code', CloseCode.NORMAL_CLOSURE),
                                 message.get('reason') or '')
            raise self._connection_closed()
        text = message.get('text')
        return text if text is not None else message.get('bytes', b'')

    async def send(self, data: str | bytes):
        if self._closed is not None or self._ws.application_state != WebSocketState.CONNECTED:
            raise self._connection_closed()
        try:
            if isinstance(data, str):
                await self._ws.send_text(data)
            else:
                await self._ws.send_bytes(bytes(data))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self._closed_by_peer = True
            self._closed = Close(getattr(exc, 'code', CloseCode.ABNORMAL_CLOSURE), '')
            raise self._connection_closed() from None

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = ''):
        if self._closed is not None:
            return
        self._closed = Close(code, reason)
        if self._ws.application_state == WebSocketState.CONNECTED:
            try:
                await self._ws.close(code, reason)
            except (RuntimeError, OSError):  # the peer is already gone
                pass

    def __aiter__(self):
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None
