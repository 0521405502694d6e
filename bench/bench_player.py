"""Benchmark of the muse_player mixer: seconds of audio mixed per second, and per-block cost.

    ./muse.sh exec python bench/bench_player.py [--quick] [--plot costs.png]

Each scenario feeds a ``Mixer`` generated fragments and pulls output blocks as fast as it can
(no sink, no sleeping), timing every ``next_block`` call. The baseline, measured in the same
run, is the least any mixer must do per block: allocate the block and copy its frames out of
one pre-built array. Ratios are mixer cost / baseline cost. "headroom" is the block period
divided by the p95 block cost: how many times faster than real time the worst 5 % of blocks
are. The ``player`` scenario runs the whole ``Player`` (lock, outbox, recording worker
writing the session WAV) and reports its throughput including the recording.
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from muse_player.jitter_buffer import Fragment
from muse_player.mixer import Mixer
from muse_player.player import Player, PlayerConfig
from muse_player.sinks import Sink

OUTPUT_RATE = 32000
BLOCK_S = 0.02
FRAGMENT_S = 0.5


def sine_fragments(prompt_id, count, rate, channels=1, first_seq=0, freq=440.0):
    frames = int(FRAGMENT_S * rate)
    phase = 2 * np.pi * freq / rate * np.arange(frames * count)
    audio = (0.5 * np.sin(phase)).astype(np.float32)[:, None].repeat(channels, axis=1)
    return [Fragment(prompt_id, first_seq + k, audio[k * frames:(k + 1) * frames].copy(), rate,
                     is_first=(k == 0)) for k in range(count)]


def arrival_plan(name, seconds):
    """(at output second, fragments to push) for a scenario, plus its output format."""
    count = int(seconds / FRAGMENT_S) + 4
    if name == 'steady':
        return [(0.0, sine_fragments(1, count, OUTPUT_RATE))], 1
    if name == 'stereo':
        return [(0.0, sine_fragments(1, count, OUTPUT_RATE, channels=2))], 2
    if name == 'resample 48k':
        return [(0.0, sine_fragments(1, count, 48000))], 1
    if name == 'switch every 2 s':
        per_prompt = int(2.0 / FRAGMENT_S) + 4
        return [(2.0 * p, sine_fragments(p + 1, per_prompt, OUTPUT_RATE, freq=300 + 50 * p))
                for p in range(int(seconds / 2.0) + 1)], 1
    if name == 'shuffled, 5% missing':
        fragments = sine_fragments(1, count, OUTPUT_RATE)
        rng = random.Random(0)
        kept = [f for f in fragments if f.seq == 0 or rng.random() > 0.05]
        batches = []
        for start in range(0, len(kept), 8):  # bursts of 8 in random order, one per 2 s
            batch = kept[start:start + 8]
            rng.shuffle(batch)
            batches.append((start * FRAGMENT_S / 2, batch))
        return batches, 1
    raise ValueError(name)


SCENARIOS = ('steady', 'stereo', 'resample 48k', 'switch every 2 s', 'shuffled, 5% missing')


def run_mixer(name, seconds, progress):
    plan, channels = arrival_plan(name, seconds)
    block = int(BLOCK_S * OUTPUT_RATE)
    mixer = Mixer(OUTPUT_RATE, channels, block, crossfade_s=0.5, prebuffer_s=0.2,
                  max_wait_missing_s=0.1)
    blocks = int(seconds / BLOCK_S)
    costs = np.empty(blocks)
    push_costs = []
    now = 0.0
    plan = list(plan)
    for index in range(blocks):
        while plan and plan[0][0] <= now:
            for fragment in plan.pop(0)[1]:
                started = time.perf_counter()
                mixer.push(fragment, now)
                push_costs.append(time.perf_counter() - started)
        started = time.perf_counter()
        mixer.next_block(now)
        costs[index] = time.perf_counter() - started
        now += BLOCK_S
        progress.update(1)
    return costs, push_costs, mixer.stats()


def run_baseline(seconds, channels, progress):
    block = int(BLOCK_S * OUTPUT_RATE)
    blocks = int(seconds / BLOCK_S)
    source = np.random.default_rng(0).uniform(-0.5, 0.5, (blocks * block, channels)).astype(
        np.float32)
    costs = np.empty(blocks)
    for index in range(blocks):
        started = time.perf_counter()
        out = np.zeros((block, channels), np.float32)
        out[:] = source[index * block:(index + 1) * block]
        costs[index] = time.perf_counter() - started
        progress.update(1)
    return costs


class DrivenSink(Sink):
    """Renders on demand, as fast as the caller asks."""

    kind = 'bench'

    def start(self, sample_rate, channels, block_frames, render):
        self.render = render
        self.state = 'running'

    def stop(self):
        self.state = 'stopped'


def run_player(seconds, progress):
    with tempfile.TemporaryDirectory() as folder:
        sink = DrivenSink()
        player = Player(PlayerConfig(output_sample_rate=OUTPUT_RATE, output_channels=1,
                                     block_s=BLOCK_S), sink, Path(folder) / 'bench.wav')
        for fragment in sine_fragments(1, int(seconds / FRAGMENT_S) + 4, OUTPUT_RATE):
            player.push(fragment)
        while getattr(sink, 'render', None) is None:
            time.sleep(0.001)
        blocks = int(seconds / BLOCK_S)
        costs = np.empty(blocks)
        started_all = time.perf_counter()
        for index in range(blocks):
            started = time.perf_counter()
            sink.render()
            costs[index] = time.perf_counter() - started
            progress.update(1)
        player.close()  # waits until the recording worker has written everything
        total = time.perf_counter() - started_all
        recorded = player.stats()['recorded_s']
    return costs, total, recorded


def describe(costs):
    return {'median_us': float(np.median(costs) * 1e6),
            'p95_us': float(np.percentile(costs, 95) * 1e6),
            'max_us': float(costs.max() * 1e6),
            'x_realtime': BLOCK_S * len(costs) / float(costs.sum())}


def plot(results, baseline, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, costs in [('baseline (copy)', baseline)] + list(results.items()):
        ordered = np.sort(costs) * 1e6
        ax.plot(ordered, np.linspace(0, 1, len(ordered)), label=label)
    ax.set_xscale('log')
    ax.set_xlabel('cost of one 20 ms block [µs] (log)')
    ax.set_ylabel('fraction of blocks')
    ax.axvline(BLOCK_S * 1e6, color='k', ls=':', label='real-time limit (20 ms)')
    ax.set_title('muse_player mixer: per-block cost, cumulative')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f'plot: {path}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='60 s of audio per scenario '
                        '(default 600 s)')
    parser.add_argument('--plot', type=Path, help='also draw per-block cost CDFs to this PNG')
    args = parser.parse_args(argv)
    seconds = 60.0 if args.quick else 600.0
    blocks = int(seconds / BLOCK_S)
    print(f'muse_player mixer benchmark: {seconds:.0f} s of audio per scenario, output '
          f'{OUTPUT_RATE} Hz, {BLOCK_S * 1e3:.0f} ms blocks, {FRAGMENT_S} s fragments')
    results, pushes, stats = {}, {}, {}
    with tqdm(total=blocks * (len(SCENARIOS) + 3), unit='block', file=sys.stdout,
              mininterval=0.5) as progress:
        baseline = {1: run_baseline(seconds, 1, progress), 2: run_baseline(seconds, 2, progress)}
        for name in SCENARIOS:
            progress.set_description(name)
            results[name], pushes[name], stats[name] = run_mixer(name, seconds, progress)
        progress.set_description('player + recording')
        player_costs, player_total, recorded = run_player(seconds, progress)
    base = {ch: describe(costs) for ch, costs in baseline.items()}
    print(f"\n{'scenario':24s} {'median µs':>10s} {'p95 µs':>9s} {'max µs':>9s} "
          f"{'x realtime':>11s} {'vs baseline':>12s} {'headroom':>9s}")
    print(f"{'baseline (copy), mono':24s} {base[1]['median_us']:10.1f} {base[1]['p95_us']:9.1f} "
          f"{base[1]['max_us']:9.1f} {base[1]['x_realtime']:11.0f} {'1.0':>12s}")
    for name, costs in results.items():
        d = describe(costs)
        channels = 2 if name == 'stereo' else 1
        ratio = d['median_us'] / base[channels]['median_us']
        print(f"{name:24s} {d['median_us']:10.1f} {d['p95_us']:9.1f} {d['max_us']:9.1f} "
              f"{d['x_realtime']:11.0f} {ratio:11.1f}x {BLOCK_S * 1e6 / d['p95_us']:8.0f}x")
    d = describe(player_costs)
    print(f"{'player (render only)':24s} {d['median_us']:10.1f} {d['p95_us']:9.1f} "
          f"{d['max_us']:9.1f} {d['x_realtime']:11.0f} "
          f"{d['median_us'] / base[1]['median_us']:11.1f}x {BLOCK_S * 1e6 / d['p95_us']:8.0f}x")
    print(f'\nplayer incl. writing the session WAV: {recorded:.0f} s recorded in '
          f'{player_total:.2f} s = {recorded / player_total:.0f}x real time')
    all_pushes = [c for costs in pushes.values() for c in costs]
    print(f'push (jitter buffer insert): median {statistics.median(all_pushes) * 1e6:.1f} µs, '
          f'p95 {np.percentile(all_pushes, 95) * 1e6:.1f} µs over {len(all_pushes)} fragments')
    for name in ('switch every 2 s', 'shuffled, 5% missing'):
        s = stats[name]
        print(f"{name}: {s['superseded_prompts']} prompt switches, {s['missing']} missing, "
              f"{s['underruns']} underruns ({s['underrun_s']:.2f} s)")
    if args.plot:
        plot(results, baseline[1], args.plot)
    return 0


if __name__ == '__main__':
    sys.exit(main())
