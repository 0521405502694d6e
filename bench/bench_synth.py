"""Benchmark of the synth music backend on one CPU thread.

    ./muse.sh exec python bench/bench_synth.py [--quick] [--seconds S] [--streams N]
        [--fragment-s F] [--plot out/bench_synth.png]

For every style, in one process:

- real-time factor: seconds of audio rendered per second of CPU time (``time.process_time``,
  so other programs on the machine do not count), over one long stream; and the per-fragment
  CPU time (median, p95) against the fragment's duration;
- time to first fragment: ``open_stream`` + the first ``next_fragment`` for new prompts on a
  backend that has played before (the server's steady state; median, p95), and on a freshly
  constructed backend (cold: the first prompt after start-up);
- baseline, the same renderer with its note cache switched off (``cache_mb=0``: every note
  rendered as it sounds), measured in the same run; the ratios show what the cache buys.

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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from muse_common.stats import percentile  # noqa: E402
from muse_server.backends import PromptSpec  # noqa: E402
from muse_server.backends.synth import SynthBackend  # noqa: E402
from muse_server.backends.synth_styles import STYLES  # noqa: E402

ENERGY = 0.6
BPM = 112.0


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
    """Wall seconds from asking for a new prompt to holding its first fragment."""
    costs = []
    for i in range(streams):
        start = time.perf_counter()
        with backend.open_stream(prompt(style, first_id + i)) as stream:
            stream.next_fragment()
        costs.append(time.perf_counter() - start)
    return costs


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [row['style'] for row in rows]
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.bar(x - 0.2, [row['rtf'] for row in rows], 0.4, label='synth (note cache)')
    left.bar(x + 0.2, [row['rtf_base'] for row in rows], 0.4, label='baseline (no cache)')
    left.set_ylabel('seconds of audio per CPU second')
    left.set_title('real-time factor, one thread')
    right.bar(x - 0.2, [row['ttff_ms'] for row in rows], 0.4, label='warm backend, median')
    right.bar(x + 0.2, [row['ttff_p95_ms'] for row in rows], 0.4, label='warm backend, p95')
    right.set_ylabel('ms')
    right.set_title('time to first fragment')
    for ax in (left, right):
        ax.set_xticks(x, names, rotation=20)
        ax.legend()
        ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f'plot: {path}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='20 s of audio and 10 first fragments per style (default 120 s, 40)')
    parser.add_argument('--seconds', type=float, help='audio per style and method')
    parser.add_argument('--streams', type=int, help='new prompts timed per style')
    parser.add_argument('--fragment-s', type=float, default=0.5)
    parser.add_argument('--plot', type=Path, help='also draw the figures to this PNG')
    args = parser.parse_args(argv)
    seconds = args.seconds or (20.0 if args.quick else 120.0)
    streams = args.streams or (10 if args.quick else 40)
    fragments = int(round(seconds / args.fragment_s))
    print(f'synth backend: {seconds:.0f} s of audio per style and method, {streams} first '
          f'fragments per style, {args.fragment_s} s fragments, 32 kHz mono, energy {ENERGY}, '
          f'{BPM:.0f} BPM, one thread')

    start = time.perf_counter()
    SynthBackend(seed=1, fragment_s=args.fragment_s)
    construct_s = time.perf_counter() - start

    rows = []
    with tqdm(total=2 * fragments * len(STYLES), unit='fragment', file=sys.stdout,
              mininterval=0.5) as progress:
        for style in STYLES:
            progress.set_description(style)
            cold = SynthBackend(seed=1, fragment_s=args.fragment_s)
            cold_ttff = first_fragment_costs(cold, style, 1)[0]
            costs = stream_costs(cold, style, seconds, progress)
            warm_ttff = first_fragment_costs(cold, style, streams)
            base = SynthBackend(seed=1, fragment_s=args.fragment_s, cache_mb=0)
            base_costs = stream_costs(base, style, seconds, progress)
            base_ttff = first_fragment_costs(base, style, streams)
            rows.append({
                'style': style,
                'rtf': seconds / sum(costs), 'rtf_base': seconds / sum(base_costs),
                'frag_ms': statistics.median(costs) * 1e3, 'frag_p95_ms': percentile(costs, 95) * 1e3,
                'base_frag_ms': statistics.median(base_costs) * 1e3,
                'ttff_ms': statistics.median(warm_ttff) * 1e3, 'ttff_p95_ms': percentile(warm_ttff, 95) * 1e3,
                'ttff_cold_ms': cold_ttff * 1e3,
                'base_ttff_ms': statistics.median(base_ttff) * 1e3,
                'cache_hit_rate': cold.note_cache.hits / max(cold.note_cache.hits
                                                             + cold.note_cache.misses, 1),
            })

    fragment_ms = args.fragment_s * 1e3
    print(f'\nbackend construction (noise tables, 6 rooms): {construct_s * 1e3:.0f} ms')
    print(f"\n{'style':13s} {'x realtime':>10s} {'baseline':>9s} {'ratio':>6s} "
          f"{'frag med':>9s} {'frag p95':>9s} {'(of ' + str(int(fragment_ms)) + ' ms)':>11s} "
          f"{'TTFF med':>9s} {'TTFF p95':>9s} {'cold':>7s} {'base TTFF':>10s} {'cache hits':>10s}")
    for row in rows:
        print(f"{row['style']:13s} {row['rtf']:10.0f} {row['rtf_base']:9.0f} "
              f"{row['rtf'] / row['rtf_base']:5.1f}x {row['frag_ms']:7.2f}ms "
              f"{row['frag_p95_ms']:7.2f}ms {'':11s} {row['ttff_ms']:7.2f}ms "
              f"{row['ttff_p95_ms']:7.2f}ms {row['ttff_cold_ms']:5.1f}ms "
              f"{row['base_ttff_ms']:8.2f}ms {row['cache_hit_rate']:9.0%}")
    slowest = min(rows, key=lambda row: row['rtf'])
    print(f"\nslowest style {slowest['style']}: {slowest['rtf']:.0f}x real time on one core, "
          f"i.e. about {slowest['rtf']:.0f} concurrent streams per core; worst first-fragment "
          f"p95 {max(row['ttff_p95_ms'] for row in rows):.1f} ms for {fragment_ms:.0f} ms of audio")
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == '__main__':
    sys.exit(main())
