"""The MUSE music server: a WebSocket endpoint streaming generated music to bridge clients.

Runs without ROS (``pip install ./muse_protocol ./muse_server`` then ``muse_music_server``); nothing here
imports rclpy. One session per connection (see :mod:`muse_server.session`), a bounded number of
them, token authentication with limits on unauthenticated connections
(:mod:`muse_server.admission`), ``GET /healthz`` for monitoring, graceful shutdown on
SIGTERM/SIGINT within ``shutdown_grace_s`` + 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from http import HTTPStatus

from websockets.asyncio.server import serve

from muse_protocol import protocol
from muse_protocol.tokens import TOKEN_ENV, resolve_token
from muse_server.admission import AdmissionLimits, ConnectionGate
from muse_server.backends.base import BackendError, MusicBackend, backend_names, create_backend
from muse_server.capacity import Capacity
from muse_server.session import Session, SessionConfig, is_connection_closed, send_fatal
from muse_server.streaming import run_in_daemon_thread

logger = logging.getLogger('muse_music_server')

HEALTH_PATH = '/healthz'
# Incoming frames between MAX_CONTROL_BYTES and this get a coded FRAME_TOO_LARGE reply and the
# session goes on; beyond it websockets closes the connection with 1009 (message too big).
INCOMING_FRAME_LIMIT = 4 * protocol.MAX_CONTROL_BYTES
# After the shutdown grace: how long closing handshakes, then session handlers and the backend,
# may take before the server stops without them (their threads are daemons).
CLOSE_TIMEOUT_S = 0.5
STOP_WAIT_S = 0.5
REFUSALS_LOGGED_PER_S = 1.0  # refusal log lines (connection floods must not flood the log)


@dataclass(frozen=True)
class ServerConfig:
    host: str = '127.0.0.1'
    port: int = 8765
    token: str | None = None
    max_sessions: int = 4
    max_ahead_s: float = 2.0
    fragment_s: float = 0.5
    context_s: float = 4.0
    max_frame_bytes: int = protocol.DEFAULT_MAX_AUDIO_FRAME_BYTES
    hello_timeout_s: float = 2.0
    shutdown_grace_s: float = 1.0
    keepalive_s: float = 10.0        # WebSocket ping period; a pong later than this ends it
    write_timeout_s: float = 10.0    # a client not reading for this long is dropped
    messages_per_s: float = 10.0     # control messages a session may send (bursts of 2x)
    allow_origins: tuple[str, ...] = ()  # browser Origins accepted (none: browsers refused)
    admission: AdmissionLimits = AdmissionLimits()
    server_name: str = 'muse_music_server'  # announced in every welcome (Serve: the replica)
    retarget: bool = False           # steer running streams at prompt changes (SessionConfig)
    fork: bool = True                # fork them just ahead of the listener where possible

    def __post_init__(self):
        checks = [
            ('port', 0 <= self.port <= 65535, 'in [0, 65535]'),
            ('max_sessions', self.max_sessions >= 1, '>= 1'),
            ('fragment_s', 0.0 < self.fragment_s <= 10.0, 'in (0, 10]'),
            ('max_ahead_s', self.max_ahead_s >= self.fragment_s, '>= fragment_s'),
            ('context_s', self.context_s > 0.0, '> 0'),
            ('max_frame_bytes', protocol.AUDIO_HEADER_BYTES + 64 <= self.max_frame_bytes
             <= protocol.MAX_AUDIO_FRAME_BYTES,
             f'in [{protocol.AUDIO_HEADER_BYTES + 64}, {protocol.MAX_AUDIO_FRAME_BYTES}]'),
            ('hello_timeout_s', self.hello_timeout_s > 0.0, '> 0'),
            ('shutdown_grace_s', self.shutdown_grace_s >= 0.0, '>= 0'),
            ('keepalive_s', self.keepalive_s > 0.0, '> 0'),
            ('write_timeout_s', self.write_timeout_s > 0.0, '> 0'),
            ('messages_per_s', self.messages_per_s > 0.0, '> 0'),
            ('token', self.token is None or 0 < len(self.token) <= protocol.MAX_TOKEN_CHARS,
             f'None or 1 to {protocol.MAX_TOKEN_CHARS} characters'),
        ]
        for name, ok, expected in checks:
            if not ok:
                shown = '<hidden>' if name == 'token' else repr(getattr(self, name))
                raise ValueError(f'server option {name} is {shown}; expected {expected}')


class MusicServer:
    """``async with MusicServer(backend, config) as server: await server.wait_stopped()``."""

    def __init__(self, backend: MusicBackend, config: ServerConfig = ServerConfig()):
        self.backend = backend
        self.config = config
        self._session_config = SessionConfig(
            token=config.token, max_ahead_s=config.max_ahead_s, context_s=config.context_s,
            max_frame_bytes=config.max_frame_bytes, fragment_s=config.fragment_s,
            hello_timeout_s=config.hello_timeout_s, write_timeout_s=config.write_timeout_s,
            messages_per_s=config.messages_per_s,
            message_burst=max(1, int(2 * config.messages_per_s)), server_name=config.server_name,
            retarget=config.retarget, fork=config.fork)
        self.sessions: dict[str, Session] = {}  # authenticated sessions (max_sessions)
        self.gate = ConnectionGate(config.admission)
        self.capacity = Capacity(backend)   # real-time streams the backend carries (measured)
        self._connections = set()  # every open WebSocket, authenticated or not
        self.stats = {'prompts': 0, 'fragments': 0, 'errors': 0, 'sessions_total': 0,
                      'rejected_busy': 0, 'rejected_overloaded': 0, 'evicted': 0,
                      'switch_latency_s': collections.deque(maxlen=200)}
        self._server = None
        self._port = config.port
        self._stopping = False
        self._stopped = asyncio.Event()
        self._shutdown_task: asyncio.Task | None = None
        self._started_at = time.monotonic()
        self._refusal_log = _LogThrottle(REFUSALS_LOGGED_PER_S)

    # ------------------------------------------------------------ lifecycle

    async def start(self):
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request, max_size=INCOMING_FRAME_LIMIT,
            # PCM barely deflates; compressing it would only cost CPU and latency
            compression=None, server_header='muse_music_server',
            # clients send no Origin; a browser page does, and may only if allowed
            origins=[None, *self.config.allow_origins],
            open_timeout=self.config.hello_timeout_s, close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=self.config.keepalive_s, ping_timeout=self.config.keepalive_s)
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info('listening on ws://%s:%d (backend %s, %d Hz, %d channel(s), auth %s)',
                    self.config.host, self.port, self.backend.name, self.backend.sample_rate,
                    self.backend.channels, 'on' if self.config.token else 'OFF')
        return self

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the OS when configured as 0)."""
        return self._port

    @property
    def url(self) -> str:
        return f'ws://{self.config.host}:{self.port}'

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc_info):
        await self.shutdown()

    async def wait_stopped(self):
        await self._stopped.wait()

    def request_shutdown(self, reason: str) -> asyncio.Task:
        """Start :meth:`shutdown` from a callback (a signal handler); the task is kept here,
        since the event loop keeps only a weak reference to it."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self.shutdown(reason))
        return self._shutdown_task

    async def shutdown(self, reason: str = 'shutdown requested'):
        """Stop accepting, tell every session, give them ``shutdown_grace_s``, then close.

        Done within grace + CLOSE_TIMEOUT_S + 3 * STOP_WAIT_S (2 s) whatever clients and
        backend calls do: connections still open then are aborted, calls still running are left
        to their daemon threads.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        logger.info('shutting down (%s): %d session(s) open', reason, len(self.sessions))
        loop = asyncio.get_running_loop()
        grace = self.config.shutdown_grace_s
        deadline = loop.time() + grace
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.notify_shutdown(grace) for s in sessions))
        while self.sessions and loop.time() < deadline:  # sessions may end sooner
            await asyncio.sleep(min(0.05, deadline - loop.time()))
        closed_by = loop.time() + CLOSE_TIMEOUT_S + 3 * STOP_WAIT_S
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                await asyncio.wait_for(asyncio.shield(self._server.wait_closed()),
                                       CLOSE_TIMEOUT_S + STOP_WAIT_S)
            except asyncio.TimeoutError:
                for websocket in list(self._connections):  # not reading: no close handshake
                    websocket.transport.abort()
                try:
                    await asyncio.wait_for(asyncio.shield(self._server.wait_closed()),
                                           STOP_WAIT_S)
                except asyncio.TimeoutError:
                    logger.warning('stopping with %d session(s) still releasing their streams',
                                   len(self.sessions))
        backend_wait_s = max(STOP_WAIT_S, closed_by - loop.time())  # what the bound leaves
        try:
            await asyncio.wait_for(run_in_daemon_thread(self.backend.close), backend_wait_s)
        except asyncio.TimeoutError:
            logger.warning('the backend did not close within %.1f s; stopping without it',
                           backend_wait_s)
        except Exception:
            logger.exception('closing the backend failed')
        logger.info('stopped')
        self._stopped.set()

    # ------------------------------------------------------------ HTTP and WebSocket handlers

    def health(self) -> dict:
        latencies = list(self.stats['switch_latency_s'])
        return {
            'status': 'stopping' if self._stopping else 'ok',
            'protocol': protocol.PROTOCOL_VERSION,
            'backend': self.backend.name,
            'sample_rate': self.backend.sample_rate,
            'channels': self.backend.channels,
            'sessions': len(self.sessions),
            'max_sessions': self.config.max_sessions,
            'handshaking': self.gate.pending,
            'auth': self.config.token is not None,
            'uptime_s': round(time.monotonic() - self._started_at, 3),
            'prompts': self.stats['prompts'],
            'fragments': self.stats['fragments'],
            'errors': self.stats['errors'],
            'sessions_total': self.stats['sessions_total'],
            'rejected_busy': self.stats['rejected_busy'],
            'rejected_overloaded': self.stats['rejected_overloaded'],
            'capacity': self.capacity.snapshot(),
            'refused': dict(self.gate.refused),
            'evicted': self.stats['evicted'],
            'prompt_to_first_fragment_ms_p50': (
                round(statistics.median(latencies) * 1e3, 2) if latencies else None),
        }

    def _process_request(self, connection, request):
        if request.path.split('?', 1)[0] != HEALTH_PATH:
            return None  # go on with the WebSocket handshake
        status = HTTPStatus.SERVICE_UNAVAILABLE if self._stopping else HTTPStatus.OK
        response = connection.respond(status, json.dumps(self.health()) + '\n')
        del response.headers['Content-Type']
        response.headers['Content-Type'] = 'application/json'
        return response

    async def handle_connection(self, websocket):
        """Serve one accepted connection (any object with the ``websockets`` connection's
        ``recv``/``send``/``close``/async iteration/``remote_address``) until it ends."""
        await self._handle(websocket)

    async def _handle(self, websocket):
        self._connections.add(websocket)
        try:
            await self._serve_connection(websocket)
        finally:
            self._connections.discard(websocket)

    async def _serve_connection(self, websocket):
        address = _address_of(websocket)
        if self._stopping:
            await self._refuse(websocket, protocol.ErrorCode.SHUTTING_DOWN,
                               'the server is shutting down')
            return
        refusal = self.gate.refusal(address)
        if refusal is not None:
            await self._refuse(websocket, *refusal)
            return
        session = Session(websocket, self.backend, self._session_config, self.stats,
                          lambda: self._stopping)
        try:
            with self.gate.handshaking(address):
                admitted = await session.handshake(lambda: self._admit(session))
            if not admitted:
                if session.failed_hello:
                    self.gate.failed(address)
                return
            self.stats['sessions_total'] += 1
            await session.run()
        except Exception as exc:
            if not is_connection_closed(exc):
                logger.exception('session %s crashed', session.id)
        finally:
            if self.sessions.pop(session.id, None) is not None:
                logger.info('session %s ended (%d open)', session.id, len(self.sessions))

    def _admit(self, session: Session):
        """An authenticated client takes a session slot, or is refused SERVER_BUSY."""
        if self._stopping:
            return protocol.ErrorCode.SHUTTING_DOWN, 'the server is shutting down'
        if len(self.sessions) >= self.config.max_sessions:
            self.stats['rejected_busy'] += 1
            return (protocol.ErrorCode.SERVER_BUSY,
                    f'all {self.config.max_sessions} sessions are in use; retry later')
        overloaded = self.capacity.refusal(len(self.sessions))
        if overloaded is not None:
            self.stats['rejected_overloaded'] += 1
            return protocol.ErrorCode.SERVER_OVERLOADED, overloaded
        self.sessions[session.id] = session
        return None

    async def _refuse(self, websocket, code: protocol.ErrorCode, message: str):
        self._refusal_log.info('refusing %s: %s', _address_of(websocket), message)
        with contextlib.suppress(Exception):  # the client may already be gone
            await send_fatal(websocket, code, message)


def _address_of(websocket) -> str:
    peer = websocket.remote_address
    return str(peer[0]) if peer else 'unknown'


class _LogThrottle:
    """INFO lines at most ``per_s`` a second; the ones left out are counted in the next."""

    def __init__(self, per_s: float):
        self._interval = 1.0 / per_s
        self._next = 0.0
        self._suppressed = 0

    def info(self, message: str, *args):
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f' ({self._suppressed} similar lines left out)'
            self._suppressed = 0
        self._next = now + self._interval
        logger.info(message, *args)


# ---------------------------------------------------------------- command line


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _backend_option(text: str):
    key, sep, value = text.partition('=')
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE with a Python identifier as KEY, got {text!r}')
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


class _RefuseTokenArgument(argparse.Action):
    """A token on the command line is readable by every user of the machine (ps, /proc):
    refuse it with a message that does not repeat it."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f'--token is not accepted (a secret on the command line is visible to every '
                     f'user in ps): export ${TOKEN_ENV} or give --token-file')


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()  # the server's defaults are written once, in ServerConfig
    parser = argparse.ArgumentParser(
        prog='muse_music_server', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False)  # '--token x' must not be taken for '--token-file x'
    parser.add_argument('--host', default=defaults.host, help='address to listen on')
    parser.add_argument('--port', type=int, default=defaults.port,
                        help='TCP port (0 = any free port)')
    parser.add_argument('--backend', default='synth',
                        help=f'generation backend: one of {backend_names()} or module:attribute')
    parser.add_argument('--model', default='facebook/musicgen-small',
                        help='musicgen backend: hub id or local path of the model')
    parser.add_argument('--device', default='auto',
                        help='musicgen backend: torch device (auto = cuda if available)')
    parser.add_argument('--soundfont', default='/usr/share/sounds/sf2/FluidR3_GM.sf2',
                        help='synth backend: General MIDI SoundFont its instruments are played '
                             'from (the server refuses to start without it)')
    parser.add_argument('--backend-option', type=_backend_option, action='append', default=[],
                        metavar='KEY=VALUE',
                        help='extra keyword option for the backend (VALUE parsed as JSON if it can be)')
    parser.add_argument('--token', nargs='?', action=_RefuseTokenArgument, help=argparse.SUPPRESS)
    parser.add_argument('--token-file', default=None,
                        help=f'file holding the shared secret clients must present, on one line '
                             f'(else ${TOKEN_ENV}; never on the command line, where ps shows it)')
    parser.add_argument('--no-auth', action='store_true',
                        help='allow running without a token on a non-loopback address')
    parser.add_argument('--max-sessions', type=int, default=defaults.max_sessions,
                        help='concurrent sessions')
    parser.add_argument('--retarget', action='store_true',
                        help='at a prompt change, steer the running stream when the backend can '
                             '(synth: a transition on the next bar line; musicgen: a morph), '
                             'heard after the audio already sent (~1-2.5 s), instead of a new '
                             'stream the player crossfades in at once (~50 ms); without it a '
                             'backend that forks (synth) still forks for clients that splice '
                             'it (see --no-fork)')
    parser.add_argument('--no-fork', action='store_true',
                        help='never fork a running stream at a prompt change (by default a '
                             'backend that can, synth, re-renders from just ahead of the '
                             'listener for clients whose hello says replace: the change is '
                             'heard within a beat, ~0.1-0.4 s)')
    parser.add_argument('--max-ahead-s', type=float, default=defaults.max_ahead_s,
                        help='seconds of audio sent ahead of real-time playback')
    parser.add_argument('--fragment-s', type=float, default=defaults.fragment_s,
                        help='seconds of audio per generated fragment')
    parser.add_argument('--context-s', type=float, default=defaults.context_s,
                        help='seconds of sent audio that condition the next prompt\'s stream')
    parser.add_argument('--max-frame-bytes', type=int, default=defaults.max_frame_bytes,
                        help='largest audio frame sent (fragments are split to fit)')
    parser.add_argument('--hello-timeout-s', type=float, default=defaults.hello_timeout_s,
                        help='close connections that send no hello within this time')
    parser.add_argument('--shutdown-grace-s', type=float, default=defaults.shutdown_grace_s,
                        help='time sessions get between the shutdown notice and the close')
    parser.add_argument('--keepalive-s', type=float, default=defaults.keepalive_s,
                        help='WebSocket ping period; a client whose pong is later is dropped')
    parser.add_argument('--write-timeout-s', type=float, default=defaults.write_timeout_s,
                        help='drop a client that reads nothing sent to it for this long')
    parser.add_argument('--messages-per-s', type=float, default=defaults.messages_per_s,
                        help='control messages a session may send per second (bursts of twice '
                        'that); beyond, RATE_LIMITED and reading pauses')
    parser.add_argument('--allow-origin', action='append', default=[], metavar='ORIGIN',
                        help='browser Origin (e.g. https://example.org) allowed to connect; '
                        'connections with any other Origin header are refused (403)')
    parser.add_argument('--log-level', default='INFO',
                        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'], help='logging level')
    return parser


def backend_options(args) -> dict:
    options = {'fragment_s': args.fragment_s}
    if args.backend == 'musicgen':
        options.update(model=args.model, device=args.device)
    elif args.backend == 'synth':
        options.update(soundfont=args.soundfont)
    options.update(dict(args.backend_option))
    return options


async def serve_until_signalled(backend: MusicBackend, config: ServerConfig):
    loop = asyncio.get_running_loop()
    async with MusicServer(backend, config) as server:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(
                signum, lambda s=signum: server.request_shutdown(signal.Signals(s).name))
        await server.wait_stopped()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if args.log_level != 'DEBUG':  # one line per connection from websockets is noise here
        logging.getLogger('websockets').setLevel(logging.WARNING)
    try:
        token = resolve_token(None, args.token_file)
        if token is None and not _is_loopback(args.host) and not args.no_auth:
            raise ValueError(f'refusing to listen on {args.host} without a token: export '
                             f'${TOKEN_ENV} or give --token-file (or --no-auth to accept anyone)')
        if token is None:
            logger.warning('no token configured: any client that reaches %s:%d is accepted',
                           args.host, args.port)
        config = ServerConfig(
            host=args.host, port=args.port, token=token, max_sessions=args.max_sessions,
            max_ahead_s=args.max_ahead_s, fragment_s=args.fragment_s, context_s=args.context_s,
            max_frame_bytes=args.max_frame_bytes, hello_timeout_s=args.hello_timeout_s,
            shutdown_grace_s=args.shutdown_grace_s, keepalive_s=args.keepalive_s,
            write_timeout_s=args.write_timeout_s, messages_per_s=args.messages_per_s,
            allow_origins=tuple(args.allow_origin), retarget=args.retarget,
            fork=not args.no_fork)
        backend = create_backend(args.backend, **backend_options(args))
    except (ValueError, BackendError) as exc:
        logger.error('%s', exc)
        return 2
    try:
        asyncio.run(serve_until_signalled(backend, config))
    except OSError as exc:
        logger.error('cannot listen on %s:%d: %s', args.host, args.port, exc.strerror or exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
