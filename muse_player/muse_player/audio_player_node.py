"""ROS adapter of the player: AudioFragment in, PlaybackEvent and diagnostics out.

The subscription callback only decodes and hands the fragment to ``player.Player`` (a dict
insert under a lock); the sink's own thread (PortAudio callback, or the paced thread of the
null/file sinks) pulls blocks, and the player's worker thread writes the session WAV and
calls back here to publish events. Nothing in an executor callback waits on audio or disk.

Lifecycle: configure opens the sink and the session recording and subscribes; events are
published only while active (fragments that arrive earlier are buffered and played);
cleanup closes the sink and finishes the recording.
"""

import dataclasses
import math

from rcl_interfaces.msg import SetParametersResult

from muse_common import diagnostics, params, qos, stamps, topics
from muse_common.lifecycle import ManagedNode
from muse_common.node_main import run_node
from muse_msgs.msg import AudioFragment, PlaybackEvent
from muse_player.events import EventKind
from muse_player.jitter_buffer import Fragment, FragmentError
from muse_player.mixer import TUNABLES, check_tuning
from muse_player.pcm import PcmFormatError, check_format, decode
from muse_player.player import Player, PlayerConfig
from muse_player.sinks import DEVICE_LATENCIES, SINK_KINDS, make_sink
from muse_player.wav_recorder import resolve_record_path

DEFAULT_RECORD_PATH = '~/.ros/muse/session_{stamp}.wav'
_LEVELS = {'info': 'info', 'warn': 'warning', 'error': 'error'}
_WORTH_A_WARNING = (EventKind.UNDERRUN, EventKind.FRAGMENT_MISSING, EventKind.FRAGMENT_LATE)


def fragment_from_msg(msg):
    """AudioFragment -> Fragment; raises PcmFormatError / FragmentError on bad fields."""
    check_format(msg.sample_rate, msg.channels, msg.encoding)
    prompt_stamp = stamps.to_sec(msg.prompt_stamp)
    return Fragment(
        prompt_id=msg.prompt_id, seq=msg.seq, audio=decode(msg.data, msg.encoding, msg.channels),
        sample_rate=msg.sample_rate, is_first=msg.is_first, is_last=msg.is_last,
        replaces=msg.replaces, prompt_stamp=prompt_stamp if prompt_stamp > 0 else None)


class AudioPlayerNode(ManagedNode):
    """Plays and records the stitched AudioFragment stream; reports what happened."""

    def __init__(self):
        super().__init__('audio_player')
        declare = params.declare
        self._sink_kind = declare(
            self, 'sink', 'auto', 'Audio output. auto = the sound card if PortAudio finds an '
            'output device, else null; null paces in real time and plays nothing (headless); '
            'file plays into file_path. The session is recorded to record_path in every case.',
            read_only=True, choices=SINK_KINDS)
        self._device = declare(self, 'device', '', 'sounddevice output device (name substring or '
                         'index as text); empty = the system default.', read_only=True)
        self._device_latency = declare(self, 'device_latency', 'high', 'PortAudio latency class of '
                                 'the output stream: high is robust, low is quicker.',
                                 read_only=True, choices=DEVICE_LATENCIES)
        self._file_path = declare(self, 'file_path', 'muse_playback_{stamp}.wav', 'WAV file the '
                            'file sink plays into ({stamp} = start time; never overwritten).',
                            read_only=True)
        self._record_path = declare(self, 'record_path', DEFAULT_RECORD_PATH, 'WAV file the stitched '
                              'session is always recorded to ({stamp} = start time; an existing '
                              'file is never overwritten, a _1, _2 suffix is added).',
                              read_only=True)
        defaults = PlayerConfig()
        self._config = PlayerConfig(
            output_sample_rate=declare(
                self, 'output_sample_rate', defaults.output_sample_rate,
                "Output and recording sample rate [Hz]; 0 = the first fragment's. Fragments at "
                'other rates are resampled (soxr).', read_only=True, min_value=0,
                max_value=384000),
            output_channels=declare(
                self, 'output_channels', defaults.output_channels,
                "Output channels; 0 = the first fragment's. Mono is spread, more is averaged "
                'to mono.', read_only=True, min_value=0, max_value=8),
            block_s=declare(self, 'block_s', defaults.block_s, 'Output block length [s]: the '
                            'sink asks for one block at a time.', read_only=True,
                            min_value=0.001, max_value=1.0),
            declick_s=declare(self, 'declick_s', defaults.declick_s, 'Fade at the edges of '
                              'underrun silence and at stream ends, held back from playback '
                              'so a fade-out is always possible [s].', read_only=True,
                              min_value=0.001, max_value=0.1),
            record_flush_s=declare(self, 'record_flush_s', defaults.record_flush_s, 'The '
                                   'recording is flushed and its header fixed this often; a '
                                   'kill loses at most this much [s].', read_only=True,
                                   min_value=0.05, max_value=10.0),
            prebuffer_s=declare(self, 'prebuffer_s', defaults.prebuffer_s, 'Audio a stream '
                                'must have buffered before it starts or resumes after an '
                                'underrun [s]; more = fewer underruns, later music.',
                                min_value=0.0, max_value=60.0),
            crossfade_s=declare(self, 'crossfade_s', defaults.crossfade_s, 'Equal-power '
                                'crossfade at every prompt boundary and stream restart [s]; '
                                'shorter where the old stream has less audio left.',
                                min_value=0.001, max_value=60.0),
            max_wait_missing_s=declare(self, 'max_wait_missing_s', defaults.max_wait_missing_s,
                                       'A missing fragment is waited for at most this long '
                                       'after the next one arrived, then skipped [s].',
                                       min_value=0.0, max_value=60.0),
            min_playback_rate=declare(self, 'min_playback_rate', defaults.min_playback_rate,
                                      'Slowest playback rate that covers late audio instead '
                                      'of underrun silence (varispeed; 1 = never stretch).',
                                      read_only=True, min_value=0.5, max_value=1.0),
            stretch_below_s=declare(self, 'stretch_below_s', defaults.stretch_below_s,
                                    'Playback slows down while less than this is buffered [s].',
                                    read_only=True, min_value=0.0, max_value=60.0),
        )
        self._diagnostics_period_s = declare(self, 'diagnostics_period_s', 1.0, 'Period of the '
                                       '/diagnostics report [s].', read_only=True,
                                       min_value=0.1, max_value=60.0)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._player = None
        self._diagnostics = None

    # --- lifecycle ---------------------------------------------------------------------------

    def configure(self):
        # Bad settings and a missing device raise ValueError / OSError: one 'cannot configure'
        # line.
        # The tunables as they are now (they may have changed while unconfigured).
        config = dataclasses.replace(
            self._config, **{name: self.get_parameter(name).value for name in TUNABLES})
        config.check()
        sink, note = make_sink(self._sink_kind, self._device, self._file_path,
                               self._device_latency, config.record_flush_s)
        record_path = resolve_record_path(self._record_path)
        log = self.get_logger()
        fell_back = self._sink_kind == 'auto' and sink.kind != 'sounddevice'
        (log.warning if fell_back else log.info)(note)

        self._decode_errors = 0
        self._last_decode_error = ''
        self._events = self.publisher(PlaybackEvent, topics.PLAYBACK, qos.EVENTS)
        self._player = Player(config, sink, record_path, on_event=self._publish_event,
                              on_log=self._log,
                              time_fn=lambda: self.get_clock().now().nanoseconds * 1e-9)
        self._subscription = self.subscription(AudioFragment, topics.AUDIO, self._on_fragment,
                                               qos.AUDIO)
        self._diagnostics = diagnostics.DiagnosticsReporter(self, self._diagnostics_period_s)
        self._stats = None  # this tick's Player.stats(), taken by _check_buffer
        self._diagnostics.add('buffer', self._check_buffer)
        self._diagnostics.add('quality', self._check_quality)
        self._diagnostics.add('latency', self._check_latency)
        self._diagnostics.add('sink', self._check_sink)
        log.info(f'audio player ready: recording to {record_path}')

    def cleanup(self):
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        if getattr(self, '_subscription', None) is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._player is not None:
            self._player.close()
            self._player = None
        if getattr(self, '_events', None) is not None:
            self.destroy_lifecycle_publisher(self._events)
            self._events = None

    def _on_fragment(self, msg):
        try:
            self._player.push(fragment_from_msg(msg))
        except (PcmFormatError, FragmentError, ValueError) as exc:
            self._decode_errors += 1
            self._last_decode_error = f'fragment ({msg.prompt_id}, {msg.seq}): {exc}'
            self.get_logger().warning(f'dropped {self._last_decode_error}',
                                      throttle_duration_sec=5.0)

    def _publish_event(self, event):
        msg = PlaybackEvent(event=int(event.kind), prompt_id=event.prompt_id, seq=event.seq,
                            stream_time_s=float(event.stream_time_s or 0.0),
                            latency_s=float(event.latency_s if event.latency_s is not None
                                            else math.nan),
                            duration_s=float(event.duration_s))
        msg.header.stamp = stamps.from_sec(event.wall_time)
        self._events.publish(msg)
        if event.kind is EventKind.PROMPT_AUDIBLE:
            latency = 'unknown' if event.latency_s is None else f'{event.latency_s * 1e3:.0f} ms'
            self.get_logger().info(f'prompt {event.prompt_id} audible at '
                                   f'{event.stream_time_s:.2f} s, latency {latency}')
        elif event.kind in _WORTH_A_WARNING:
            self.get_logger().warning(
                f'{event.kind.name.lower()} prompt {event.prompt_id} seq {event.seq}'
                + (f' ({event.duration_s:.2f} s)' if event.duration_s else ''),
                throttle_duration_sec=2.0)

    def _log(self, level, text):
        getattr(self.get_logger(), _LEVELS.get(level, 'info'))(text)

    # --- parameters --------------------------------------------------------------------------

    def _validate_parameters(self, parameters):
        # Only the tunables can change (the rest is read-only), and the running configuration
        # was checked whole at start, so the one rule of the changed tunable is all to check.
        declick_s = self._config.declick_s   # read-only
        for parameter in parameters:
            if parameter.name in TUNABLES:
                try:
                    check_tuning(parameter.name, parameter.value, declick_s)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters):
        if self._player is None:
            return      # configure() reads them
        for parameter in parameters:
            if parameter.name in TUNABLES:
                self._player.set_tuning(parameter.name, parameter.value)
                self.get_logger().info(f'{parameter.name} is now {parameter.value}')

    # --- diagnostics -------------------------------------------------------------------------

    # Player.stats() takes the audio callback's lock and computes two percentiles: one snapshot
    # per diagnostics tick. The reporter polls the checks in the order they were added, so the
    # first one (buffer) takes it and the others read it.

    def _check_buffer(self):
        self._stats = None  # if stats() raises, the other checks try it afresh
        self._stats = s = self._player.stats()
        level = diagnostics.WARN if s['state'] == 'rebuffering' else diagnostics.OK
        return level, f"{s['state']}, {s.get('depth_s', 0.0):.2f} s buffered", {
            'state': s['state'], 'prompt_id': s.get('prompt_id'),
            'depth_s': s.get('depth_s', 0.0),
            'pending_fragments': s.get('pending_fragments', 0),
            'sample_rate': s['sample_rate']}

    def _check_quality(self):
        s = self._tick_stats()
        keys = ('underruns', 'underrun_s', 'late', 'duplicates', 'missing', 'overflow',
                'superseded_fragments', 'superseded_prompts', 'received', 'stretched_s',
                'stretch_gained_s', 'lowest_playback_rate')
        values = {key: s.get(key, 0) for key in keys}
        values['decode_errors'] = self._decode_errors
        values['last_decode_error'] = self._last_decode_error
        level = diagnostics.WARN if self._decode_errors or s.get('overflow') else diagnostics.OK
        return level, (f"{values['underruns']} underruns, {values['late']} late, "
                       f"{values['duplicates']} duplicate, {values['missing']} missing"), values

    def _check_latency(self):
        s = self._tick_stats()
        if not s['audible_prompts']:
            return diagnostics.OK, 'no prompt audible yet', {'audible_prompts': 0}
        return diagnostics.OK, (f"prompt to audible p50 {s['latency_p50_s'] * 1e3:.0f} ms, "
                                f"p95 {s['latency_p95_s'] * 1e3:.0f} ms"), {
            key: s[key] for key in ('audible_prompts', 'latency_p50_s', 'latency_p95_s',
                                    'output_latency_s')}

    def _check_sink(self):
        s = self._tick_stats()
        failed = s['sink_state'] == 'failed' or s['recording_error'] or s['sink_note']
        level = diagnostics.ERROR if failed else diagnostics.OK
        message = s['sink_error'] or s['recording_error'] or s['sink_note'] or \
            f"{s['sink']} {s['sink_state']}, {s['recorded_s']:.1f} s recorded"
        keys = ('sink', 'sink_state', 'sink_late_blocks', 'output_latency_s', 'recorded_s',
                'record_path', 'recording_error', 'output_s')
        return level, message, {key: s.get(key, '') for key in keys}

    def _tick_stats(self):
        """The snapshot _check_buffer took this tick (taken afresh should that have failed)."""
        return self._stats if self._stats is not None else self._player.stats()

def main():
    return run_node(AudioPlayerNode)


if __name__ == '__main__':
    raise SystemExit(main())
