"""Benchmark: features + CNN for one 8 s window on ONE CPU thread (goal: < 5 ms).

Measures, in one process, on the same windows of synthetic wrist motion (32 Hz, in g):

- baseline features: the naive path, per window ``scipy.signal.resample_poly``, mean removal,
  ``sosfiltfilt`` high-pass, principal axes (``numpy.linalg.eigh``), then per channel
  ``librosa.feature.melspectrogram`` + log10 (what one writes first; same numbers),
- AccelToRGBMel: the vectorised features the encoder uses,
- the CNN alone (PyTorch),
- the whole encoder step ``ActivityEncoder.predict`` (features + CNN, PyTorch),
- the same with the CNN in onnxruntime (the packaged .onnx; what the node runs by default).

Prints median and p95 per path, the speed-up of AccelToRGBMel over the baseline, the
ONNX/torch ratio, and whether the full step meets the 5 ms goal.

    ./muse.sh exec python bench/bench_encoder.py [--quick] [--runs N] [--checkpoint PATH]
"""

import argparse
import os
from pathlib import Path
import sys
import time

# One thread everywhere, set before numpy/torch load their thread pools.
for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

GOAL_MS = 5.0
RATE_HZ = 32


def timed(label, fn, inputs, warmup, runs):
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times = np.empty(runs)
    for i in tqdm(range(runs), desc=label, unit='run', leave=False, file=sys.stderr):
        item = inputs[i % len(inputs)]
        start = time.perf_counter()
        fn(item)
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return {'label': label, 'median': float(np.median(ms)), 'p95': float(np.percentile(ms, 95)),
            'mean': float(ms.mean()), 'runs': runs}


def naive_features(window, params):
    """Per-window path: resample to 64 Hz, device-invariant channels, librosa mel spectrogram,
    log10 (the invariant channels as muse_encoder.features documents them)."""
    import librosa
    from scipy.signal import butter, resample_poly, sosfiltfilt
    pad = (params.n_fft - params.hop_length) // 2
    up = int(params.target_rate_hz) // RATE_HZ
    invariant = params.representation == 'invariant'
    signal = resample_poly(window - window.mean(axis=0) if invariant else window, up, 1, axis=0,
                           padtype=params.resample_padtype)
    if invariant:
        signal = signal - signal.mean(axis=0)
        sos = butter(2, params.gravity_cutoff_hz, 'highpass', fs=params.target_rate_hz, output='sos')
        signal = sosfiltfilt(sos, signal, axis=0)
        _, vectors = np.linalg.eigh(signal.T @ signal)
        projected = signal @ vectors
        orthogonal = np.hypot(projected[:, 0], projected[:, 1])
        magnitude = np.linalg.norm(signal, axis=1)
        signal = np.stack([projected[:, 2], orthogonal - orthogonal.mean(),
                           magnitude - magnitude.mean()], axis=1)
    channels = []
    for axis in range(3):
        y = signal[:, axis]
        mel = librosa.feature.melspectrogram(
            y=np.pad(y, pad, mode='reflect'), sr=params.target_rate_hz, n_fft=params.n_fft,
            hop_length=params.hop_length, center=False, n_mels=params.n_mels,
            fmin=params.fmin_hz, fmax=params.fmax_hz, power=2.0)
        channels.append(np.log10(mel + params.log_floor))
    return np.stack(channels)


def make_windows(count, seed=0):
    """Gravity plus gait-like motion with varying cadence and noise, in g."""
    rng = np.random.default_rng(seed)
    t = np.arange(8 * RATE_HZ) / RATE_HZ
    windows = []
    for _ in range(count):
        f = rng.uniform(0.8, 2.5)
        base = rng.normal(0, 0.5, 3)
        base[2] += 1
        motion = np.stack([0.3 * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6)) for k in (1, 2, 3)], 1)
        windows.append((base + motion + 0.02 * rng.standard_normal((len(t), 3))).astype(np.float32))
    return windows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer runs (well under a minute)')
    parser.add_argument('--runs', type=int, default=None, help='timed runs per path (default 2000, quick 300)')
    parser.add_argument('--checkpoint', type=Path, default=None, help='encoder checkpoint (default: packaged)')
    parser.add_argument('--no-onnx', action='store_true', help='skip the onnxruntime path (the '
                        "checkpoint's .onnx must exist otherwise)")
    args = parser.parse_args(argv)
    runs = args.runs or (300 if args.quick else 2000)
    load_before = os.getloadavg()[0]
    warmup = max(20, runs // 10)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    from muse_encoder.inference import ActivityEncoder
    from muse_encoder.statics import Statics

    encoder = ActivityEncoder(args.checkpoint, backend='torch', threads=1)
    params = encoder.features.params
    windows = make_windows(64)
    statics = Statics(heart_rate_bpm=95, age_years=30, sex_female=1, height_cm=168, weight_kg=62)
    images = [encoder.features(w, RATE_HZ)[np.newaxis] for w in windows]
    vector = statics.vector(encoder.static_defaults)[np.newaxis]

    # The naive path computes the same image (a guard that the comparison is fair).
    difference = np.abs(naive_features(windows[0], params) - images[0][0]).max()
    if difference > 5e-3:
        raise SystemExit(f'naive and vectorised features differ by {difference:.3g}: not comparable')

    model = encoder.model
    statics_tensor = torch.from_numpy(vector)

    def cnn_only(image):
        with torch.inference_mode():
            model(torch.from_numpy(image), statics_tensor)

    results = [
        timed('baseline features (librosa per axis)', lambda w: naive_features(w, params), windows, warmup, runs),
        timed('AccelToRGBMel features', lambda w: encoder.features(w, RATE_HZ), windows, warmup, runs),
        timed('CNN only (torch)', cnn_only, images, warmup, runs),
        timed('features + CNN (torch)', lambda w: encoder.predict(w, RATE_HZ, statics), windows, warmup, runs),
    ]
    if not args.no_onnx:
        onnx_encoder = ActivityEncoder(args.checkpoint, backend='onnx', threads=1)
        results.append(timed('features + CNN (onnxruntime)',
                             lambda w: onnx_encoder.predict(w, RATE_HZ, statics), windows, warmup, runs))
    print(f'\nencoder step for one 8 s window (3 x 256 samples at {RATE_HZ} Hz), 1 CPU thread, '
          f'{runs} runs each (torch {torch.__version__}); {os.cpu_count()} CPUs, 1-min load average '
          f'{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (p95 suffers on a shared machine)')
    print(f'{"path":40s} {"median ms":>10s} {"p95 ms":>9s} {"mean ms":>9s}')
    for r in results:
        print(f'{r["label"]:40s} {r["median"]:10.3f} {r["p95"]:9.3f} {r["mean"]:9.3f}')
    by_label = {r['label']: r for r in results}
    naive = by_label['baseline features (librosa per axis)']
    fast = by_label['AccelToRGBMel features']
    full = by_label['features + CNN (torch)']
    baseline_full = naive['median'] + by_label['CNN only (torch)']['median']
    print(f'\nAccelToRGBMel vs librosa per-axis baseline: {naive["median"] / fast["median"]:.1f}x faster (median), '
          f'{naive["p95"] / fast["p95"]:.1f}x (p95)')
    print(f'full step vs baseline features + CNN ({baseline_full:.3f} ms): {baseline_full / full["median"]:.2f}x faster')
    if 'features + CNN (onnxruntime)' in by_label:
        ort = by_label['features + CNN (onnxruntime)']
        print(f'onnxruntime vs torch full step: {full["median"] / ort["median"]:.2f}x '
              f'({"faster" if ort["median"] < full["median"] else "slower"}) (median)')
    verdict = 'meets' if full['p95'] < GOAL_MS else 'MISSES'
    print(f'goal < {GOAL_MS:g} ms per window on one core: torch full step p95 {full["p95"]:.3f} ms '
          f'{verdict} it (p95 / goal = {full["p95"] / GOAL_MS:.2f})')
    if 'features + CNN (onnxruntime)' in by_label:
        ort = by_label['features + CNN (onnxruntime)']
        verdict = 'meets' if ort['p95'] < GOAL_MS else 'MISSES'
        print(f'node default (onnxruntime) full step p95 {ort["p95"]:.3f} ms {verdict} it '
              f'(p95 / goal = {ort["p95"] / GOAL_MS:.2f})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
