"""Benchmark of prompt changes with the synth backend: what a listener hears at each change.

    ./muse.sh bench transitions            (= python bench/bench_transitions.py --quick)
    ./muse.sh exec python bench/bench_transitions.py [--quick] [--seed N] [--wav-dir DIR]

One scripted session (same-style tempo changes, energy changes, a run of ten same-style
changes, style changes) is rendered twice, in one run:

- **baseline**, the switch as it was before retargeting: a new stream per prompt, opened with
  the last 4 s of audio as context, joined by the player's 0.5 s equal-power crossfade;
- **retarget**: one stream, ``SynthStream.retarget`` at each prompt (the session's path for
  clients that do not splice REPLACES frames: the change follows the audio already sent);
- **fork**: one stream, ``SynthStream.fork`` at each prompt from just ahead of the listener
  (the session's path for clients that do): everything the server made beyond the listener
  (``retarget_ahead_s`` + the held fragment + the player's prebuffer) is replaced from the
  listener's position + ``fork_margin_s`` on, joined by the player's 20 ms in-phase crossfade.

Per change it measures (librosa features; T = the moment the prompt arrives):

- timbre ratio: the largest distance between the 2 s means of [MFCC, spectral contrast,
  chroma] just before and just after any point of the change region [T, T + region], divided
  by the median of the same statistic over regions of equal length inside steady music;
- beat gap: beats tracked (librosa.beat.beat_track) around the change; the worst inter-beat
  interval across the region, as its deviation from the span [old period, new period];
- level step: RMS of 1 s after the change region against 1 s before T, in dB;
- key continuity: correlation of the mean chroma of 8 s before T with 8 s after the region;
- clicks off the beat grid: sample jumps (second difference 4x the largest within 10 ms
  around it and above -40 dBFS) farther than 30 ms from every detected onset.

Per segment (the steady part after each change): tempo by onset autocorrelation (peak near
the target lag, parabolic refinement) and by librosa.beat.beat_track (default prior, not told
the target); the key signature (synth_theory.estimate_key) along the run of same-style changes.

Prompt -> audible: baseline = first fragment's generation time (measured) + the player's
prebuffer (0.3 s); retarget = the audio already sent ahead of the listener (the session's
``retarget_ahead_s``) + the fragment held back + the wait for the bar line where the change
lands; fork = from the listener's position when the prompt arrives (a phase of the beat
spread by the golden ratio: prompts arrive at any phase) to the eighth note where the stream
says the change lands, or the measured fork + first fragment time if longer, and
(``audio``) to the first 10 ms where the forked audio departs from the old by more than
0.25 (full scale 1), found in the audio.
"""

import os

for _variable in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
                  'NUMEXPR_NUM_THREADS'):
    os.environ[_variable] = '1'

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402

from muse_server.backends import PromptSpec  # noqa: E402
from muse_server.backends.synth import (LOOKAHEAD_BEATS, TEMPO_RAMP_BARS,  # noqa: E402
                                        TRANSITION_BARS, SynthBackend, write_wav)
from muse_server.backends.synth_compose import BEATS_PER_BAR  # noqa: E402
from muse_server.backends.synth_theory import estimate_key  # noqa: E402
from muse_server.session import SessionConfig  # noqa: E402
from muse_player.mixer import REPLACE_CROSSFADE_S  # noqa: E402

SR = 32000
HOP = 256
CROSSFADE_S = 0.5          # the player's default
PREBUFFER_S = 0.3          # the player's default
CONTEXT_S = SessionConfig().context_s
WINDOW_S = 2.0

# (kind, style, energy, bpm): the scripted session; the first entry opens it.
SCRIPT = [
    ('start', 'chill_techno', 0.6, 120.0),
    ('tempo', 'chill_techno', 0.6, 126.0),
    ('energy', 'chill_techno', 0.85, 126.0),
    ('tempo', 'chill_techno', 0.85, 118.0),
    ('energy', 'chill_techno', 0.45, 118.0),
    ('tempo', 'chill_techno', 0.45, 122.0),
    ('energy', 'chill_techno', 0.7, 122.0),
    ('tempo', 'chill_techno', 0.7, 116.0),
    ('energy', 'chill_techno', 0.55, 116.0),
    ('tempo', 'chill_techno', 0.55, 124.0),
    ('energy', 'chill_techno', 0.75, 124.0),
    ('style', 'upbeat_pop', 0.7, 118.0),
    ('style', 'lofi_hiphop', 0.5, 90.0),
    ('tempo', 'lofi_hiphop', 0.5, 96.0),
    ('style', 'jazz', 0.5, 110.0),
    ('style', 'cinematic', 0.6, 100.0),
    ('style', 'ambient', 0.4, 84.0),
    ('style', 'chill_techno', 0.7, 124.0),
]
QUICK_SCRIPT = SCRIPT[:4] + SCRIPT[11:14] + SCRIPT[14:16]


def spec(i, entry):
    _, style, energy, bpm = entry
    return PromptSpec(prompt_id=i + 1, text=f'{style} music', style=style, energy=energy,
                      target_bpm=bpm)


def equal_power(n):
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    return np.cos(0.5 * np.pi * t), np.sin(0.5 * np.pi * t)


def render_baseline(backend, script, segment_s):
    """New stream per prompt (context = the tail heard), 0.5 s equal-power crossfade."""
    seg, fade = int(segment_s * SR), int(CROSSFADE_S * SR)
    out = np.zeros(0, np.float32)
    first_fragment_s = []
    for i, entry in enumerate(script):
        context = out[-int(CONTEXT_S * SR):, None] if len(out) else None
        start = time.perf_counter()
        stream = backend.open_stream(spec(i, entry), context)
        parts = [stream.next_fragment()[:, 0]]
        first_fragment_s.append(time.perf_counter() - start)
        while sum(map(len, parts)) < seg + fade:
            parts.append(stream.next_fragment()[:, 0])
        stream.close()
        new = np.concatenate(parts)[:seg + fade]
        if not len(out):
            out = new
            continue
        # the old stream went on under the fade: out holds `fade` samples past the switch
        fade_out, fade_in = equal_power(fade)
        out[-fade:] = out[-fade:] * fade_out + new[:fade] * fade_in
        out = np.concatenate([out, new[fade:]])
    return out[:len(script) * seg], first_fragment_s


def render_retarget(backend, script, segment_s):
    seg = int(segment_s * SR)
    stream = backend.open_stream(spec(0, script[0]))
    parts, have = [], 0
    for i, entry in enumerate(script):
        if i:
            assert stream.retarget(spec(i, entry))
        while have < (i + 1) * seg:
            parts.append(stream.next_fragment()[:, 0])
            have += len(parts[-1])
    stream.close()
    return np.concatenate(parts)[:len(script) * seg]


def render_fork(backend, script, segment_s):
    """One stream forked at each prompt just ahead of the listener, spliced as the player
    does; -> audio, per change (latency by the plan [s], by the audio [s], fork time [s])."""
    config = SessionConfig()
    seg = int(segment_s * SR)
    made_ahead = int((config.retarget_ahead_s + config.fragment_s + config.listener_delay_s) * SR)
    margin = int(config.fork_margin_s * SR)
    fade = int(REPLACE_CROSSFADE_S * SR)
    fade_out, fade_in = equal_power(fade)
    stream = backend.open_stream(spec(0, script[0]))
    parts, have = [], 0
    changes = []

    def truncate(length):
        nonlocal have
        while have - len(parts[-1]) >= length:
            have -= len(parts.pop())
        parts[-1] = parts[-1][:len(parts[-1]) - (have - length)]
        have = length

    for i, entry in enumerate(script):
        if i:
            # the listener's position when the prompt arrives: at any phase of the beat
            t = i * seg + int((i * 0.618034) % 1.0 * 60.0 / script[i - 1][3] * SR)
            while have < t + made_ahead:
                parts.append(stream.next_fragment()[:, 0])
                have += len(parts[-1])
            old = np.concatenate(parts[-8:])[-(have - t - margin):].copy()
            started = time.perf_counter()
            at = stream.fork(spec(i, entry), t + margin)
            first = stream.next_fragment()[:, 0].copy()
            took = time.perf_counter() - started
            truncate(at)
            first[:fade] = first[:fade] * fade_in + old[:fade] * fade_out
            parts.append(first)
            have += len(first)
            while have < t + made_ahead:
                parts.append(stream.next_fragment()[:, 0])
                have += len(parts[-1])
            new = np.concatenate(parts[-8:])[-(have - at):][:len(old)]
            windows = np.abs(new - old[:len(new)])[:len(new) // 320 * 320].reshape(-1, 320)
            departs = np.flatnonzero(windows.max(axis=1) > 0.25)
            heard = (at - t + departs[0] * 320) / SR if len(departs) else float('nan')
            changes.append((max((stream.landing - t) / SR, took), heard, took))
        while have < (i + 1) * seg:
            parts.append(stream.next_fragment()[:, 0])
            have += len(parts[-1])
    stream.close()
    return np.concatenate(parts)[:len(script) * seg], changes


# -- measures -----------------------------------------------------------------------------


def frame_features(y):
    """Per-frame [MFCC 20, spectral contrast 7, chroma 12] at HOP."""
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, hop_length=HOP)
    contrast = librosa.feature.spectral_contrast(y=y, sr=SR, hop_length=HOP)
    chroma = librosa.feature.chroma_stft(y=y, sr=SR, hop_length=HOP)
    n = min(mfcc.shape[1], contrast.shape[1], chroma.shape[1])
    return np.vstack([mfcc[:, :n], contrast[:, :n], chroma[:, :n]])


class Timbre:
    def __init__(self, y):
        self.f = frame_features(y)
        self.scale = self.f.std(axis=1) + 1e-9
        self.groups = [slice(0, 20), slice(20, 27), slice(27, 39)]
        self.w = int(WINDOW_S * SR / HOP)

    def jump(self, t):
        """Distance between the 2 s feature means before and after ``t`` seconds."""
        i = int(t * SR / HOP)
        before = self.f[:, i - self.w:i].mean(axis=1) / self.scale
        after = self.f[:, i:i + self.w].mean(axis=1) / self.scale
        return sum(np.linalg.norm(before[g] - after[g]) / np.sqrt(g.stop - g.start)
                   for g in self.groups)

    def largest_jump(self, start, length):
        return max(self.jump(t) for t in np.arange(start, start + length + 1e-9, 0.25))


def onset_env(y):
    return librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP)


def autocorrelation_tempo(y, bpm):
    """Tempo [BPM] from the onset autocorrelation peak within 8 % of the target lag."""
    env = onset_env(y)
    env = env - env.mean()
    ac = np.correlate(env, env, 'full')[len(env) - 1:]
    lag = 60.0 / bpm * SR / HOP
    # the bar (4 beats) is the longest repeating lag measured: 4x the resolution of one beat
    lo, hi = int(4 * lag * 0.92), int(4 * lag * 1.08) + 1
    k = lo + int(np.argmax(ac[lo:hi]))
    a, b, c = ac[k - 1:k + 2]
    k = k + 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else k
    return 60.0 / (k / 4 * HOP / SR)


def beat_track_tempo(y):
    tempo, _ = librosa.beat.beat_track(y=y, sr=SR, hop_length=HOP)
    return float(np.atleast_1d(tempo)[0])


def worst_beat_gap(y, t0, t1, bpm_old, bpm_new, margin_s=6.0):
    """Worst relative deviation of an inter-beat interval in [t0, t1] from the span of the
    old and new beat periods (0 when every gap lies within it)."""
    a = max(0, int((t0 - margin_s) * SR))
    b = min(len(y), int((t1 + margin_s) * SR))
    _, beats = librosa.beat.beat_track(y=y[a:b], sr=SR, hop_length=HOP, start_bpm=bpm_old,
                                       units='time')
    beats = beats + a / SR
    periods = sorted((60.0 / bpm_old, 60.0 / bpm_new))
    worst = 0.0
    for left, right in zip(beats[:-1], beats[1:]):
        if right < t0 or left > t1:
            continue
        gap = right - left
        if gap < periods[0]:
            worst = max(worst, (periods[0] - gap) / periods[0])
        elif gap > periods[1]:
            worst = max(worst, (gap - periods[1]) / periods[1])
    return worst


def clicks_off_grid(y, t0, t1):
    a, b = int(t0 * SR), int(t1 * SR)
    x = y[a:b].astype(np.float64)
    d2 = np.abs(x[2:] - 2 * x[1:-1] + x[:-2])
    w = SR // 100
    from scipy.ndimage import maximum_filter1d
    around = maximum_filter1d(d2, 2 * w + 1)
    # the local maximum excluding the sample itself: compare with the neighbourhood's second
    # largest by masking exact matches
    peaks = np.flatnonzero((d2 >= around) & (d2 > 0.01))
    onsets = librosa.onset.onset_detect(y=x.astype(np.float32), sr=SR, hop_length=64,
                                        units='time')
    count = 0
    for p in peaks:
        lo, hi = max(0, p - w), min(len(d2), p + w + 1)
        rest = np.concatenate([d2[lo:max(lo, p - 2)], d2[p + 3:hi]])
        if rest.size and d2[p] > 4 * rest.max():
            if not len(onsets) or np.min(np.abs(onsets - p / SR)) > 0.03:
                count += 1
    return count


def chroma_continuity(y, t, region, span_s=8.0):
    """Correlation of the mean chroma (pitch-class profile) of ``span_s`` before the change
    with that of ``span_s`` after its region: 1 = the same key and harmonic colour."""
    def profile(a, b):
        part = y[max(0, int(a * SR)):int(b * SR)]
        return librosa.feature.chroma_stft(y=part, sr=SR, hop_length=HOP).mean(axis=1)
    return float(np.corrcoef(profile(t - span_s, t), profile(t + region, t + region + span_s))[0, 1])


def rms_db(x):
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12)


def key_walk(keys):
    """Longest run of key signatures stepping the same way round the circle of fifths."""
    fifths = [(k.relative('major').tonic * 7) % 12 for k in keys]   # sharps count, mod 12
    steps = [((b - a + 6) % 12) - 6 for a, b in zip(fifths, fifths[1:])]
    longest = run = 0
    last = 0
    for s in steps:
        if s != 0 and np.sign(s) == np.sign(last):
            run += 1
        else:
            run = 1 if s != 0 else 0
        last = s if s != 0 else last
        longest = max(longest, run)
    return longest, len(set(fifths))


def analyse(y, script, segment_s):
    seg = segment_s
    timbre = Timbre(y)
    rows = []
    for i in range(1, len(script)):
        kind, style, energy, bpm = script[i]
        old_bpm = script[i - 1][3]
        bar_new = BEATS_PER_BAR * 60.0 / bpm
        region = (1 + TRANSITION_BARS) * bar_new + 1.0
        t = i * seg
        rows.append({
            'kind': kind, 'to': f'{style} e{energy:.2f} {bpm:.0f}',
            'timbre': timbre.largest_jump(t, region),
            'gap': worst_beat_gap(y, t, t + region, old_bpm, bpm),
            'level': rms_db(y[int((t + region) * SR):int((t + region + 1) * SR)])
            - rms_db(y[int((t - 1) * SR):int(t * SR)]),
            'clicks': clicks_off_grid(y, t - 0.5, t + region),
            'chroma': chroma_continuity(y, t, region),
        })
    # reference: the same statistic inside steady music (the second half of each segment)
    inside = []
    for i in range(len(script)):
        bar = BEATS_PER_BAR * 60.0 / script[i][3]
        region = (1 + TRANSITION_BARS) * bar + 1.0
        start = i * seg + seg - region - WINDOW_S - 0.5
        settled = (1 + max(TRANSITION_BARS, TEMPO_RAMP_BARS)) * bar + LOOKAHEAD_BEATS * bar / 4
        if start - WINDOW_S >= i * seg + settled:
            inside.append(timbre.largest_jump(start, region))
    reference = float(np.median(inside))
    for row in rows:
        row['timbre'] /= reference
    segments = []
    for i, (kind, style, energy, bpm) in enumerate(script):
        bar = BEATS_PER_BAR * 60.0 / bpm
        settle = (1 + max(TRANSITION_BARS, TEMPO_RAMP_BARS)) * bar + LOOKAHEAD_BEATS * 60 / bpm
        part = y[int((i * seg + settle) * SR):int((i + 1) * seg * SR)]
        key, _ = estimate_key(part.astype(np.float64), SR)
        segments.append({'style': style, 'bpm': bpm, 'ac': autocorrelation_tempo(part, bpm),
                         'bt': beat_track_tempo(part), 'key': key})
    return rows, segments


def print_method(name, rows, segments, script):
    print(f'\n--- {name}')
    print(f"{'#':>2s} {'change':7s} {'to':26s} {'timbre':>7s} {'beat gap':>9s} {'level':>7s} "
          f"{'clicks':>6s} {'chroma r':>8s}")
    for i, row in enumerate(rows, 1):
        print(f"{i:2d} {row['kind']:7s} {row['to']:26s} {row['timbre']:6.2f}x {row['gap']:8.0%} "
              f"{row['level']:+6.1f}dB {row['clicks']:6d} {row['chroma']:8.2f}")
    print(f"{'seg':>3s} {'style':13s} {'target':>6s} {'autocorr':>9s} {'err':>6s} "
          f"{'beat_track':>10s} {'ok':>3s} {'key':>12s}")
    for i, s in enumerate(segments):
        ok = abs(s['bt'] - s['bpm']) / s['bpm'] < 0.04
        print(f"{i:3d} {s['style']:13s} {s['bpm']:6.1f} {s['ac']:9.2f} "
              f"{(s['ac'] - s['bpm']) / s['bpm']:+6.1%} {s['bt']:10.1f} {'yes' if ok else 'NO':>3s} "
              f"{s['key'].tonic:>3d} {s['key'].mode:8s}")
    style_rows = [r for r in rows if r['kind'] == 'style']
    same_rows = [r for r in rows if r['kind'] != 'style']
    same_keys = [s['key'] for s, e in zip(segments, script) if e[1] == script[0][1]][:11]
    walk, distinct = key_walk(same_keys)
    bt_ok = np.mean([abs(s['bt'] - s['bpm']) / s['bpm'] < 0.04 for s in segments])
    summary = {
        'timbre_style_median': float(np.median([r['timbre'] for r in style_rows])),
        'timbre_same_max': max(r['timbre'] for r in same_rows),
        'beat_gap_worst': max(r['gap'] for r in rows),
        'beat_gap_ok': np.mean([r['gap'] <= 0.10 for r in rows]),
        'beat_track_ok': bt_ok,
        'ac_err_worst': max(abs(s['ac'] - s['bpm']) / s['bpm'] for s in segments),
        'key_walk': walk, 'key_distinct': distinct,
        'level_worst': max(abs(r['level']) for r in rows),
        'clicks': sum(r['clicks'] for r in rows),
        'chroma_same': float(np.median([r['chroma'] for r in same_rows])),
    }
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help=f'{len(QUICK_SCRIPT)} prompts instead of {len(SCRIPT)}')
    parser.add_argument('--segment-s', type=float, default=30.0, help='seconds per prompt')
    parser.add_argument('--seed', type=int, default=4)
    parser.add_argument('--wav-dir', type=Path, help='also write both renderings as WAV')
    args = parser.parse_args(argv)
    script = QUICK_SCRIPT if args.quick else SCRIPT
    backend = SynthBackend(seed=args.seed, fragment_s=0.5)
    print(f'transitions: {len(script) - 1} prompt changes, {args.segment_s:g} s each, seed '
          f'{args.seed}, SoundFont {backend.soundfont.name}')
    baseline, first_fragment_s = render_baseline(backend, script, args.segment_s)
    steered = render_retarget(backend, script, args.segment_s)
    forked, fork_changes = render_fork(backend, script, args.segment_s)
    if args.wav_dir:
        args.wav_dir.mkdir(parents=True, exist_ok=True)
        write_wav(args.wav_dir / 'baseline.wav', baseline[:, None], SR)
        write_wav(args.wav_dir / 'retarget.wav', steered[:, None], SR)
        write_wav(args.wav_dir / 'fork.wav', forked[:, None], SR)
    results = {}
    for name, audio in (('baseline: new stream + 0.5 s crossfade', baseline),
                        ('retarget: one stream steered', steered),
                        ('fork: re-rendered from the listener on', forked)):
        rows, segments = analyse(audio, script, args.segment_s)
        results[name.split(':')[0]] = print_method(name, rows, segments, script)

    # prompt -> audible
    config = SessionConfig()
    baseline_latency = np.median(first_fragment_s[1:]) + PREBUFFER_S
    waits = []
    for i in range(1, len(script)):
        bpm = script[i - 1][3]
        bar = BEATS_PER_BAR * 60.0 / bpm
        heard = config.retarget_ahead_s + config.fragment_s   # sent ahead + the held fragment
        ahead = i * args.segment_s + heard + LOOKAHEAD_BEATS * 60.0 / bpm
        waits.append(heard + (-ahead) % bar + LOOKAHEAD_BEATS * 60.0 / bpm)
    results['baseline']['latency'] = baseline_latency
    results['retarget']['latency'] = float(np.median(waits))
    results['baseline']['latency_p95'] = float(np.percentile(first_fragment_s[1:], 95)) + PREBUFFER_S
    results['retarget']['latency_p95'] = float(np.percentile(waits, 95))
    plan, heard, took = (np.array(c) for c in zip(*fork_changes))
    results['fork']['latency'] = float(np.median(plan))
    results['fork']['latency_p95'] = float(np.percentile(plan, 95))
    print('\n--- fork, per change: prompt -> change lands (plan) / departs (audio) / fork + '
          'first fragment time')
    for i, (p, h, t) in enumerate(fork_changes, 1):
        print(f'{i:2d} {p * 1e3:6.0f} ms {h * 1e3:8.0f} ms {t * 1e3:6.1f} ms')
    print(f'fork + first fragment: p50 {np.median(took) * 1e3:.1f} ms, p95 '
          f'{np.percentile(took, 95) * 1e3:.1f} ms (within fork_margin_s '
          f'{config.fork_margin_s * 1e3:.0f} ms: {np.mean(took <= config.fork_margin_s):.0%}); '
          f'audio departs, median {np.nanmedian(heard) * 1e3:.0f} ms')

    print('\n--- summary (goal in brackets)')
    print(f"{'':34s} {'baseline':>10s} {'retarget':>10s} {'fork':>10s}")
    lines = [
        ('timbre ratio, median of style changes', 'timbre_style_median', '{:.2f}x', '<= 1.3'),
        ('timbre ratio, worst same-style change', 'timbre_same_max', '{:.2f}x', '<= 1.5'),
        ('beat gap, worst deviation', 'beat_gap_worst', '{:.0%}', '<= 10 %'),
        ('changes with beat gap within 10 %', 'beat_gap_ok', '{:.0%}', '100 %'),
        ('segments beat_track at target', 'beat_track_ok', '{:.0%}', '>= 90 %'),
        ('autocorrelation tempo, worst error', 'ac_err_worst', '{:.2%}', '<= 1 %'),
        ('key walk (longest one-way run)', 'key_walk', '{:d}', 'no monotone walk'),
        ('key signatures in same-style run', 'key_distinct', '{:d}', '1'),
        ('chroma r across same-style changes', 'chroma_same', '{:.2f}', 'median, 1 = same key'),
        ('level step, worst', 'level_worst', '{:.1f} dB', ''),
        ('clicks off the beat grid', 'clicks', '{:d}', '0'),
        ('prompt -> audible, median', 'latency', '{:.2f} s', 'no worse'),
        ('prompt -> audible, p95', 'latency_p95', '{:.2f} s', 'no worse'),
    ]
    for label, key, fmt, goal in lines:
        print(f"{label:34s} " + ' '.join(f"{fmt.format(results[m][key]):>10s}"
                                         for m in ('baseline', 'retarget', 'fork'))
              + f"   [{goal}]")
    return 0


if __name__ == '__main__':
    sys.exit(main())
