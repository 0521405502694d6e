"""A recorded session read back: the bag's messages as plain lists, and the session WAV.

Plain reading with `rosbags` (no rclpy), so a copied session folder can be examined offline.
Ground truth and the encoder's estimates share the ActivityEstimate type; they are told apart
by topic (``activity/ground_truth`` vs ``activity``).
"""

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

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
    encoder_timing: dict = field(default_factory=dict)  # the encoder's last inference diagnostics

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


def load_session(bag_path):
    """Read the recorded topics of a session bag into a SessionData."""
    from muse_common import topics
    from muse_common.rosbag_types import muse_typestore
    from rosbags.highlevel import AnyReader

    data = SessionData()
    with AnyReader([Path(bag_path)], default_typestore=muse_typestore()) as reader:
        for connection, _, raw in reader.messages():
            topic = connection.topic
            if _suffix(topic, topics.IMU):
                data.imu_count += 1
                continue
            if _suffix(topic, topics.USER_PROFILE):
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            if _suffix(topic, topics.DIAGNOSTICS):
                # Inference time is a health figure of the encoder, not part of its estimates.
                for status in msg.status:
                    if status.name.endswith('activity_encoder: inference'):
                        data.encoder_timing = {kv.key: kv.value for kv in status.values}
                continue
            if _suffix(topic, topics.GROUND_TRUTH_ACTIVITY):
                data.ground_truth.append((to_sec(msg.header.stamp), int(msg.class_id)))
            elif _suffix(topic, topics.ACTIVITY):
                data.estimates.append((to_sec(msg.header.stamp), int(msg.class_id),
                                       int(msg.raw_class_id), float(msg.confidence)))
            elif _suffix(topic, topics.HEART_RATE):
                data.heart_rate.append((to_sec(msg.header.stamp), float(msg.bpm)))
            elif _suffix(topic, topics.PROMPT):
                data.prompts.append({
                    'prompt_id': int(msg.prompt_id), 'stamp': to_sec(msg.header.stamp),
                    'trigger': to_sec(msg.trigger_stamp), 'reason': int(msg.reason),
                    'activity': msg.activity, 'class_id': int(msg.activity_class_id),
                    'style': msg.style, 'target_bpm': float(msg.target_bpm),
                    'heart_rate_bpm': float(msg.heart_rate_bpm), 'text': msg.text})
            elif _suffix(topic, topics.AUDIO):
                # An unknown encoding is sized as s16, the wire's default.
                dtype = pcm.ENCODINGS.get(int(msg.encoding),
                                          pcm.ENCODINGS[pcm.ENCODING_PCM_S16LE])
                frame_bytes = dtype.itemsize * max(int(msg.channels), 1)
                duration = len(msg.data) / frame_bytes / max(int(msg.sample_rate), 1)
                data.fragments.append((to_sec(msg.header.stamp), int(msg.prompt_id), int(msg.seq),
                                       duration, bool(msg.is_first)))
            elif _suffix(topic, topics.PLAYBACK):
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
