"""Helpers shared by the server, client and node tests: running coroutines with a deadline,
an in-process server on a free port, collecting what a client receives, process servers."""

import asyncio
import base64
import contextlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from server_test_backends import SAMPLE_RATE, frequency_of
from muse_protocol import protocol
from muse_protocol.client import ConnectionLost
from muse_server.server import MusicServer, ServerConfig

TEST_DIR = Path(__file__).resolve().parent
TOKEN = 'test-token'
SINE_BACKEND = 'server_test_backends:SineBackend'


def run(coroutine, timeout=90.0):
    """Run a test coroutine; a hang becomes a clear failure instead of a stuck test."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@contextlib.asynccontextmanager
async def serving(backend, **options):
    """An in-process MusicServer on a free loopback port, shut down afterwards."""
    settings = dict(host='127.0.0.1', port=0, token=TOKEN, fragment_s=0.25, max_ahead_s=1.0,
                    hello_timeout_s=3.0, shutdown_grace_s=0.3)
    settings.update(options)
    server = MusicServer(backend, ServerConfig(**settings))
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown('test over')


class Received:
    """Everything one client received, with arrival times (monotonic)."""

    def __init__(self):
        self.frames = []      # (arrival, AudioFrame)
        self.messages = []    # (arrival, control message or ProtocolError)

    def of_prompt(self, prompt_id):
        return [f for _, f in self.frames if f.prompt_id == prompt_id]

    def of_type(self, kind):
        return [m for _, m in self.messages if isinstance(m, kind)]

    @property
    def keys(self):
        return [f.order_key for _, f in self.frames]


async def collect(client, received, until, timeout=20.0):
    """Receive into ``received`` until ``until(received)`` holds; raise on timeout."""
    deadline = time.monotonic() + timeout
    while not until(received):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f'timed out; got {len(received.frames)} frames, messages '
                                 f'{[m for _, m in received.messages]}')
        try:
            item = await client.receive(timeout=left)
        except protocol.ProtocolError as exc:
            item = exc
        now = time.monotonic()
        if isinstance(item, protocol.AudioFrame):
            received.frames.append((now, item))
        else:
            received.messages.append((now, item))
    return received


def frames_of(prompt_id, count):
    return lambda r: len(r.of_prompt(prompt_id)) >= count


def message_of(kind):
    return lambda r: bool(r.of_type(kind))


async def closed(client, timeout=10.0):
    """Drain the client until the connection closes; return the ConnectionLost."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.receive(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionLost as exc:
            return exc
        except protocol.ProtocolError:
            continue


def joined(frames):
    return np.concatenate([f.samples() for f in frames])[:, 0]


def sine(prompt_id, start, count):
    """What the sine backend produces for ``prompt_id`` at sample indices [start, start+count)."""
    t = (start + np.arange(count)) / SAMPLE_RATE
    return 0.5 * np.sin(2 * np.pi * frequency_of(prompt_id) * t)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def http_get(url, timeout=5.0):
    """-> (status, headers, body) without raising on 5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for_health(port, process=None, timeout=60.0):
    """Poll /healthz until the server answers; fail early if its process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.proc.poll() is not None:
            raise AssertionError(f'server exited with {process.proc.returncode}:\n{process.output()}')
        try:
            status, _, body = http_get(f'http://127.0.0.1:{port}/healthz', timeout=1.0)
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f'no health answer on port {port} within {timeout} s')


def server_command(port, backend=SINE_BACKEND, *extra):
    return [sys.executable, '-m', 'muse_server.server', '--host', '127.0.0.1',
            '--port', str(port), '--backend', backend, '--fragment-s', '0.25',
            '--max-ahead-s', '1.0', '--shutdown-grace-s', '0.3', *extra]


def server_env(**extra):
    """Environment for a server process: the test backends importable, and the test token
    where a server reads it (never its command line)."""
    path = os.pathsep.join([str(TEST_DIR), os.environ.get('PYTHONPATH', '')])
    return {'PYTHONPATH': path, 'MUSE_SERVER_TOKEN': TOKEN, **extra}


class RawClient:
    """A bare TCP WebSocket client that sends exactly what it is told and reads only when told
    (websockets' own client always reads). Blocking; for hostile tests. While reading it answers
    the server's keepalive pings unless ``answer_pings`` is False."""

    def __init__(self, port, receive_buffer=None, source='127.0.0.1', handshake=True,
                 answer_pings=True, extra_headers=''):
        self.answer_pings = answer_pings
        self.sock = socket.socket()
        if receive_buffer is not None:  # set before connecting, so the TCP window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.bind((source, 0))
        self.sock.settimeout(10.0)
        self.sock.connect(('127.0.0.1', port))
        self._buffer = b''
        self.status = ''
        if handshake:
            self.status = self.upgrade(port, extra_headers)

    def upgrade(self, port, extra_headers=''):
        """The HTTP upgrade; -> the status line."""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f'GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n'
                           f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n'
                           f'Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n').encode())
        response = b''
        while b'\r\n\r\n' not in response:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            response += chunk
        return response.split(b'\r\n')[0].decode(errors='replace')

    def send(self, payload, opcode=None, rsv1=False):
        """One frame: ``str`` as text, ``bytes`` as binary unless ``opcode`` says otherwise."""
        from websockets.frames import Frame, Opcode
        if opcode is None:
            opcode = Opcode.TEXT if isinstance(payload, str) else Opcode.BINARY
        data = payload.encode('utf-8', 'surrogatepass') if isinstance(payload, str) else payload
        wire = Frame(opcode, data).serialize(mask=True)
        if rsv1:  # a reserved bit no extension was negotiated for (websockets will not set it)
            wire = bytes([wire[0] | 0x40]) + wire[1:]
        self.sock.sendall(wire)

    def ping(self, payload=b'ping'):
        from websockets.frames import Opcode
        self.send(payload, Opcode.PING)

    def next_frame(self, timeout=10.0):
        """-> (opcode, payload) of the next frame; None once closed or after ``timeout``."""
        from websockets.frames import Opcode
        deadline = time.monotonic() + timeout
        while True:
            frame, self._buffer = _parse_frame(self._buffer)
            if frame is not None:
                if frame[0] == Opcode.PING and self.answer_pings:
                    self.send(frame[1], Opcode.PONG)
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                return None
            if not chunk:
                return None
            self._buffer += chunk

    def texts(self, count=1, timeout=10.0):
        """The next ``count`` text messages (audio and pings skipped), fewer if it closed."""
        from websockets.frames import Opcode
        deadline = time.monotonic() + timeout
        texts = []
        while len(texts) < count:
            frame = self.next_frame(max(0.0, deadline - time.monotonic()))
            if frame is None or frame[0] == Opcode.CLOSE:
                break
            if frame[0] == Opcode.TEXT:
                texts.append(frame[1].decode())
        return texts

    def read_until_closed(self, timeout=10.0):
        """Read frames until the server closes; -> (text messages, close code or None)."""
        from websockets.frames import Opcode
        deadline = time.monotonic() + timeout
        texts, code = [], None
        while True:
            frame = self.next_frame(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return texts, code
            opcode, payload = frame
            if opcode == Opcode.TEXT:
                texts.append(payload.decode())
            elif opcode == Opcode.CLOSE:
                code = int.from_bytes(payload[:2], 'big') if len(payload) >= 2 else 1005
                return texts, code

    def close(self):
        self.sock.close()


def _parse_frame(data):
    """-> ((opcode, payload), rest) of one unmasked server frame, or (None, data)."""
    if len(data) < 2:
        return None, data
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None, data
        length, offset = int.from_bytes(data[2:4], 'big'), 4
    elif length == 127:
        if len(data) < 10:
            return None, data
        length, offset = int.from_bytes(data[2:10], 'big'), 10
    if len(data) < offset + length:
        return None, data
    return (data[0] & 0x0F, data[offset:offset + length]), data[offset + length:]
