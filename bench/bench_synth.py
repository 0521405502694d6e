"""Benchmark of the synth music backend on one CPU thread, for each GM SoundFont installed.

    ./muse.sh exec python bench/bench_synth.py [--quick] [--seconds S] [--streams N]
        [--fragment-s F]

For every style and SoundFont (FluidR3_GM, the default, and TimGM6mb, 25x smaller: the
baseline it is chosen against, measured in the same run):

- real-time factor: seconds of audio rendered per second of CPU time (``time.process_time``,
  so other programs on the machine do not count), over one long stream; and the per-fragment
  CPU time (median, p95) against the fragment's duration;
- time to first fragment: ``open_stream`` + the first ``next_fragment`` for new prompts on a
  backend that has played before (the server's steady state: a FluidSynth instance waits
  loaded in the pool; median, p95), and the backend's construction (SoundFont load);
- style identification: a nearest-centroid classifier on the means of 20 MFCCs over 2 s
  windows, across seeds and tempi; each rendering is classified against centroids made from
  the renderings of the other seeds (leave-one-seed-out), so it must generalise.

numpy is limited to one thread before it is imported (BLAS and FFT stay single-threaded),
so the figures are per core: a server with N cores serves about N times as many streams.
"""

import os

for _variable in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
                  'NUMEXPR_NUM_THREADS'):
    os.environ[_variable] = '1'

import argparse  # noqa: E402  (after the thread limits, which must precede numpy)
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from muse_common.stats import percentile  # noqa: E402
from muse_server.backends import PromptSpec  # noqa: E402
import librosa  # noqa: E402

from muse_server.backends.synth import DEFAULT_SOUNDFONT, SynthBackend, render  # noqa: E402
from muse_server.backends.synth_styles import STYLES  # noqa: E402

ENERGY = 0.6
BPM = 112.0
SOUNDFONTS = {'FluidR3_GM': DEFAULT_SOUNDFONT, 'TimGM6mb': '/usr/share/sounds/sf2/TimGM6mb.sf2'}
SR = 32000


def prompt(style, prompt_id):
    return PromptSpec(prompt_id=prompt_id, text=f'{style} music', style=style, energy=ENERGY,
                      target_bpm=BPM)


def stream_costs(backend, style, seconds, progress):
    """CPU seconds of each fragment of one ``seconds``-long stream."""
    costs = []
    with backend.open_stream(prompt(style, 1)) as stream:
        for _ in range(int(round(seconds / backend.fragment_s))):
            start = time.process_time()
            stream.next_fragment()
            costs.append(time.process_time() - start)
            progress.update(1)
    return costs


def first_fragment_costs(backend, style, streams, first_id=100):
    """(wall seconds, CPU seconds of this thread) from asking for a new prompt to holding its
    first fragment; the CPU time leaves out other programs on a shared machine."""
    costs = []
    for i in range(streams):
        start, cpu = time.perf_counter(), time.thread_time()
        with backend.open_stream(prompt(style, first_id + i)) as stream:
            stream.next_fragment()
            costs.append((time.perf_counter() - start, time.thread_time() - cpu))
    return costs


def style_accuracy(soundfont, seeds, tempi, seconds):
    """Share of 2 s windows whose MFCC mean is nearest its own style's centroid (centroids
    from the other seeds' renderings), and the confusions."""
    windows = {}                         # (style, seed) -> [feature vectors]
    for style in STYLES:
        for seed in seeds:
            backend = SynthBackend(seed=seed, fragment_s=1.0, soundfont=soundfont)
            feats = []
            for bpm in tempi:
                y = render(backend, PromptSpec(1, f'{style} music', style, energy=ENERGY,
                                               target_bpm=bpm), seconds)[:, 0]
                for a in range(2 * SR, len(y) - 2 * SR + 1, 2 * SR):
                    mfcc = librosa.feature.mfcc(y=y[a:a + 2 * SR], sr=SR, n_mfcc=20)
                    feats.append(mfcc.mean(axis=1))
            backend.close()
            windows[(style, seed)] = feats
    every = np.array([f for feats in windows.values() for f in feats])
    scale = every.std(axis=0) + 1e-9
    right = total = 0
    confusions = {}
    for (style, seed), feats in windows.items():
        centroids = {other: np.mean([f for (o, s), fs in windows.items() if o == other
                                     and s != seed for f in fs], axis=0) / scale
                     for other in STYLES}
        for f in feats:
            guess = min(STYLES, key=lambda other: np.linalg.norm(f / scale - centroids[other]))
            right += guess == style
            total += 1
            if guess != style:
                confusions[(style, guess)] = confusions.get((style, guess), 0) + 1
    return right / total, confusions


def measure(name, soundfont, seconds, streams, fragment_s, progress):
    start = time.perf_counter()
    SynthBackend(seed=1, fragment_s=fragment_s, soundfont=soundfont).close()
    construct_s = time.perf_counter() - start
    rows = []
    for style in STYLES:
        progress.set_description(f'{name} {style}')
        backend = SynthBackend(seed=1, fragment_s=fragment_s, soundfont=soundfont)
        costs = stream_costs(backend, style, seconds, progress)
        time.sleep(1.0)     # let the pool reload in the background, as between real prompts
        warm = []
        for i in range(streams):
            warm += first_fragment_costs(backend, style, 1, first_id=100 + i)
            time.sleep(0.3)
        backend.close()
        wall, cpu = [w for w, _ in warm], [c for _, c in warm]
        rows.append({'style': style, 'rtf': seconds / sum(costs),
                     'frag_ms': statistics.median(costs) * 1e3,
                     'frag_p95_ms': percentile(costs, 95) * 1e3,
                     'ttff_ms': statistics.median(wall) * 1e3,
                     'ttff_p95_ms': percentile(wall, 95) * 1e3,
                     'ttff_cpu_ms': statistics.median(cpu) * 1e3,
                     'ttff_cpu_p95_ms': percentile(cpu, 95) * 1e3})
    return construct_s, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='20 s of audio and 10 first fragments per style (default 60 s, 30)')
    parser.add_argument('--seconds', type=float, help='audio per style')
    parser.add_argument('--streams', type=int, help='new prompts timed per style')
    parser.add_argument('--fragment-s', type=float, default=0.5)
    args = parser.parse_args(argv)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    streams = args.streams or (10 if args.quick else 30)
    seeds, tempi, class_s = ((1, 2), (90.0, 128.0), 10.0) if args.quick else \
        ((1, 2, 3), (84.0, 112.0, 140.0), 12.0)
    fragments = int(round(seconds / args.fragment_s))
    print(f'synth backend: {seconds:.0f} s of audio per style, {streams} first fragments per '
          f'style, {args.fragment_s} s fragments, 32 kHz mono, energy {ENERGY}, {BPM:.0f} BPM, '
          f'one thread; style classifier on seeds {seeds} x tempi {tempi}')
    results = {}
    soundfonts = {name: path for name, path in SOUNDFONTS.items() if os.path.isfile(path)}
    for name in SOUNDFONTS.keys() - soundfonts.keys():
        print(f'{name}: {SOUNDFONTS[name]} is not installed; not measured')
    with tqdm(total=fragments * len(STYLES) * len(soundfonts), unit='fragment', file=sys.stdout,
              mininterval=0.5) as progress:
        for name, path in soundfonts.items():
            results[name] = measure(name, path, seconds, streams, args.fragment_s, progress)
    accuracy = {name: style_accuracy(path, seeds, tempi, class_s)
                for name, path in soundfonts.items()}
    fragment_ms = args.fragment_s * 1e3
    for name, (construct_s, rows) in results.items():
        print(f'\n{name}: backend construction (SoundFont load, pool) {construct_s * 1e3:.0f} ms')
        print(f"{'style':13s} {'x realtime':>10s} {'frag med':>9s} {'frag p95':>9s} "
              f"{'TTFF med':>9s} {'TTFF p95':>9s} {'CPU med':>9s} {'CPU p95':>9s}"
              f"   (fragments of {fragment_ms:.0f} ms; TTFF wall clock, CPU of the thread)")
        for row in rows:
            print(f"{row['style']:13s} {row['rtf']:10.0f} {row['frag_ms']:7.2f}ms "
                  f"{row['frag_p95_ms']:7.2f}ms {row['ttff_ms']:7.2f}ms {row['ttff_p95_ms']:7.2f}ms "
                  f"{row['ttff_cpu_ms']:7.2f}ms {row['ttff_cpu_p95_ms']:7.2f}ms")
        share, confusions = accuracy[name]
        worst = sorted(confusions.items(), key=lambda kv: -kv[1])[:3]
        print(f'style classifier (2 s MFCC means, nearest centroid): {share:.0%}; most confused '
              + (', '.join(f'{a}->{b} x{n}' for (a, b), n in worst) or 'none'))
    print('\nsummary (goal: >= 20x real time per core, first fragment p95 <= 15 ms, styles >= 90 %)')
    reference = 'TimGM6mb' if 'TimGM6mb' in results else next(iter(results))
    base = min(row['rtf'] for row in results[reference][1])
    for name, (_, rows) in results.items():
        slowest = min(row['rtf'] for row in rows)
        print(f"  {name:11s} slowest style {slowest:5.0f}x real time ({slowest / base:.2f}x "
              f"{reference}'s), worst first-fragment p95 {max(r['ttff_p95_ms'] for r in rows):6.1f} ms "
              f"wall / {max(r['ttff_cpu_p95_ms'] for r in rows):5.1f} ms CPU, "
              f"styles identified {accuracy[name][0]:.0%}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
