"""The session metrics (metrics.json) computed from a recorded session (plain Python).

Latencies are wall-clock durations on the recorder's receive times (the bag's log times):
header stamps are data time when the graph runs on the replay's /clock (use_sim_time, the
default), where a second of stamps is 1/rate of a second of waiting.
- ``activity_change_to_audible_s``: for each prompt made because the activity changed, from
  the arrival of the activity estimate that triggered it (``MusicPrompt.trigger_stamp`` names
  it) to the arrival of the player's ``PlaybackEvent.PROMPT_AUDIBLE`` for its music.
- ``prompt_to_audible_s``: from the prompt's arrival to that PROMPT_AUDIBLE event's.
Both leave out the sink's own output latency (the player reports it in its diagnostics).
- ``ground_truth_change_to_prompt_s``: from a ground-truth activity change to the first
  prompt for that activity; dominated by the encoder's 8 s window and the prompt dwell time.
"""

from collections import defaultdict

import numpy as np
from muse_common.activities import TRANSIENT
from muse_common.stats import summarize

from muse_bringup.session_data import label_at, wall_latencies

SILENCE_DBFS = -60.0
MIN_SILENCE_S = 0.25


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

    # Wall-clock latencies from the recorder's receive times (stamps are data time with
    # use_sim_time): session_data.wall_latencies.
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
                    'inference_ms': _inference_ms(data.encoder_timing)},
        'imu_messages': data.imu_count,
        'cross_talk': data.crosstalk.metrics(data.imu_count),
        'recorder_dropped_messages': data.crosstalk.recorder_dropped,
        'audio': audio_metrics(wav, data.first_audible[1] if data.first_audible else 0.0),
    }
    metrics['summary'] = summary_lines(metrics)
    return metrics


def _inference_ms(values):
    """The encoder's inference time per window [ms] as its diagnostics last reported it."""
    keys = {'mean': 'inference_ms_mean', 'p95': 'inference_ms_p95', 'max': 'inference_ms_max'}
    timing = {name: round(float(values[key]), 3) for name, key in keys.items() if key in values}
    return {'windows': int(values.get('windows_published', 0)), **timing}


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
