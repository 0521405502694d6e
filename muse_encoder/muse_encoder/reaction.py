"""Reaction time of the published activity: how long after a real change it names the new one.

The node publishes, every ``stride_s`` of data, the smoothed class of the last 8 s window.
For each ground-truth change to a new (non-transient) activity B at data time t_B, the
reaction time is the first publication time t >= t_B whose smoothed class is B, minus t_B;
changes that are never recognised before B ends count as misses. Between the end of the
previous activity A and that moment, every switch of the published class to something other
than A, B or transient is a false change. Data times are window ends, as the node stamps them.

``python -m muse_encoder.reaction [--model PATH] [--domain D] [--subjects N] ...`` measures
it on held-out synthetic subjects (muse_sensors.synthetic, seeds the default checkpoint was
not trained on): domain-randomised devices (``randomised``, as in training), a device and
wearer configuration outside the training ranges (``shifted``), or the original E4-style
generator (``e4``), for several stride/smoothing settings, and prints p50/p95 and false changes
per change. The smoothing is muse_encoder.inference.ProbabilitySmoother, the node's own.
"""

import argparse
from dataclasses import dataclass
import json
from pathlib import Path
import sys

import numpy as np

from muse_encoder.dataset import TRANSIENT_ID
from muse_encoder.features import to_g
from muse_encoder.inference import ProbabilitySmoother, SmoothingSettings
from muse_encoder.statics import STATIC_INPUTS

# (name, stride_s, SmoothingSettings): the node's earlier defaults first, its default last.
SETTINGS = (('stride 2 s, ema 0.5 (before)', 2.0, SmoothingSettings('ema', alpha=0.5)),
            ('stride 1 s, ema 0.5 (last default)', 1.0, SmoothingSettings('ema', alpha=0.5)),
            ('stride 1 s, none', 1.0, SmoothingSettings('none')),
            ('stride 1 s, hmm 1/300 s, w 1', 1.0, SmoothingSettings('hmm', switch_rate=1 / 300,
                                                                     evidence_weight=1.0)),
            ('stride 0.5 s, evidence 1.44 / 0.36', 0.5, SmoothingSettings('evidence', margin=1.44, threshold=0.36)),
            ('stride 1 s, evidence 1.44 / 0.36 (default)', 1.0, SmoothingSettings()))
DOMAINS = ('randomised', 'shifted', 'e4')


@dataclass
class StreamEstimates:
    """Per-window probabilities of one stream at one stride."""

    end_s: np.ndarray            # (W,) data time of each window's end
    probabilities: np.ndarray    # (W, C)
    activity: np.ndarray         # (N,) per-sample ground truth
    rate_hz: float


def estimate_stream(encoder, acc_g, rate_hz, activity, stride_s, statics=None, batch_size=256):
    length = encoder.features.window_samples(rate_hz)
    stride = max(1, int(round(stride_s * rate_hz)))
    starts = np.arange(0, len(acc_g) - length + 1, stride)
    if statics is None:
        statics = np.array([encoder.static_defaults[n] for n in STATIC_INPUTS], np.float32)
    probabilities = []
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        windows = np.stack([acc_g[s:s + length] for s in chunk]).astype(np.float32)
        p, _ = encoder.predict_batch(windows, rate_hz, np.tile(statics, (len(chunk), 1)))
        probabilities.append(p)
    return StreamEstimates((starts + length) / rate_hz, np.concatenate(probabilities),
                           np.asarray(activity), float(rate_hz))


def smoothed_classes(probabilities, settings, stride_s):
    """The published class after every window, as the node publishes it."""
    smoother = ProbabilitySmoother()
    smoother.configure(settings)
    return np.array([smoother.update(p, stride_s)[0] for p in probabilities])


def reactions(estimates, published):
    """[(delay_s or None for a miss, false changes)] for every change to a new activity."""
    truth = estimates.activity
    t_sample = np.arange(len(truth)) / estimates.rate_hz
    change = np.flatnonzero(np.diff(truth)) + 1
    bounds = np.concatenate([[0], change, [len(truth)]])
    segments = [(int(truth[a]), t_sample[a], t_sample[b - 1]) for a, b in zip(bounds[:-1], bounds[1:])]
    out = []
    previous, previous_end = None, None
    for activity, start, end in segments:
        if activity == TRANSIENT_ID:
            continue
        if previous is not None and activity != previous and start >= estimates.end_s[0]:
            after = np.flatnonzero((estimates.end_s >= start) & (published == activity))
            hit = after[0] if len(after) and estimates.end_s[after[0]] <= end + 8.0 else None
            first = np.searchsorted(estimates.end_s, previous_end)
            last = hit if hit is not None else np.searchsorted(estimates.end_s, end)
            span = published[first:last + 1] if hit is not None else published[first:last]
            switches = span[1:][np.diff(span) != 0] if len(span) > 1 else span[:0]
            false = int(np.sum(~np.isin(switches, [previous, activity, TRANSIENT_ID])))
            out.append((None if hit is None else float(estimates.end_s[hit] - start), false))
        previous, previous_end = activity, end
    return out


def summarise(results):
    delays = np.array([d for d, _ in results if d is not None])
    return {'changes': len(results), 'missed': int(sum(d is None for d, _ in results)),
            'p50_s': float(np.percentile(delays, 50)) if len(delays) else float('nan'),
            'p95_s': float(np.percentile(delays, 95)) if len(delays) else float('nan'),
            'false_changes_per_change': float(np.mean([f for _, f in results])) if results else float('nan')}


def held_out_streams(count, minutes, seed, domain='randomised', first_index=501):
    """(acc in g, rate, per-sample activity, statics) of held-out synthetic subjects:
    domain-randomised streams, 'shifted' = a device and wearer configuration outside the
    training ranges (synthetic.DOMAIN_SHIFTED), or 'e4' = the original generator's E4-style
    32 Hz subjects."""
    from muse_sensors import dalia, synthetic
    for index in range(first_index, first_index + count):
        statics = np.array([np.nan] * len(STATIC_INPUTS), np.float32)
        if domain == 'e4':
            data = synthetic.generate_subject(index, minutes, seed, balanced=True, chest=False)
            acc_g = data['signal']['wrist']['ACC'] / dalia.ACC_UNITS_PER_G
            activity = np.repeat(data['activity'][:, 0].astype(int), dalia.ACC_HZ // dalia.ACTIVITY_HZ)
            yield acc_g.astype(np.float32), float(dalia.ACC_HZ), activity[:len(acc_g)], statics
            continue
        stream = synthetic.generate_wrist_stream(
            index, minutes, seed, balanced=True,
            domain=synthetic.DOMAIN_SHIFTED if domain == 'shifted' else synthetic.DOMAIN_RANDOMISED)
        yield to_g(stream.acc, stream.units), stream.rate_hz, stream.activity, statics


def measure(encoder, streams, settings=SETTINGS):
    by_stride = {}
    results = {name: [] for name, *_ in settings}
    for acc_g, rate, activity, _ in streams:
        for stride in sorted({s for _, s, _ in settings}):
            by_stride[stride] = estimate_stream(encoder, acc_g, rate, activity, stride)
        for name, stride, smoothing in settings:
            est = by_stride[stride]
            results[name] += reactions(est, smoothed_classes(est.probabilities, smoothing, stride))
    return {name: summarise(r) for name, r in results.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m muse_encoder.reaction', description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', type=Path, default=None,
                        help='.onnx (onnxruntime) or .pt (torch); default the packaged .onnx')
    parser.add_argument('--subjects', type=int, default=6)
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--seed', type=int, default=2024, help='not the default checkpoint\'s training seed')
    parser.add_argument('--domain', choices=DOMAINS, default='randomised',
                        help="held-out subjects: domain-randomised (default), 'shifted' (outside the "
                             "training ranges) or the original E4-style generator")
    parser.add_argument('--first-index', type=int, default=501,
                        help='subject index of the first stream (the default checkpoint was trained on 1-20)')
    parser.add_argument('--output', type=Path, default=None, help='write the results as JSON here')
    args = parser.parse_args(argv)
    from muse_encoder.inference import ActivityEncoder
    if args.model is not None and args.model.suffix == '.pt':
        encoder = ActivityEncoder(args.model, backend='torch', threads=1)
    else:
        encoder = ActivityEncoder(backend='onnx', onnx_path=args.model, threads=1)
    result = measure(encoder, held_out_streams(args.subjects, args.minutes, args.seed, args.domain,
                                                     args.first_index))
    for name, r in result.items():
        print(f'{name:>40s}: p50 {r["p50_s"]:.1f} s, p95 {r["p95_s"]:.1f} s, missed {r["missed"]}/{r["changes"]}, '
              f'false changes per change {r["false_changes_per_change"]:.2f}')
    if args.output:
        args.output.write_text(json.dumps({'model': str(args.model or 'packaged'), 'domain': args.domain, 'subjects': args.subjects,
                                           'minutes': args.minutes, 'seed': args.seed, 'first_index': args.first_index, 'results': result},
                                          indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
