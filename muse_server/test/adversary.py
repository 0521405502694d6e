"""Attacks on a music server process over loopback, each returning what it saw, plus an honest
listener streaming alongside. Shared by test_adversarial.py (asserts) and
bench/bench_adversarial.py (prints the table). Only 127.0.0.x; every attack is bounded in
connections and time. Attackers bind their own loopback source address, so per-address limits
they trip do not fall on the honest listener (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from websockets.frames import Opcode

from server_test_support import (SINE_BACKEND, TOKEN, RawClient, http_get, server_command,
                                 server_env)
from muse_protocol import protocol
from muse_protocol.client import ConnectionLost, MusicClient, ServerError

E = protocol.ErrorCode
# The server the attacks expect (adversarial_server_args): short timeouts keep them quick.
HELLO_TIMEOUT_S = 1.0
KEEPALIVE_S = 2.0  # the honest listener must answer within it on a loaded host
WRITE_TIMEOUT_S = 1.0
MAX_SESSIONS = 8
PER_ADDRESS_PENDING = 4     # AdmissionLimits defaults
MAX_FAILED_HELLOS = 10


def adversarial_server_args():
    return ['--hello-timeout-s', str(HELLO_TIMEOUT_S), '--keepalive-s', str(KEEPALIVE_S),
            '--write-timeout-s', str(WRITE_TIMEOUT_S), '--max-sessions', str(MAX_SESSIONS)]


@dataclass
class Outcome:
    attack: str
    expected: str
    observed: str
    ok: bool


def _hello(token=TOKEN, **fields):
    return json.dumps({'type': 'hello', 'protocol': 1, 'token': token, **fields})


def _prompt(prompt_id, **fields):
    return protocol.Prompt(prompt_id=prompt_id, text=f'attack {prompt_id}', **fields).to_json()


def _errors(texts):
    """(code, fatal) of the error messages among ``texts``."""
    found = []
    for text in texts:
        body = json.loads(text)
        if body.get('type') == 'error':
            found.append((body['code'], body['fatal']))
    return found


def _describe(errors, close):
    shown = ', '.join(f'{E(c).name if c in E._value2member_map_ else c}'
                      f'{"(fatal)" if f else ""}' for c, f in errors) or 'no error'
    return f'{shown}; close {close}' if close is not None else shown


def _fatal_reply(name, port, source, frames, code, expected=None):
    """Send ``frames`` on a fresh connection; expect a fatal ``code`` error and close."""
    client = RawClient(port, source=source)
    try:
        for frame in frames:
            client.send(frame)
        texts, close = client.read_until_closed()
    finally:
        client.close()
    errors = _errors(texts)
    ok = errors == [(code, True)] and close == code
    return Outcome(name, expected or f'{E(code).name}(fatal); close {int(code)}',
                   _describe(errors, close), ok)


def _session(port, source):
    client = RawClient(port, source=source)
    client.send(_hello())
    welcome = client.texts(1)
    assert welcome and json.loads(welcome[0])['type'] == 'welcome', welcome
    return client


def _in_session(name, port, source, frame, code):
    """In an authenticated session send ``frame``: expect a non-fatal ``code``, then the
    session still answering (a stale prompt gets STALE_PROMPT)."""
    client = _session(port, source)
    try:
        client.send(frame)
        errors = _errors(client.texts(1))
        client.send(_prompt(0))  # alive? a first prompt 0 is fine, a second one is stale
        client.send(_prompt(0))
        alive = (E.STALE_PROMPT, False) in _errors(client.texts(1))
    finally:
        client.close()
    ok = errors == [(code, False)] and alive
    return Outcome(name, f'{E(code).name}; session goes on',
                   _describe(errors, None) + ('; session goes on' if alive else '; session lost'),
                   ok)


def _closed_with(name, port, source, send, code):
    """In a session, ``send(client)`` breaks the WebSocket itself: expect close ``code``."""
    client = _session(port, source)
    try:
        try:
            send(client)
        except OSError:  # closed while still sending: the close frame is waiting
            pass
        texts, close = client.read_until_closed()
    finally:
        client.close()
    return Outcome(name, f'close {code}', _describe(_errors(texts), close), close == code)


# ---------------------------------------------------------------- the attacks


def auth_attacks(port, source):
    big = 'x' * (protocol.MAX_TOKEN_CHARS + 88)
    surrogate = '{"type": "hello", "protocol": 1, "token": "\\ud800"}'
    return [
        _fatal_reply('hello without token', port, source, [_hello(token='')], E.UNAUTHORIZED),
        _fatal_reply('wrong token', port, source, [_hello(token=TOKEN + 'x')], E.UNAUTHORIZED),
        _fatal_reply('oversized token (600 chars)', port, source, [_hello(token=big)],
                     E.INVALID_FIELD),
        _fatal_reply('lone surrogate token "\\ud800"', port, source, [surrogate],
                     E.INVALID_FIELD),
    ]


def handshake_frame_attacks(port, source):
    deep = '{"type": "hello", "protocol": 1, "x": ' + '[' * 5000 + ']' * 5000 + '}'
    return [
        _fatal_reply('JSON 5000 deep as hello', port, source, [deep], E.MALFORMED),
        _fatal_reply('prompt before hello', port, source, [_prompt(1)], E.HELLO_REQUIRED),
        _fatal_reply('binary hello', port, source, [b'\x00\x01'], E.HELLO_REQUIRED),
        _fatal_reply('hello of protocol 2', port, source, [_hello(protocol=2)],
                     E.UNSUPPORTED_VERSION),
    ]


def session_frame_attacks(port, source):
    deep = '{"type": "prompt", "x": ' + '{"a": ' * 3000 + '1' + '}' * 3000 + '}'
    outcomes = [
        _in_session('JSON 3000 deep in session', port, source, deep, E.MALFORMED),
        _in_session('binary frame in session', port, source, b'\x01' * 64, E.UNEXPECTED_BINARY),
        _in_session('40 KB control frame', port, source, 'x' * 40_000, E.FRAME_TOO_LARGE),
        _in_session('second hello', port, source, _hello(), E.UNKNOWN_TYPE),
        _in_session('NaN in a prompt', port, source,
                    '{"type": "prompt", "prompt_id": 5, "text": "a", "energy": NaN}', E.MALFORMED),
        _in_session('first_seq 2**32-1', port, source, _prompt(7).replace(
            '"first_seq":0', f'"first_seq":{protocol.UINT32_MAX}'), E.INVALID_FIELD),
        _in_session('a JSON array', port, source, '[]', E.MALFORMED),
        _closed_with('invalid UTF-8 text frame', port, source,
                     lambda c: c.send(b'\xff\xfe', opcode=Opcode.TEXT), 1007),
        _closed_with('frame over 128 KiB', port, source, lambda c: c.send('x' * 200_000), 1009),
        _closed_with('reserved bit set', port, source, lambda c: c.send('{}', rsv1=True), 1002),
    ]
    return outcomes


def max_first_seq_works(port, source):
    client = _session(port, source)
    try:
        client.send(_prompt(1, first_seq=protocol.MAX_FIRST_SEQ))
        frame = None
        for _ in range(50):
            frame = client.next_frame(5.0)
            if frame is None or frame[0] == 2:
                break
        seq = protocol.decode_audio_frame(frame[1]).seq if frame and frame[0] == 2 else None
    finally:
        client.close()
    return Outcome('first_seq 2**31-1 (the largest)', f'audio from seq {protocol.MAX_FIRST_SEQ}',
                   f'audio from seq {seq}', seq == protocol.MAX_FIRST_SEQ)


def prompt_flood(port, source, count=2000):
    """``count`` prompts written back to back (the server reads them as fast as it allows)."""
    client = _session(port, source)
    try:
        payload = b''.join(_frame_bytes(_prompt(i)) for i in range(1, count + 1))
        client.sock.settimeout(10.0)
        try:
            client.sock.sendall(payload)
            sent = True
        except socket.timeout:
            sent = False
        errors = _errors(client.texts(1, timeout=5.0))
    finally:
        client.close()
    ok = (E.RATE_LIMITED, False) in errors and sent
    return Outcome(f'prompt flood ({count} back to back)', 'RATE_LIMITED; reading paused',
                   _describe(sorted(set(errors)), None), ok)


def _frame_bytes(text):
    from websockets.frames import Frame, Opcode
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True)


def non_reader(server, source, pinging=False):
    """Authenticate, ask for audio, never read (optionally sending pings all along); the
    server's log says when its session ended."""
    name = 'non-reader that keeps pinging' if pinging else 'non-reader'
    client_name = f'{name.replace(" ", "-")}-{source}'
    client = RawClient(server.port, source=source, receive_buffer=4096, answer_pings=False)
    held_s = None
    try:
        client.send(_hello(client=client_name))
        client.send(_prompt(1))
        deadline = time.monotonic() + 10 * KEEPALIVE_S + 5
        session = started = None
        while time.monotonic() < deadline:
            if pinging:
                with contextlib.suppress(OSError):  # once dropped, pings fail
                    client.ping()
            log = server.output()
            if session is None:
                found = re.search(rf"session (\w+): client '{client_name}' authenticated", log)
                if found:
                    session, started = found.group(1), time.monotonic()
            elif f'session {session} ended' in log:
                held_s = time.monotonic() - started
                break
            time.sleep(0.1)
    finally:
        client.close()
    return Outcome(name, f'dropped within ~{2 * KEEPALIVE_S:g} s',
                   'still holding its slot' if held_s is None else f'dropped after {held_s:.1f} s',
                   held_s is not None)


def idle_sockets_vs_valid_clients(port, source, valid=5):
    """The attack that locked everyone out: idle unauthenticated sockets, as many as the
    server has sessions (less the honest listener's), from two addresses."""
    count = MAX_SESSIONS - 1
    other = source.replace('127.0.0.', '127.0.1.')
    idle = [RawClient(port, source=source if n < PER_ADDRESS_PENDING else other)
            for n in range(count)]
    try:
        welcomed = asyncio.run(_valid_clients(port, valid))
    finally:
        for client in idle:
            client.close()
    return Outcome(f'{count} idle sockets, then valid clients', f'{valid}/{valid} welcomed',
                   f'{welcomed}/{valid} welcomed', welcomed == valid)


async def _valid_clients(port, count):
    welcomed = 0
    for _ in range(count):
        try:
            async with MusicClient(f'ws://127.0.0.1:{port}', token=TOKEN, open_timeout=5):
                welcomed += 1
        except (ServerError, ConnectionLost, OSError, TimeoutError):
            pass
    return welcomed


def pending_per_address(port, source):
    held = [RawClient(port, source=source) for _ in range(PER_ADDRESS_PENDING)]
    try:
        extra = RawClient(port, source=source)
        texts, close = extra.read_until_closed(timeout=5.0)
        extra.close()
    finally:
        for client in held:
            client.close()
    errors = _errors(texts)
    return Outcome(f'{PER_ADDRESS_PENDING + 1} unauthenticated from one address',
                   'the extra one SERVER_BUSY(fatal); close 4020', _describe(errors, close),
                   errors == [(E.SERVER_BUSY, True)] and close == E.SERVER_BUSY)


def slow_handshakes(port, source):
    outcomes = []
    sock = socket.create_connection(('127.0.0.1', port), source_address=(source, 0))
    sock.settimeout(HELLO_TIMEOUT_S + 5)
    try:
        sock.sendall(b'GET / HTTP/1.1\r\n')  # and never the rest
        try:
            closed = sock.recv(4096) is not None
        except (socket.timeout, ConnectionResetError):
            closed = False
    finally:
        sock.close()
    outcomes.append(Outcome('half an HTTP request (slowloris)', 'closed by the server',
                            'closed' if closed else 'held open', closed))
    silent = RawClient(port, source=source)
    try:
        texts, close = silent.read_until_closed(timeout=HELLO_TIMEOUT_S + 5)
    finally:
        silent.close()
    errors = _errors(texts)
    outcomes.append(Outcome('upgrade, then silence', 'HELLO_TIMEOUT(fatal); close 4013',
                            _describe(errors, close),
                            errors == [(E.HELLO_TIMEOUT, True)] and close == E.HELLO_TIMEOUT))
    return outcomes


def failed_hello_throttle(port, source):
    codes = []
    for _ in range(MAX_FAILED_HELLOS + 2):
        client = RawClient(port, source=source)
        try:
            with contextlib.suppress(OSError):  # refused before the hello: it may not go out
                client.send(_hello(token='guess'))
            texts, close = client.read_until_closed(timeout=5.0)
        finally:
            client.close()
        codes.append(close)
    right = RawClient(port, source=source)  # even the right token, from that address
    try:
        with contextlib.suppress(OSError):
            right.send(_hello())
        _, locked = right.read_until_closed(timeout=5.0)
    finally:
        right.close()
    ok = codes[:MAX_FAILED_HELLOS] == [E.UNAUTHORIZED] * MAX_FAILED_HELLOS and \
        codes[MAX_FAILED_HELLOS:] == [E.RATE_LIMITED] * 2 and locked == E.RATE_LIMITED
    return Outcome(f'{MAX_FAILED_HELLOS + 2} wrong tokens from one address',
                   f'{MAX_FAILED_HELLOS} x 4010, then 4022 (locked out)',
                   f'{codes.count(E.UNAUTHORIZED)} x 4010, then '
                   f'{[c for c in codes[MAX_FAILED_HELLOS:]] + [locked]}', ok)


def browser_origin(port, source):
    client = RawClient(port, source=source, extra_headers='Origin: https://evil.example\r\n')
    client.close()
    return Outcome('a web page (Origin: https://evil.example)', 'HTTP 403', client.status,
                   ' 403 ' in client.status + ' ')


# (ServerProcess, source address) -> [Outcome]; each runs from its own source address
ATTACKS = [
    lambda server, source: auth_attacks(server.port, source),
    lambda server, source: handshake_frame_attacks(server.port, source),
    lambda server, source: session_frame_attacks(server.port, source),
    lambda server, source: [max_first_seq_works(server.port, source)],
    lambda server, source: [prompt_flood(server.port, source)],
    lambda server, source: [non_reader(server, source)],
    lambda server, source: [non_reader(server, source, pinging=True)],
    lambda server, source: [idle_sockets_vs_valid_clients(server.port, source)],
    lambda server, source: [pending_per_address(server.port, source)],
    lambda server, source: slow_handshakes(server.port, source),
    lambda server, source: [failed_hello_throttle(server.port, source)],
    lambda server, source: [browser_origin(server.port, source)],
]


def run_attacks(server, each=None):
    """Every attack once on ``server`` (a ServerProcess); ``each(outcomes, started,
    finished)`` after each group (monotonic times); -> [Outcome]."""
    outcomes = []
    for index, attack in enumerate(ATTACKS):
        started = time.monotonic()
        found = attack(server, f'127.0.0.{10 + index}')
        if each is not None:
            each(found, started, time.monotonic())
        outcomes += found
    return outcomes


# ---------------------------------------------------------------- the honest listener


@dataclass
class HonestListener:
    """Streams one prompt on its own thread and loop, from 127.0.0.1, for as long as the
    attacks last; records what arrived and when."""

    port: int
    arrivals: list = field(default_factory=list)   # (monotonic, AudioFrame)
    problems: list = field(default_factory=list)   # errors, disconnects
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    async def _listen(self):
        try:
            async with MusicClient(f'ws://127.0.0.1:{self.port}', token=TOKEN,
                                   client_name='honest') as client:
                await client.send_prompt(protocol.Prompt(prompt_id=1, text='honest'))
                while not self._stop.is_set():
                    try:
                        item = await client.receive(timeout=0.2)
                    except TimeoutError:
                        continue
                    if isinstance(item, protocol.AudioFrame):
                        self.arrivals.append((time.monotonic(), item))
                    else:
                        self.problems.append(repr(item))
        except Exception as exc:  # reported, asserted on by the caller
            self.problems.append(repr(exc))

    @property
    def seqs_contiguous(self) -> bool:
        seqs = [f.seq for _, f in self.arrivals]
        return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    def buffered_s(self, since=0.0, until=float('inf')):
        """For a listener that starts playing at the first arrival: the audio it still had
        buffered when each frame arriving in [since, until] came (negative: it had run dry
        that long). -> the smallest, or None if no frame arrived then."""
        if not self.arrivals:
            return None
        start, played, least = self.arrivals[0][0], 0.0, None
        for arrival, frame in self.arrivals:
            if since <= arrival <= until:
                left = start + played - arrival
                least = left if least is None else min(least, left)
            played += frame.duration_s
        return least


class ServerProcess:
    """The sine-backend server as its own process, configured for the attacks, logging to
    ``log_path`` (what a real deployment would show)."""

    def __init__(self, port, log_path):
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        self.proc = subprocess.Popen(
            server_command(port, SINE_BACKEND, *adversarial_server_args()), stdout=self._log,
            stderr=subprocess.STDOUT, env={**os.environ, **server_env()})

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, errors='replace') as log:
            return log.read()

    def health(self) -> dict:
        status, _, body = http_get(f'http://127.0.0.1:{self.port}/healthz', timeout=5.0)
        return json.loads(body)

    def terminate(self, timeout=10.0) -> int:
        """SIGTERM; -> the exit code (SIGKILL and -9 if it does not stop in ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def rss_kb(pid) -> int:
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError(f'no VmRSS for pid {pid}')
