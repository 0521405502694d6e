"""Benchmark: music server latency on loopback with the synth backend.

    ./muse.sh exec python bench/bench_server_latency.py [--quick] [--trials N]
        [--fragment-s S] [--plot out/bench_server_latency.png]

Starts ``muse_music_server --backend synth`` as its own process on 127.0.0.1 and measures, from
a client in this process:

- first fragment: a fresh session's prompt -> its first audio frame (hello done beforehand);
- switch: in a streaming session, a new prompt -> its first audio frame (the old prompt keeps
  playing meanwhile); also the audio the listener still had buffered when the new prompt's
  first frame arrived (> 0 means no silence at the switch);
- baseline "reconnect per prompt": what a client without in-session switching would wait for
  a new prompt (connect + hello + prompt -> first frame), measured in the same run;
- floor: the backend alone, ``open_stream(prompt, context) + next_fragment()`` in this process;
- RTT: ping/pong on an idle session and on one streaming audio.

Prints median / p95 for each and the ratios switch / baseline and switch - floor (the server's
own overhead).
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from muse_bringup.graph import free_port
from muse_bringup.runner import ManagedProcess, wait_for_health
from muse_protocol import protocol
from muse_server.backends import PromptSpec, create_backend
from muse_server.backends.synth_styles import STYLES
from muse_protocol.client import MusicClient
from muse_server.server import ServerConfig

TOKEN = 'bench-token'
WARMUP = 3  # untimed first runs (style tables, sockets, caches)
STYLE_NAMES = tuple(STYLES)


def start_server(port, fragment_s, max_ahead_s, log_path):
    command = [sys.executable, '-m', 'muse_server.server', '--host', '127.0.0.1',
               '--port', str(port), '--backend', 'synth',
               '--fragment-s', str(fragment_s), '--max-ahead-s', str(max_ahead_s),
               '--max-sessions', '8', '--log-level', 'WARNING']
    server = ManagedProcess('server', command, log_path, colour='', quiet=True,
                            env={'MUSE_SERVER_TOKEN': TOKEN})  # never on the command line
    try:
        wait_for_health(f'http://127.0.0.1:{port}/healthz', 60.0, server)
    except RuntimeError as exc:
        server.stop()
        raise SystemExit(f'{exc}:\n{Path(log_path).read_text(errors="replace")}')
    return server


def prompt(prompt_id, **extra):
    style = STYLE_NAMES[prompt_id % len(STYLE_NAMES)]
    energy = (prompt_id * 0.37) % 1.0
    return protocol.Prompt(prompt_id=prompt_id, text=f'{style} music for walking', style=style,
                           activity='walking', energy=energy, target_bpm=80.0 + 50 * energy,
                           heart_rate_bpm=90.0, **extra)


async def first_frame_of(client, prompt_id, on_frame=None):
    while True:
        item = await client.receive(timeout=30)
        if isinstance(item, protocol.AudioFrame):
            if on_frame is not None:
                on_frame(item)
            if item.prompt_id == prompt_id:
                return item
        elif isinstance(item, protocol.Error):
            raise RuntimeError(f'server error: {item}')


async def measure_first_fragment(url, trials):
    latencies = []
    for trial in tqdm(range(WARMUP + trials), desc='first fragment (fresh session)',
                      file=sys.stderr):
        async with MusicClient(url, token=TOKEN) as client:
            start = time.perf_counter()
            await client.send_prompt(prompt(trial + 1))
            await first_frame_of(client, trial + 1)
            if trial >= WARMUP:
                latencies.append(time.perf_counter() - start)
    return np.array(latencies)


async def measure_reconnect_baseline(url, trials):
    latencies = []
    for trial in tqdm(range(trials), desc='baseline: reconnect per prompt', file=sys.stderr):
        start = time.perf_counter()
        async with MusicClient(url, token=TOKEN) as client:
            await client.send_prompt(prompt(trial + 1))
            await first_frame_of(client, trial + 1)
            latencies.append(time.perf_counter() - start)
    return np.array(latencies)


async def measure_switches(url, trials, play_s):
    """Switch prompts every ``play_s`` of streaming; track a real-time listener's buffer.

    The listener plays each stream from its first frame on and jumps to a new stream when its
    FIRST frame arrives (the player crossfades there); the old stream's audio still buffered
    at that moment is the margin that kept the switch free of silence.
    """
    latencies, margins, rtts = [], [], []
    async with MusicClient(url, token=TOKEN) as client:
        listener = {'start': None, 'received_s': 0.0}

        def on_frame(frame):
            now = time.perf_counter()
            if frame.is_first:
                if listener['start'] is not None:
                    margins.append(listener['received_s'] - (now - listener['start']))
                listener['start'], listener['received_s'] = now, 0.0
            listener['received_s'] += frame.duration_s

        await client.send_prompt(prompt(1))
        await first_frame_of(client, 1, on_frame)
        for trial in tqdm(range(trials), desc='prompt switch (streaming session)', file=sys.stderr):
            deadline = time.perf_counter() + play_s
            while time.perf_counter() < deadline:  # play, and ping while audio flows
                ping = asyncio.ensure_future(client.ping())
                while not ping.done():
                    try:
                        item = await client.receive(timeout=0.05)
                    except TimeoutError:
                        continue
                    if isinstance(item, protocol.AudioFrame):
                        on_frame(item)
                rtts.append(ping.result())
            prompt_id = trial + 2
            start = time.perf_counter()
            await client.send_prompt(prompt(prompt_id))
            await first_frame_of(client, prompt_id, on_frame)
            latencies.append(time.perf_counter() - start)
    return np.array(latencies), np.array(margins), np.array(rtts)


async def measure_idle_rtt(url, count):
    rtts = []
    async with MusicClient(url, token=TOKEN) as client:
        for _ in tqdm(range(count), desc='RTT (idle session)', file=sys.stderr):
            rtts.append(await client.ping())
    return np.array(rtts)


def measure_backend_floor(trials, fragment_s, context_s):
    """The backend's own time to start a prompt, with a context as long as the server's."""
    backend = create_backend('synth', fragment_s=fragment_s)
    played = [np.zeros((0, backend.channels), np.float32)]
    context_samples = int(context_s * backend.sample_rate)
    times = []
    for trial in tqdm(range(WARMUP + trials), desc='floor: synth open_stream + next_fragment',
                      file=sys.stderr):
        p = prompt(trial + 1)
        spec = PromptSpec(prompt_id=p.prompt_id, text=p.text, style=p.style, activity=p.activity,
                          energy=p.energy, target_bpm=p.target_bpm, heart_rate_bpm=p.heart_rate_bpm)
        context = np.concatenate(played)[-context_samples:]
        start = time.perf_counter()
        stream = backend.open_stream(spec, context if len(context) else None)
        fragment = stream.next_fragment()
        if trial >= WARMUP:
            times.append(time.perf_counter() - start)
        played = [context] + [fragment] + [stream.next_fragment() for _ in range(3)]
        stream.close()
    return np.array(times)


def row(label, seconds):
    ms = np.asarray(seconds) * 1e3
    print(f'  {label:44s} median {np.median(ms):8.2f} ms   p95 {np.percentile(ms, 95):8.2f} ms'
          f'   (n={len(ms)})')


def plot(path, series):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.boxplot([np.asarray(v) * 1e3 for v in series.values()], vert=False, showfliers=True)
    ax.set_yticks(range(1, len(series) + 1), list(series.keys()))
    ax.set_xlabel('latency [ms]')
    ax.set_title('muse_music_server on loopback, synth backend')
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f'plot: {path}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='few trials (under a minute)')
    parser.add_argument('--trials', type=int, default=None, help='trials per measurement')
    parser.add_argument('--fragment-s', type=float, default=0.5, help='server fragment length [s]')
    parser.add_argument('--max-ahead-s', type=float, default=2.0, help='server pacing bound [s]')
    parser.add_argument('--play-s', type=float, default=None,
                        help='streaming time between prompt switches [s]')
    parser.add_argument('--plot', default=None, help='write a box plot PNG here')
    args = parser.parse_args(argv)
    trials = args.trials or (15 if args.quick else 100)
    play_s = args.play_s if args.play_s is not None else (0.8 if args.quick else 1.5)

    port = free_port()
    url = f'ws://127.0.0.1:{port}'
    log = tempfile.NamedTemporaryFile(prefix='muse_bench_server_', suffix='.log', delete=False)
    server = start_server(port, args.fragment_s, args.max_ahead_s, log.name)
    try:
        floor = measure_backend_floor(trials, args.fragment_s, ServerConfig().context_s)
        first = asyncio.run(measure_first_fragment(url, trials))
        baseline = asyncio.run(measure_reconnect_baseline(url, trials))
        switch, margins, busy_rtt = asyncio.run(measure_switches(url, trials, play_s))
        idle_rtt = asyncio.run(measure_idle_rtt(url, trials * 5))
    finally:
        server.stop(timeout=30)
        os.unlink(log.name)

    print(f'\nmuse_music_server, synth backend, loopback, fragment {args.fragment_s:g} s, '
          f'max ahead {args.max_ahead_s:g} s, {os.cpu_count()} CPUs')
    row('floor: synth open_stream + 1st fragment', floor)  # with the server's context length
    row('prompt -> first fragment (fresh session)', first)
    row('prompt switch -> new prompt\'s first frame', switch)
    row('baseline: reconnect + hello + prompt', baseline)
    row('RTT, idle session', idle_rtt)
    row('RTT, while streaming', busy_rtt)
    print(f'  listener buffer when the new prompt arrived: min {margins.min() * 1e3:.0f} ms, '
          f'median {np.median(margins) * 1e3:.0f} ms '
          f'({"no silence at any switch" if margins.min() > 0 else "SILENCE at a switch"})')
    print(f'  ratio switch / baseline (median): {np.median(switch) / np.median(baseline):.2f}')
    print(f'  server overhead, switch - floor (median): '
          f'{(np.median(switch) - np.median(floor)) * 1e3:.2f} ms')
    if args.plot:
        plot(args.plot, {'floor (backend)': floor, 'first fragment': first, 'switch': switch,
                         'baseline reconnect': baseline, 'RTT idle': idle_rtt,
                         'RTT streaming': busy_rtt})
    return 0


if __name__ == '__main__':
    sys.exit(main())
