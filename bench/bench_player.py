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


def run_loopback(prompts, spacing_s):
    """Synth server + cloud_bridge + audio_player on loopback; prompt -> audible latency.

    Returns per prompt (total latency [s], bridge part [s]): the bridge part runs from the
    prompt stamp to the bridge receiving the prompt's first fragment (its header stamp); the
    rest is the player's (DDS hop, jitter buffer, block boundary)."""
    import os
    import shutil
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from muse_bringup.graph import free_port
    from muse_bringup.runner import ManagedProcess, wait_for_health
    from muse_server.backends.synth_styles import STYLES
    from muse_common import qos, stamps
    from muse_msgs.msg import AudioFragment, MusicPrompt, PlaybackEvent

    style_names = tuple(STYLES)
    port = free_port()
    namespace = f'/muse_bench_{os.getpid()}'
    folder = Path(tempfile.mkdtemp(prefix='muse_bench_player_'))  # kept if something fails
    commands = {
        'server': [sys.executable, '-m', 'muse_server.server', '--host', '127.0.0.1',
                   '--port', str(port), '--backend', 'synth'],
        'bridge': [sys.executable, '-m', 'muse_cloud_bridge.cloud_bridge_node', '--ros-args',
                   '-r', f'__ns:={namespace}', '-p', 'autostart:=true',
                   '-p', f'server_url:=ws://127.0.0.1:{port}'],
        'player': [sys.executable, '-m', 'muse_player.audio_player_node', '--ros-args',
                   '-r', f'__ns:={namespace}', '-p', 'autostart:=true', '-p', 'sink:=null',
                   '-p', f"record_path:={folder / 'loopback.wav'}"],
    }
    processes = {name: ManagedProcess(name, cmd, folder / f'{name}.log', colour='', quiet=True)
                 for name, cmd in commands.items()}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('bench_player_loopback', context=context)
    audible, first_fragment = {}, {}
    lock = threading.Lock()

    def on_event(msg):
        if msg.event == PlaybackEvent.PROMPT_AUDIBLE:
            with lock:
                audible[msg.prompt_id] = msg.latency_s

    def on_audio(msg):
        with lock:
            first_fragment.setdefault(msg.prompt_id, stamps.to_sec(msg.header.stamp))

    node.create_subscription(PlaybackEvent, f'{namespace}/playback', on_event, qos.EVENTS)
    node.create_subscription(AudioFragment, f'{namespace}/audio', on_audio, qos.AUDIO)
    publisher = node.create_publisher(MusicPrompt, f'{namespace}/prompt', qos.LATCHED)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    results = []
    try:
        wait_for_health(f'http://127.0.0.1:{port}/healthz', 60.0, processes['server'])
        for prompt_id in tqdm(range(1, prompts + 2), desc='loopback prompts', file=sys.stdout):
            msg = MusicPrompt(prompt_id=prompt_id, text=f'bench prompt {prompt_id}',
                              activity='walking', activity_class_id=7, heart_rate_bpm=100.0,
                              target_bpm=90.0 + prompt_id % 5 * 10, energy=0.5,
                              style=style_names[prompt_id % len(style_names)], reason=1)
            stamp = node.get_clock().now().to_msg()
            msg.header.stamp = msg.trigger_stamp = stamp
            publisher.publish(msg)
            # The first prompt also waits for the graph to come up; it is not counted.
            deadline = time.monotonic() + (60.0 if prompt_id == 1 else 10.0)
            while time.monotonic() < deadline:
                with lock:
                    if prompt_id in audible:
                        break
                time.sleep(0.005)
            with lock:
                latency = audible.get(prompt_id)
                fragment_at = first_fragment.get(prompt_id)
            if latency is None:
                raise RuntimeError(f'prompt {prompt_id} never became audible; logs in {folder}')
            if prompt_id > 1:
                results.append((latency, fragment_at - stamps.to_sec(stamp)))
            time.sleep(spacing_s)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for process in reversed(processes.values()):
            process.stop(timeout=10)
    shutil.rmtree(folder)
    return results


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
    parser.add_argument('--loopback', type=int, default=0, metavar='N',
                        help='also measure prompt -> first audible sample over N prompts with '
                        'the synth server, cloud_bridge and audio_player on loopback (needs '
                        'the workspace environment; about 2.5 s per prompt)')
    parser.add_argument('--spacing', type=float, default=2.5,
                        help='seconds between loopback prompts (default 2.5)')
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
    for name, costs in {**results, 'player (render only)': player_costs}.items():
        d = describe(costs)
        channels = 2 if name == 'stereo' else 1
        ratio = d['median_us'] / base[channels]['median_us']
        print(f"{name:24s} {d['median_us']:10.1f} {d['p95_us']:9.1f} {d['max_us']:9.1f} "
              f"{d['x_realtime']:11.0f} {ratio:11.1f}x {BLOCK_S * 1e6 / d['p95_us']:8.0f}x")
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
    if args.loopback:
        print(f'\nloopback: synth server + cloud_bridge + audio_player (null sink), '
              f'{args.loopback} prompts {args.spacing} s apart')
        measured = np.array(run_loopback(args.loopback, args.spacing))
        total, bridge = measured[:, 0], measured[:, 1]
        player = total - bridge
        for label, values in (('prompt -> first audible sample', total),
                              ('  of which prompt -> first fragment at the bridge', bridge),
                              ('  of which fragment at bridge -> audible (player)', player)):
            print(f'{label:50s} median {np.median(values) * 1e3:6.1f} ms   '
                  f'p95 {np.percentile(values, 95) * 1e3:6.1f} ms   '
                  f'max {values.max() * 1e3:6.1f} ms')
        print(f'player share of the median latency: '
              f'{np.median(player) / np.median(total):.0%}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
