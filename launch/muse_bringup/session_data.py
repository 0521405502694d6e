"""A recorded session read back: the bag's messages as plain lists, and the session WAV.

Plain reading with `rosbags` (no rclpy), so a copied session folder can be examined offline.
Ground truth and the encoder's estimates share the ActivityEstimate type; they are told apart
by topic (``activity/ground_truth`` vs ``activity``).
"""

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from muse_common.stamps import to_sec
from muse_player import pcm


@dataclass
class SessionData:
    """What the report needs from the bag, as plain arrays and lists."""

    imu_count: int = 0
    ground_truth: list = field(default_factory=list)   # (t, class_id)
    estimates: list = field(default_factory=list)      # (t, class_id, raw_class_id, confidence)
    heart_rate: list = field(default_factory=list)     # (t, bpm)
    prompts: list = field(default_factory=list)        # dicts
    fragments: list = field(default_factory=list)      # (t_received, prompt_id, seq, duration_s, is_first)
    playback: list = field(default_factory=list)       # (t, event, prompt_id, seq, stream_time_s, latency_s, duration_s)
    class_names: tuple = ()
    # Recorder receive times [s, wall clock] for the latencies (stamps are data time with
    # use_sim_time): estimate stamp [ns] -> received; prompt_id -> PROMPT_AUDIBLE received.
    window_ready_at: dict = field(default_factory=dict)
    # (stamp, received) of the stamped sensor-side messages: maps data time onto the wall
    # clock the session's audio plays in (they differ with use_sim_time at rate != 1).
    clock_pairs: list = field(default_factory=list)
    audible_at: dict = field(default_factory=dict)
    crosstalk: 'CrossTalkTally' = field(default_factory=lambda: CrossTalkTally())
    encoder_timing: dict = field(default_factory=dict)  # the encoder's last inference diagnostics

    def to_wall(self, stamps):
        """Data-time stamps [s] -> recorder wall-clock times [s] (identity without pairs)."""
        stamps = np.asarray(stamps, dtype=float)
        if len(self.clock_pairs) < 2:
            return stamps
        data_t, wall_t = np.array(sorted(self.clock_pairs)).T
        slope = (wall_t[-1] - wall_t[0]) / max(data_t[-1] - data_t[0], 1e-9)
        inside = np.interp(stamps, data_t, wall_t)
        # Beyond the pairs (audio after the data ended): extend at the session's mean rate.
        return np.where(stamps > data_t[-1], wall_t[-1] + (stamps - data_t[-1]) * slope,
                        np.where(stamps < data_t[0], wall_t[0] + (stamps - data_t[0]) * slope,
                                 inside))

    @property
    def start(self):
        times = [t for series in (self.ground_truth, self.estimates, self.heart_rate,
                                  self.fragments, self.playback) for t, *_ in series]
        times += [p['stamp'] for p in self.prompts]
        return min(times) if times else 0.0

    # Derived from `playback` for both the metrics and the timeline; cached on first use, so
    # read them only once load_session has filled it.
    @cached_property
    def audible(self):
        """{prompt_id: stamp of its PROMPT_AUDIBLE event} (the last one, should it repeat)."""
        from muse_msgs.msg import PlaybackEvent
        return {pid: t for t, event, pid, *_ in self.playback
                if event == PlaybackEvent.PROMPT_AUDIBLE}

    @cached_property
    def first_audible(self):
        """(stamp, stream_time_s) of the session's first PROMPT_AUDIBLE event, or None."""
        from muse_msgs.msg import PlaybackEvent
        return next(((t, stream_t) for t, event, _, _, stream_t, *_ in self.playback
                     if event == PlaybackEvent.PROMPT_AUDIBLE), None)


def _suffix(topic, relative):
    return topic == relative or topic.endswith('/' + relative)


def _ns(stamp):
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def wall_latencies(data):
    """{prompt_id: (prompt -> audible, activity change -> audible or None)} in wall seconds,
    for the prompts whose music became audible (see the module doc)."""
    from muse_msgs.msg import MusicPrompt
    latencies = {}
    for p in data.prompts:
        audible = data.audible_at.get(p['prompt_id'])
        if audible is None:
            continue
        ready = data.window_ready_at.get(p['trigger_ns'])
        change = (audible - ready if p['reason'] == MusicPrompt.REASON_ACTIVITY_CHANGE
                  and ready is not None else None)
        latencies[p['prompt_id']] = (audible - p['received'], change)
    return latencies


class CrossTalkTally:
    """What the bag shows of another graph on the same domain (``muse_common.crosstalk``):
    replay-announced counts, listeners, prompt-id order, repeated fragments, and what the
    recorder and the bridge reported in their diagnostics."""

    def __init__(self):
        from muse_common.crosstalk import OrderWatch
        self.prompt_ids = OrderWatch('prompt id')
        self.replay_published = OrderWatch('replay published_total')
        self.announced = {}
        self.user_ids = set()
        self.profiles = 0
        self.fragments_seen = set()
        self.fragment_repeats = 0
        self.max_publishers = {}
        self.bridge_prompt_regressions = 0
        self.imu_stamp_regressions = 0
        self.recorder_dropped = 0   # not cross-talk: messages the bag writer had to drop

    def fragment(self, prompt_id, seq):
        key = (prompt_id, seq)
        self.fragment_repeats += key in self.fragments_seen
        self.fragments_seen.add(key)

    def observe(self, topic, msg):
        from muse_common import topics
        if _suffix(topic, topics.USER_PROFILE):
            self.profiles += 1
            self.user_ids.add(msg.user_id)
            return
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith('sensor_replay: replay') and 'published_total' in values:
                self.replay_published.observe(int(values['published_total']))
                for key in ('published_imu', 'published_user_profile'):
                    if key in values:
                        self.announced[key] = max(self.announced.get(key, 0), int(values[key]))
            elif status.name.endswith('activity_encoder: inputs'):
                self.imu_stamp_regressions = max(self.imu_stamp_regressions,
                                                 int(values.get('stamp_regressions', 0))
                                                 + int(values.get('buffer_resets', 0)))
            elif status.name.endswith('session_recorder: recording'):
                self.recorder_dropped = max(self.recorder_dropped,
                                            int(values.get('dropped_writer_behind', 0)))
            elif status.name.endswith('session_recorder: foreign publishers'):
                for key, value in values.items():
                    if key.startswith('publishers_max '):
                        topic_name = key[len('publishers_max '):]
                        self.max_publishers[topic_name] = max(
                            self.max_publishers.get(topic_name, 0), int(value))
            elif status.name.endswith('cloud_bridge: stream') and \
                    'prompt_id_regressions' in values:
                self.bridge_prompt_regressions = max(self.bridge_prompt_regressions,
                                                     int(values['prompt_id_regressions']))

    def metrics(self, imu_recorded):
        from muse_common.crosstalk import evidence
        found = evidence(
            imu_recorded=imu_recorded, imu_announced=self.announced.get('published_imu'),
            profiles_recorded=self.profiles,
            profiles_announced=self.announced.get('published_user_profile'),
            user_ids=self.user_ids, prompt_id_regressions=self.prompt_ids.regressions,
            fragment_repeats=self.fragment_repeats,
            counter_regressions=self.replay_published.regressions,
            max_publishers=self.max_publishers,
            bridge_prompt_regressions=self.bridge_prompt_regressions,
            imu_stamp_regressions=self.imu_stamp_regressions)
        return {'foreign_traffic': bool(found), 'evidence': found,
                'imu_recorded': imu_recorded,
                'imu_published_by_replay': self.announced.get('published_imu'),
                'user_profiles': self.profiles, 'listeners': sorted(self.user_ids),
                'prompt_id_regressions': self.prompt_ids.regressions,
                'bridge_prompt_id_regressions': self.bridge_prompt_regressions,
                'imu_stamp_regressions': self.imu_stamp_regressions,
                'fragment_repeats': self.fragment_repeats,
                'max_publishers': self.max_publishers}


def load_session(bag_path):
    """Read the recorded topics of a session bag into a SessionData."""
    from muse_common import topics
    from muse_common.rosbag_types import muse_typestore
    from rosbags.highlevel import AnyReader

    data = SessionData()
    with AnyReader([Path(bag_path)], default_typestore=muse_typestore()) as reader:
        from muse_msgs.msg import PlaybackEvent
        for connection, log_time_ns, raw in reader.messages():
            received = log_time_ns * 1e-9
            topic = connection.topic
            if _suffix(topic, topics.IMU):
                data.imu_count += 1
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            if _suffix(topic, topics.USER_PROFILE):
                data.crosstalk.observe(topic, msg)
                continue
            if _suffix(topic, topics.DIAGNOSTICS):
                data.crosstalk.observe(topic, msg)
                # Inference time is a health figure of the encoder, not part of its estimates.
                for status in msg.status:
                    if status.name.endswith('activity_encoder: inference'):
                        data.encoder_timing = {kv.key: kv.value for kv in status.values}
                continue
            if _suffix(topic, topics.GROUND_TRUTH_ACTIVITY):
                data.ground_truth.append((to_sec(msg.header.stamp), int(msg.class_id)))
                data.clock_pairs.append((to_sec(msg.header.stamp), received))
            elif _suffix(topic, topics.ACTIVITY):
                data.window_ready_at[_ns(msg.header.stamp)] = received
                data.estimates.append((to_sec(msg.header.stamp), int(msg.class_id),
                                       int(msg.raw_class_id), float(msg.confidence)))
            elif _suffix(topic, topics.HEART_RATE):
                data.heart_rate.append((to_sec(msg.header.stamp), float(msg.bpm)))
                data.clock_pairs.append((to_sec(msg.header.stamp), received))
            elif _suffix(topic, topics.PROMPT):
                data.crosstalk.prompt_ids.observe(int(msg.prompt_id))
                data.prompts.append({
                    'prompt_id': int(msg.prompt_id), 'stamp': to_sec(msg.header.stamp),
                    'trigger': to_sec(msg.trigger_stamp), 'trigger_ns': _ns(msg.trigger_stamp),
                    'received': received, 'reason': int(msg.reason),
                    'activity': msg.activity, 'class_id': int(msg.activity_class_id),
                    'style': msg.style, 'target_bpm': float(msg.target_bpm),
                    'heart_rate_bpm': float(msg.heart_rate_bpm), 'text': msg.text})
            elif _suffix(topic, topics.AUDIO):
                data.crosstalk.fragment(int(msg.prompt_id), int(msg.seq))
                # An unknown encoding is sized as s16, the wire's default.
                dtype = pcm.ENCODINGS.get(int(msg.encoding),
                                          pcm.ENCODINGS[pcm.ENCODING_PCM_S16LE])
                frame_bytes = dtype.itemsize * max(int(msg.channels), 1)
                duration = len(msg.data) / frame_bytes / max(int(msg.sample_rate), 1)
                data.fragments.append((to_sec(msg.header.stamp), int(msg.prompt_id), int(msg.seq),
                                       duration, bool(msg.is_first)))
            elif _suffix(topic, topics.PLAYBACK):
                if msg.event == PlaybackEvent.PROMPT_AUDIBLE:
                    data.audible_at[int(msg.prompt_id)] = received
                data.playback.append((to_sec(msg.header.stamp), int(msg.event), int(msg.prompt_id),
                                      int(msg.seq), float(msg.stream_time_s),
                                      float(msg.latency_s), float(msg.duration_s)))
    data.prompts.sort(key=lambda p: p['prompt_id'])
    return data


def label_at(series, t):
    """The value of a step series [(t, value)] at time t (None before its first point)."""
    value = None
    for ts, v in series:
        if ts > t:
            break
        value = v
    return value


def read_wav(wav_path):
    """The session WAV as (float32 samples shaped (frames, channels), rate), None if absent;
    read once for both the metrics and the timeline."""
    if not Path(wav_path).exists():
        return None
    return pcm.read_wav(wav_path)
