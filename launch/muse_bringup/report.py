"""The session report: metrics.json and a timeline PNG computed from a recorded session.

Plain module (no rclpy): it reads the session bag with `rosbags` and the stitched WAV with
`soundfile`, so it also runs offline on a copied session folder (``muse_report FOLDER``).

Latencies are wall-clock durations measured on the recorder's receive times (the bag's log
times), because header stamps are data time when the graph runs on the replay's /clock
(use_sim_time, the default): at rate 4 a second of stamps is a quarter second of waiting.
- ``activity_change_to_audible_s``: for each prompt made because the activity changed, from
  the activity estimate that triggered it (``MusicPrompt.trigger_stamp`` names it; its receive
  time less its inference time, i.e. when its window's last sample had arrived) to the
  player's ``PlaybackEvent.PROMPT_AUDIBLE`` for the prompt's music.
- ``prompt_to_audible_s``: from the prompt's receive time to that PROMPT_AUDIBLE event's.
Both leave out the sink's own output latency (the player reports it in its diagnostics).
- ``ground_truth_change_to_prompt_s``: from a ground-truth activity change to the first
  prompt for that activity; dominated by the encoder's 8 s window and the prompt dwell time.
"""

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from muse_common.activities import ACTIVITY_NAMES, TRANSIENT
from muse_common.stamps import to_sec
from muse_common.stats import summarize
from muse_player import pcm

from muse_bringup.session import SessionPaths

SILENCE_DBFS = -60.0
MIN_SILENCE_S = 0.25


@dataclass
class SessionData:
    """What the report needs from the bag, as plain arrays and lists."""

    imu_count: int = 0
    ground_truth: list = field(default_factory=list)   # (t, class_id)
    estimates: list = field(default_factory=list)      # (t, class_id, raw_class_id, confidence, inference_ms)
    heart_rate: list = field(default_factory=list)     # (t, bpm)
    prompts: list = field(default_factory=list)        # dicts
    fragments: list = field(default_factory=list)      # (t_received, prompt_id, seq, duration_s, is_first)
    playback: list = field(default_factory=list)       # (t, event, prompt_id, seq, stream_time_s, latency_s, duration_s)
    class_names: tuple = ()
    # Recorder receive times [s, wall clock] for the latencies (see the module doc).
    window_ready_at: dict = field(default_factory=dict)   # estimate stamp [ns] -> its window's end
    audible_at: dict = field(default_factory=dict)        # prompt_id -> PROMPT_AUDIBLE received
    crosstalk: 'CrossTalkTally' = field(default_factory=lambda: CrossTalkTally())

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


def _suffix(topic, relative):
    return topic == relative or topic.endswith('/' + relative)


def load_session(bag_path):
    """Read the recorded topics of a session bag into a SessionData."""
    from muse_common import topics
    from muse_common.rosbag_types import muse_typestore
    from rosbags.highlevel import AnyReader

    from muse_msgs.msg import PlaybackEvent

    data = SessionData()
    with AnyReader([Path(bag_path)], default_typestore=muse_typestore()) as reader:
        for connection, log_time_ns, raw in reader.messages():
            received = log_time_ns * 1e-9
            topic = connection.topic
            if _suffix(topic, topics.IMU):
                data.imu_count += 1
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            if _suffix(topic, topics.DIAGNOSTICS) or _suffix(topic, topics.USER_PROFILE):
                data.crosstalk.observe(topic, msg)
                continue
            if _suffix(topic, topics.GROUND_TRUTH_ACTIVITY):
                data.ground_truth.append((to_sec(msg.header.stamp), int(msg.class_id)))
            elif _suffix(topic, topics.ACTIVITY):
                data.window_ready_at[_ns(msg.header.stamp)] = received - msg.inference_ms * 1e-3
                data.estimates.append((to_sec(msg.header.stamp), int(msg.class_id),
                                       int(msg.raw_class_id), float(msg.confidence),
                                       float(msg.inference_ms)))
            elif _suffix(topic, topics.HEART_RATE):
                data.heart_rate.append((to_sec(msg.header.stamp), float(msg.bpm)))
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


def label_at(series, t):
    """The value of a step series [(t, value)] at time t (None before its first point)."""
    value = None
    for ts, v in series:
        if ts > t:
            break
        value = v
    return value


def encoder_accuracy(data, num_classes=9):
    """Accuracy and macro-F1 of the published (smoothed) estimates against ground truth,
    transient windows excluded (as in PPG-DaLiA practice)."""
    pairs = []
    for t, class_id, *_ in data.estimates:
        truth = label_at(data.ground_truth, t)
        if truth is not None and truth != TRANSIENT:
            pairs.append((truth, class_id))
    if not pairs:
        return {'n': 0, 'accuracy': None, 'macro_f1': None}
    truth, pred = np.array(pairs).T
    f1s = []
    for c in range(num_classes):
        if c == TRANSIENT or not (truth == c).any():
            continue
        tp = np.sum((truth == c) & (pred == c))
        precision = tp / max(np.sum(pred == c), 1)
        recall = tp / max(np.sum(truth == c), 1)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return {'n': len(pairs), 'accuracy': round(float(np.mean(truth == pred)), 4),
            'macro_f1': round(float(np.mean(f1s)), 4)}


def read_wav(wav_path):
    """The session WAV as (float32 samples shaped (frames, channels), rate), None if absent;
    read once for both the metrics and the timeline."""
    if not Path(wav_path).exists():
        return None
    return pcm.read_wav(wav_path)


def audio_metrics(wav, music_start_s=0.0):
    """Level, silences and steps of the session audio (``read_wav``) from ``music_start_s``
    (the first audible sample; the recording starts with the sink, possibly while the first
    stream prebuffers)."""
    if wav is None:
        return {'present': False}
    audio, rate = wav
    result = {'present': True, 'sample_rate': int(rate), 'duration_s': round(len(audio) / rate, 3),
              'music_start_s': round(music_start_s, 3)}
    mono = audio[int(round(music_start_s * rate)):].mean(axis=1)
    if len(mono) == 0:
        return result
    hop = max(int(rate * 0.01), 1)
    frames = len(mono) // hop
    rms = np.sqrt(np.mean(mono[:frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-20)
    runs = _run_lengths(20 * np.log10(rms) < SILENCE_DBFS) * hop / rate
    result.update({
        'rms_dbfs': round(float(20 * np.log10(np.sqrt(np.mean(mono ** 2)) + 1e-12)), 2),
        'peak': round(float(np.max(np.abs(mono))), 4),
        'longest_silence_s': round(float(runs.max(initial=0.0)), 3),
        'silent_stretches': int(np.sum(runs >= MIN_SILENCE_S)),
        'max_sample_step': round(float(np.max(np.abs(np.diff(mono)))) if len(mono) > 1 else 0.0, 4),
    })
    return result


def _run_lengths(mask):
    """Lengths of the runs of True in a boolean array."""
    padded = np.r_[False, mask, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[0::2]


def compute_metrics(data, wav):
    """Metrics of a loaded session; ``wav`` as returned by ``read_wav``."""
    from muse_msgs.msg import PlaybackEvent

    latencies = wall_latencies(data)
    change_latency = [change for _, change in latencies.values() if change is not None]
    prompt_latency = [to_audible for to_audible, _ in latencies.values()]
    underruns = [dur for _, event, *_, dur in data.playback if event == PlaybackEvent.UNDERRUN]
    counts = defaultdict(int)
    for _, event, *_ in data.playback:
        counts[event] += 1

    decision = []
    changes = [(t, c) for i, (t, c) in enumerate(data.ground_truth)
               if (i == 0 or c != data.ground_truth[i - 1][1]) and c != TRANSIENT]
    missed = 0
    for i, (t, c) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else float('inf')
        hits = [p['stamp'] for p in data.prompts if p['class_id'] == c and t <= p['stamp'] < until]
        if hits:
            decision.append(hits[0] - t)
        else:
            missed += 1

    per_prompt = defaultdict(list)
    for _, pid, seq, *_ in data.fragments:
        per_prompt[pid].append(seq)
    reordered = sum(1 for seqs in per_prompt.values()
                    for a, b in zip(seqs, seqs[1:]) if b <= a)
    start = data.start
    end = max([t for t, *_ in data.fragments + data.playback + data.estimates] + [start])
    metrics = {
        'session_s': round(end - start, 3),
        'activity_change_to_audible_s': summarize(change_latency),
        'prompt_to_audible_s': summarize(prompt_latency),
        'ground_truth_change_to_prompt_s': {**summarize(decision), 'missed_changes': missed},
        'underruns': {'count': len(underruns), 'total_s': round(float(sum(underruns)), 4)},
        'fragments': {
            'count': len(data.fragments), 'prompts': len(per_prompt),
            'audio_s': round(sum(f[3] for f in data.fragments), 3),
            'arrived_out_of_order': reordered,
            'late': counts[PlaybackEvent.FRAGMENT_LATE],
            'duplicate': counts[PlaybackEvent.FRAGMENT_DUPLICATE],
            'missing': counts[PlaybackEvent.FRAGMENT_MISSING]},
        'prompts': [{k: p[k] for k in ('prompt_id', 'reason', 'activity', 'style', 'target_bpm',
                                       'heart_rate_bpm', 'text')} for p in data.prompts],
        'encoder': {**encoder_accuracy(data),
                    'inference_ms': summarize([e[4] for e in data.estimates])},
        'imu_messages': data.imu_count,
        'cross_talk': data.crosstalk.metrics(data.imu_count),
        'recorder_dropped_messages': data.crosstalk.recorder_dropped,
        'audio': audio_metrics(wav, data.first_audible[1] if data.first_audible else 0.0),
    }
    metrics['summary'] = summary_lines(metrics)
    return metrics


def _fmt(stats, unit='s'):
    if not stats['n']:
        return 'n/a'
    return f"p50 {stats['p50'] * 1000:.0f} ms, p95 {stats['p95'] * 1000:.0f} ms (n={stats['n']})" \
        if unit == 's' else f"p50 {stats['p50']:.2f}, p95 {stats['p95']:.2f} (n={stats['n']})"


def summary_lines(m):
    enc = m['encoder']
    acc = 'n/a' if enc['accuracy'] is None else \
        f"accuracy {enc['accuracy']:.3f}, macro-F1 {enc['macro_f1']:.3f} over {enc['n']} windows"
    audio = m['audio']
    audio_line = 'no session WAV' if not audio.get('present') else \
        (f"session audio {audio['duration_s']:.1f} s, longest silence "
         f"{audio.get('longest_silence_s', 0):.2f} s")
    foreign = [f'FOREIGN TRAFFIC (another graph on this ROS domain?): {line}'
               for line in m.get('cross_talk', {}).get('evidence', [])]
    return foreign + [
        f"activity change -> audible music: {_fmt(m['activity_change_to_audible_s'])}",
        f"prompt -> audible: {_fmt(m['prompt_to_audible_s'])}",
        f"prompts: {len(m['prompts'])}, fragments: {m['fragments']['count']}, "
        f"underruns: {m['underruns']['count']} ({m['underruns']['total_s']:.2f} s)",
        f'encoder vs ground truth: {acc}',
        audio_line,
    ]


def draw_timeline(data, metrics, wav, png_path):
    """The timeline PNG of a loaded session; ``wav`` as returned by ``read_wav``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from muse_msgs.msg import MusicPrompt, PlaybackEvent

    t0 = data.start
    fig, axes = plt.subplots(5, 1, figsize=(14, 12), sharex=True,
                             gridspec_kw={'height_ratios': [2.2, 1.3, 1.2, 1.2, 1.6]})
    ax_act, ax_hr, ax_frag, ax_lat, ax_mel = axes

    if data.ground_truth:
        t, c = zip(*data.ground_truth)
        ax_act.step(np.array(t) - t0, c, where='post', color='0.6', lw=6, alpha=0.6,
                    label='ground truth')
    if data.estimates:
        t, c, raw = [np.array(x) for x in list(zip(*data.estimates))[:3]]
        ax_act.step(t - t0, c, where='post', color='tab:blue', lw=1.8, label='encoder (smoothed)')
        ax_act.plot(t - t0, raw, '.', color='tab:blue', ms=3, alpha=0.4, label='encoder (raw)')
    ax_act.set_yticks(range(len(ACTIVITY_NAMES)))
    ax_act.set_yticklabels(ACTIVITY_NAMES, fontsize=8)
    ax_act.set_ylabel('activity')
    # Above the axes: inside, it would hide the top classes' steps.
    ax_act.legend(loc='lower right', bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=3,
                  frameon=False)

    if data.heart_rate:
        t, bpm = zip(*data.heart_rate)
        ax_hr.plot(np.array(t) - t0, bpm, color='tab:red', lw=1.2, label='heart rate')
    if data.prompts:
        ax_hr.step([p['stamp'] - t0 for p in data.prompts],
                   [p['target_bpm'] for p in data.prompts], where='post', color='tab:purple',
                   ls='--', label='music target tempo')
    ax_hr.set_ylabel('beats/min')
    ax_hr.legend(loc='upper right', fontsize=8)

    reasons = {MusicPrompt.REASON_INITIAL: 'initial',
               MusicPrompt.REASON_ACTIVITY_CHANGE: 'activity',
               MusicPrompt.REASON_HEART_RATE_ZONE: 'HR zone',
               MusicPrompt.REASON_MANUAL: 'manual',
               MusicPrompt.REASON_PROFILE_CHANGE: 'profile'}
    for p in data.prompts:
        for ax in axes[:4]:
            ax.axvline(p['stamp'] - t0, color='tab:green', lw=0.8, alpha=0.7)
        ax_hr.annotate(f"#{p['prompt_id']} {p['activity']} ({reasons.get(p['reason'], '?')})",
                       (p['stamp'] - t0, 0.97), xycoords=ax_hr.get_xaxis_transform(),
                       rotation=90, fontsize=7, va='top', ha='right', color='tab:green')

    if data.fragments:
        t, pid = np.array([f[0] for f in data.fragments]), np.array([f[1] for f in data.fragments])
        ax_frag.scatter(t - t0, pid, s=6, c=pid % 10, cmap='tab10', label='fragment arrivals')
    for t, event, *_, dur in data.playback:
        if event == PlaybackEvent.UNDERRUN:
            ax_frag.axvspan(t - t0 - dur, t - t0, color='red', alpha=0.4)
    ax_frag.set_ylabel('prompt id')
    ax_frag.set_title('fragment arrivals (red: underruns)', fontsize=9, loc='left')

    audible = data.audible
    for prompt_id, (to_audible, change) in wall_latencies(data).items():
        if prompt_id in audible:
            t_aud = audible[prompt_id] - t0
            ax_lat.bar(t_aud, to_audible * 1000, width=2.0, color='tab:orange')
            if change is not None:
                ax_lat.plot(t_aud, change * 1000, 'kv', ms=5)
    ax_lat.set_ylabel('latency [ms]')
    ax_lat.set_title('bars: prompt -> audible; triangles: activity change -> audible', fontsize=9,
                     loc='left')

    _draw_mel(ax_mel, wav, data, t0)
    ax_mel.set_xlabel('session time [s]')
    m = metrics
    fig.suptitle('MUSE session - ' + '; '.join(summary_lines(m)[:3]), fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def _draw_mel(ax, wav, data, t0):
    ax.set_ylabel('mel band')
    if wav is None:
        ax.text(0.5, 0.5, 'no session WAV', transform=ax.transAxes, ha='center')
        return
    import librosa
    audio, rate = wav
    if len(audio) < rate // 10:
        return
    mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=audio.mean(axis=1), sr=rate, n_fft=2048, hop_length=1024, n_mels=64), ref=np.max)
    # The WAV's t=0 is when the player started; place it on the session clock.
    first = data.first_audible
    offset = (first[0] - first[1] if first else t0) - t0
    ax.imshow(mel, origin='lower', aspect='auto', cmap='magma',
              extent=[offset, offset + len(audio) / rate, 0, mel.shape[0]])
    ax.set_title('session audio (log-mel)', fontsize=9, loc='left')


def write_report(session):
    """Compute the metrics and draw the timeline of a session folder; return summary lines."""
    session = session if isinstance(session, SessionPaths) else SessionPaths(Path(session))
    if not session.bag.exists():
        raise FileNotFoundError(f'no session bag at {session.bag}')
    data = load_session(session.bag)
    wav = read_wav(session.wav)
    metrics = compute_metrics(data, wav)
    session.metrics_json.write_text(json.dumps(metrics, indent=2) + '\n')
    draw_timeline(data, metrics, wav, session.timeline_png)
    return metrics['summary']


def main(argv=None):
    parser = argparse.ArgumentParser(prog='muse_report', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('session', help='session folder (holding session_bag/ and session.wav)')
    args = parser.parse_args(argv)
    try:
        for line in write_report(Path(args.session)):
            print(line)
    except FileNotFoundError as exc:
        print(f'muse_report: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
