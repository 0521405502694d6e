"""ROS 2 node ``cloud_bridge``: MusicPrompt in, AudioFragment out, through the music server.

Subscribes ``prompt`` (muse_msgs/MusicPrompt, latched) and holds one WebSocket session with the
music server (:class:`muse_protocol.link.ReconnectingLink` on an asyncio loop in its own
thread); every audio frame the server streams is published as muse_msgs/AudioFragment on
``audio``, in strictly increasing (prompt_id, seq) order. Prompts cross from the executor to the
loop with ``loop.call_soon_threadsafe``; nothing blocks a callback.

The connection survives the server: it reconnects with jittered exponential backoff and
re-sends the current prompt with ``first_seq`` continuing the numbering, so the player sees one
ordered stream (the first fragment after a restart has ``is_first`` set: it is not continuous).

Lifecycle: configure resolves the token and makes the publisher and subscription; activate
opens the server session (the asyncio thread); deactivate closes it; cleanup drops the rest.
Fragments are published only while active.
"""

from __future__ import annotations

import array
import asyncio
import threading
import time

from builtin_interfaces.msg import Time
from muse_msgs.msg import AudioFragment, MusicPrompt
from rcl_interfaces.msg import SetParametersResult

from muse_protocol import protocol
from muse_protocol.link import LinkState, ReconnectingLink
from muse_protocol.tokens import resolve_token
from muse_common import diagnostics, qos, stamps, topics
from muse_common.crosstalk import OrderWatch
from muse_common.lifecycle import ManagedNode
from muse_common.token_file import check_private
from muse_common.node_main import run_node
from muse_common.params import declare

ENCODINGS = [e.wire_name for e in protocol.Encoding]
PROMPT_STAMPS_KEPT = 32           # prompt_id -> MusicPrompt stamp, for AudioFragment.prompt_stamp
DISCONNECTED_ERROR_AFTER_S = 10.0  # diagnostics turn from WARN to ERROR after this long offline
RUNTIME_PARAMETERS = ('server_url', 'reconnect_min_s', 'reconnect_max_s', 'ping_period_s')


class CloudBridgeNode(ManagedNode):

    def __init__(self):
        super().__init__('cloud_bridge')
        declare(self, 'server_url', 'ws://127.0.0.1:8765',
                'WebSocket URL of the music server (muse_music_server).')
        # The token itself is never a parameter (anyone on the domain can read parameters):
        # it comes from a file only the user can read, or from the environment.
        self._token_file = declare(self, 'token_file', '', 'File holding the server token on '
                                   'one line, readable only by its owner; empty = '
                                   '$MUSE_SERVER_TOKEN, else none.', read_only=True)
        self._encoding = declare(self, 'encoding', protocol.Encoding.PCM_S16LE.wire_name,
                                 'Sample encoding asked of the server.', choices=ENCODINGS,
                                 read_only=True)
        declare(self, 'reconnect_min_s', 0.5, 'First reconnect delay [s]; doubles per failed '
                'attempt (with jitter).', min_value=0.01, max_value=60.0)
        declare(self, 'reconnect_max_s', 10.0, 'Longest reconnect delay [s].',
                min_value=0.01, max_value=600.0)
        self._connect_timeout_s = declare(self, 'connect_timeout_s', 5.0, 'Time allowed for the '
                                          'WebSocket and hello/welcome handshake [s].',
                                          min_value=0.1, max_value=120.0, read_only=True)
        declare(self, 'ping_period_s', 2.0, 'Round-trip measurement period [s]; two unanswered '
                'pings end the session.', min_value=0.1, max_value=60.0)
        self._client_name = declare(self, 'client_name', 'muse_cloud_bridge',
                                    'Name announced to the server (its logs).', read_only=True)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._link = None
        self._thread = None
        self._diagnostics = None

    # ------------------------------------------------------------ lifecycle

    def configure(self):
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        problem = _check_reconnect(get('reconnect_min_s'), get('reconnect_max_s'))
        if problem:
            raise ValueError(problem)
        # A bad token file raises ValueError: one 'cannot configure' line.
        check_private(self._token_file)
        self._token = resolve_token(None, self._token_file)
        self._publisher = self.publisher(AudioFragment, topics.AUDIO, qos.AUDIO)
        self._prompt_stamps: dict[int, Time] = {}
        self._prompt_order = OrderWatch('prompt_id')   # going back: another prompt builder
        self._stamps_lock = threading.Lock()
        self._pending_prompt = None
        self._subscription = self.subscription(MusicPrompt, topics.PROMPT, self._on_prompt,
                                               qos.LATCHED)
        self._diagnostics = diagnostics.DiagnosticsReporter(self)
        self._diagnostics.add('server connection', self._connection_status)
        self._diagnostics.add('stream', self._stream_status)
        self.get_logger().info(f'bridging {self.resolve_topic_name(topics.PROMPT)} -> '
                               f'{get("server_url")} -> {self.resolve_topic_name(topics.AUDIO)}')

    def activate(self):
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        self._link = ReconnectingLink(
            get('server_url'), self._token, self._publish_frame, client_name=self._client_name,
            encoding=protocol.Encoding.from_wire_name(self._encoding),
            reconnect_min_s=get('reconnect_min_s'), reconnect_max_s=get('reconnect_max_s'),
            open_timeout_s=self._connect_timeout_s, ping_period_s=get('ping_period_s'),
            log=self._log_from_link)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name='cloud_bridge-asyncio',
                                        daemon=True)
        self._thread.start()
        if self._pending_prompt is not None:   # a prompt that arrived before activation
            self._loop.call_soon_threadsafe(self._link.set_prompt, *self._pending_prompt)
            self._pending_prompt = None

    def deactivate(self):
        if self._thread is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._link.close(), self._loop)
            try:
                future.result(timeout=5.0)
            except Exception as exc:  # the loop may be stuck; the thread is a daemon
                self.get_logger().warning(f'closing the server session failed: {exc!r}')
            self._thread.join(timeout=5.0)
        self._thread = None
        self._link = None

    def cleanup(self):
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        if getattr(self, '_subscription', None) is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if getattr(self, '_publisher', None) is not None:
            self.destroy_lifecycle_publisher(self._publisher)
            self._publisher = None

    # ------------------------------------------------------------ ROS side

    def _on_prompt(self, msg: MusicPrompt):
        try:  # validated as the server would, so a bad prompt is reported here, by field
            prompt = protocol.Prompt(
                prompt_id=msg.prompt_id, text=msg.text, style=msg.style, activity=msg.activity,
                energy=float(msg.energy), target_bpm=float(msg.target_bpm),
                heart_rate_bpm=float(msg.heart_rate_bpm), stamp=stamps.to_sec(msg.header.stamp))
        except protocol.ProtocolError as exc:
            self.get_logger().error(f'prompt {msg.prompt_id} not forwarded: {exc}')
            return
        if self._prompt_order.observe(msg.prompt_id) == 'regression':
            self.get_logger().warning(f'{self._prompt_order.last_regression}: another graph on '
                                      'this ROS domain, or the prompt builder restarted')
        with self._stamps_lock:
            self._prompt_stamps[msg.prompt_id] = msg.header.stamp
            while len(self._prompt_stamps) > PROMPT_STAMPS_KEPT:
                self._prompt_stamps.pop(next(iter(self._prompt_stamps)))
        self.get_logger().info(f'prompt {msg.prompt_id}: "{msg.text[:80]}"')
        if self._thread is None:    # not active yet: sent on activation
            self._pending_prompt = (prompt, time.monotonic())
            return
        self._loop.call_soon_threadsafe(self._link.set_prompt, prompt, time.monotonic())

    def _publish_frame(self, frame: protocol.AudioFrame):
        """Called on the asyncio thread for every admitted frame (rclpy publish is thread-safe)."""
        if not self.context.ok():  # shutting down: the publisher may already be gone
            return
        msg = AudioFragment()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.prompt_id = frame.prompt_id
        msg.seq = frame.seq
        msg.sample_rate = frame.sample_rate
        msg.channels = frame.channels
        msg.encoding = int(frame.encoding)
        msg.data = array.array('B', frame.payload)
        msg.is_first = frame.is_first
        msg.is_last = frame.is_last
        msg.replaces = frame.replaces
        with self._stamps_lock:
            stamp = self._prompt_stamps.get(frame.prompt_id)
        if stamp is not None:
            msg.prompt_stamp = stamp
        msg.generation_started = _time_from_ns(frame.generation_started_ns)
        msg.generation_finished = _time_from_ns(frame.generation_finished_ns)
        self._publisher.publish(msg)

    def _log_from_link(self, level, message):
        if not self.context.ok():  # shutting down: rosout is gone
            return
        logger = self.get_logger()
        if level == 'info':
            logger.info(message)
        else:  # repeated while the server is away: one line per few seconds is plenty
            logger.warning(message, throttle_duration_sec=2.0)

    # ------------------------------------------------------------ parameters

    def _validate_parameters(self, parameters):
        values = {p.name: p.value for p in parameters}
        low = values.get('reconnect_min_s', self.get_parameter('reconnect_min_s').value)
        high = values.get('reconnect_max_s', self.get_parameter('reconnect_max_s').value)
        problem = _check_reconnect(low, high)
        url = values.get('server_url')
        if url is not None and not url.startswith(('ws://', 'wss://')):
            problem = f"server_url must start with ws:// or wss://, got {url!r}"
        return SetParametersResult(successful=problem is None, reason=problem or '')

    def _apply_parameters(self, parameters):
        names = {p.name for p in parameters}
        if not names & set(RUNTIME_PARAMETERS) or self._link is None:
            return
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        settings = dict(url=get('server_url'), reconnect_min_s=get('reconnect_min_s'),
                        reconnect_max_s=get('reconnect_max_s'), ping_period_s=get('ping_period_s'))
        self._loop.call_soon_threadsafe(lambda: self._link.reconfigure(**settings))

    # ------------------------------------------------------------ diagnostics

    def _connection_status(self):
        if self._link is None:
            return diagnostics.OK, 'inactive: no server session', {'state': 'inactive'}
        snap = self._link.snapshot()
        if snap['state'] == LinkState.CONNECTED.value:
            level, message = diagnostics.OK, f'connected to {snap["server_url"]}'
        elif snap['disconnected_for_s'] > DISCONNECTED_ERROR_AFTER_S:
            level = diagnostics.ERROR
            message = f'no server for {snap["disconnected_for_s"]:.0f} s: {snap["last_error"]}'
        else:
            level, message = diagnostics.WARN, f'{snap["state"]} ({snap["last_error"]})'
        keys = ('state', 'server_url', 'session_id', 'disconnected_for_s', 'rtt_ms_last',
                'rtt_ms_p50', 'connects', 'connect_failures', 'ping_timeouts', 'last_error')
        return level, message, {k: snap[k] for k in keys}

    def _stream_status(self):
        if self._link is None:
            return diagnostics.OK, 'inactive', {}
        snap = self._link.snapshot()
        problems = snap['server_errors'] + snap['dropped_out_of_order'] + snap['bad_frames']
        level = diagnostics.WARN if problems else diagnostics.OK
        message = (f'{snap["fragments_per_s"]:.1f} fragments/s, first fragment p95 '
                   f'{snap["first_fragment_ms_p95"]:.0f} ms')
        if self._prompt_order.suspicious:
            level = diagnostics.WARN
            message = f'{self._prompt_order.last_regression} (foreign traffic?); {message}'
        keys = ('prompt_id', 'queue_depth', 'fragments', 'fragments_per_s', 'first_fragment_ms_p50',
                'first_fragment_ms_p95', 'server_errors', 'dropped_out_of_order', 'bad_frames')
        return level, message, {**{k: snap[k] for k in keys},
                                'prompt_id_regressions': self._prompt_order.regressions}

    def _run_loop(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._link.run())
        finally:
            self._loop.close()


def _check_reconnect(low, high):
    if low > high:
        return f'reconnect_min_s ({low}) must not exceed reconnect_max_s ({high})'
    return None


def _time_from_ns(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def main(args=None):
    return run_node(CloudBridgeNode, args=args)


if __name__ == '__main__':
    raise SystemExit(main())
