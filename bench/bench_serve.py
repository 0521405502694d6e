"""Benchmark: the music server behind Ray Serve's proxy against a plain server, same run.

    ./muse.sh exec python bench/bench_serve.py [--quick] [--trials N] [--failovers N]

Starts ``muse_music_server --backend synth`` as its own process (OMP_NUM_THREADS=1, as Ray
gives its workers), and a local Ray instance (``--num-cpus``, no GPU, no dashboard) with Serve
and two synth replicas, both on loopback.

- time to first fragment: a fresh session (connect + hello + prompt) -> its first audio
  frame, and prompt -> first frame alone, alternating plain and Serve trials so both see the
  same machine load; p50 / p95 and the ratio Serve / plain;
- failover: a :class:`ReconnectingLink` streams (the bridge's defaults: backoff from 0.5 s,
  at most 1 s apart while a prompt plays);
  its replica's actor is killed (``ray.kill``); measured are the arrival gap (last frame
  before the kill -> first frame from the other replica), kill -> reconnected, and the longest
  silence of a player that started with a 0.5 s prebuffer (0 = the listener heard no gap);
  Serve starts a replacement replica between trials;
- startup: ``ray.init``, ``serve.start`` and ``serve.run`` (two replicas) times.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from muse_bringup.graph import free_port
from muse_bringup.runner import ManagedProcess, wait_for_health
from muse_protocol import protocol
from muse_protocol.client import MusicClient
from muse_protocol.link import LinkState, ReconnectingLink

TOKEN = 'bench-token'
WARMUP = 3
PREBUFFER_S = 0.5  # the player's default prebuffer
FRAGMENT_S = 0.5
MAX_AHEAD_S = 2.0


def prompt(prompt_id):
    return protocol.Prompt(prompt_id=prompt_id, text='ambient music for walking', style='ambient',
                           activity='walking', energy=0.4, target_bpm=90.0, heart_rate_bpm=90.0)


def start_plain_server(port, log_path):
    command = [sys.executable, '-m', 'muse_server.server', '--host', '127.0.0.1',
               '--port', str(port), '--backend', 'synth',
               '--fragment-s', str(FRAGMENT_S), '--max-ahead-s', str(MAX_AHEAD_S),
               '--max-sessions', '8', '--log-level', 'WARNING']
    # Ray starts its workers with OMP_NUM_THREADS=1 (the replicas' CPU share); the plain server
    # gets the same, else its BLAS threads fight over the cores and it is the slower one
    server = ManagedProcess('server', command, log_path, colour='', quiet=True,
                            env={'OMP_NUM_THREADS': '1', 'MUSE_SERVER_TOKEN': TOKEN})
    try:
        wait_for_health(f'http://127.0.0.1:{port}/healthz', 60.0, server)
    except RuntimeError as exc:
        server.stop()
        raise SystemExit(f'{exc}:\n{Path(log_path).read_text(errors="replace")}')
    return server


def start_serve(port, num_cpus, replicas):
    """-> (ray, serve, timings) with the application running on ``port``."""
    os.environ['MUSE_SERVER_TOKEN'] = TOKEN  # the local replicas inherit it
    timings = {}
    start = time.perf_counter()
    import ray
    from ray import serve

    from muse_server import serve_app
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    timings['ray.init'] = time.perf_counter() - start
    start = time.perf_counter()
    serve.start(http_options={'host': '127.0.0.1', 'port': port})
    timings['serve.start'] = time.perf_counter() - start
    start = time.perf_counter()
    app = serve_app.make_app(
        {'backend': 'synth', 'capacity': 4, 'fragment_s': FRAGMENT_S, 'max_ahead_s': MAX_AHEAD_S},
        {'num_replicas': replicas, 'ray_actor_options': {'num_cpus': 0}})
    serve.run(app, name=serve_app.APP_NAME, route_prefix='/')
    timings[f'serve.run ({replicas} replicas)'] = time.perf_counter() - start
    return ray, serve, timings


async def first_fragment(url, prompt_id):
    """-> (connect + hello + prompt -> first frame, prompt -> first frame) [s]."""
    start = time.perf_counter()
    async with MusicClient(url, token=TOKEN) as client:
        sent = time.perf_counter()
        await client.send_prompt(prompt(prompt_id))
        while True:
            item = await client.receive(timeout=30)
            if isinstance(item, protocol.AudioFrame):
                now = time.perf_counter()
                return now - start, now - sent
            if isinstance(item, protocol.Error):
                raise RuntimeError(f'server error: {item}')


async def measure_first_fragments(urls, trials):
    results = {name: ([], []) for name in urls}
    for trial in range(WARMUP + trials):
        for name, url in urls.items():  # alternate: both see the same load
            session, prompt_only = await first_fragment(url, trial + 1)
            if trial >= WARMUP:
                results[name][0].append(session)
                results[name][1].append(prompt_only)
    return {name: (np.array(a), np.array(b)) for name, (a, b) in results.items()}


def player_underrun_s(arrivals, prebuffer_s):
    """Longest silence of a player that starts ``prebuffer_s`` after the first frame and then
    plays every frame at real time, in order, as soon as it is due and has arrived."""
    clock = arrivals[0][0] + prebuffer_s
    longest = 0.0
    for arrived, frame in arrivals:
        if arrived > clock:  # ran dry until this frame came
            longest = max(longest, arrived - clock)
            clock = arrived
        clock += frame.duration_s
    return longest


async def _until(condition, timeout, what):
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise RuntimeError(f'timed out waiting for {what}')
        await asyncio.sleep(0.01)


async def failover(ray, url, stream_s):
    """One kill of the streaming session's replica; -> measurements [s] and frame checks."""
    arrivals = []
    link = ReconnectingLink(url, TOKEN, lambda f: arrivals.append((time.perf_counter(), f)),
                            client_name='bench-failover')
    runner = asyncio.create_task(link.run())
    try:
        link.set_prompt(prompt(1))
        await _until(lambda: arrivals and arrivals[-1][0] - arrivals[0][0] >= stream_s, 60,
                     'streaming')
        replica = link.welcome.server.partition('@')[2]
        killed_at = time.perf_counter()
        ray.kill(ray.get_actor(replica, namespace='serve'), no_restart=True)
        await _until(lambda: link.state is LinkState.CONNECTED
                     and link.welcome.server.partition('@')[2] != replica, 60, 'a new replica')
        reconnected_at = time.perf_counter()
        count = len(arrivals)
        await _until(lambda: len(arrivals) >= count + 4, 60, 'frames after the failover')
        after = [t for t, _ in arrivals if t > killed_at]
        before = [t for t, _ in arrivals if t <= killed_at]
        seqs = [f.seq for _, f in arrivals]
        return {
            'arrival gap': after[0] - before[-1],
            'kill -> reconnected': reconnected_at - killed_at,
            'player silence': player_underrun_s(arrivals, PREBUFFER_S),
            'in order, none missing': seqs == list(range(len(seqs))),
        }
    finally:
        await link.close()
        await asyncio.gather(runner, return_exceptions=True)


def wait_replicas(count, timeout=300.0):
    """Until ``count`` replicas live and Serve's controller runs them all (right after a kill
    it may still count the dead one)."""
    from muse_server import serve_app
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if (len(serve_app.live_replicas()) == count
                and serve_app.running_replicas() == count):
            return
        time.sleep(0.2)
    raise RuntimeError(f'fewer than {count} replicas running after {timeout:g} s')


def row(label, seconds):
    ms = np.asarray(seconds) * 1e3
    print(f'  {label:46s} p50 {np.median(ms):8.1f} ms   p95 {np.percentile(ms, 95):8.1f} ms'
          f'   max {ms.max():8.1f} ms   (n={len(ms)})')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='few trials (a few minutes)')
    parser.add_argument('--trials', type=int, default=None, help='first-fragment trials')
    parser.add_argument('--failovers', type=int, default=None, help='replica kills')
    parser.add_argument('--num-cpus', type=int, default=2, help='CPUs of the local Ray instance')
    args = parser.parse_args(argv)
    trials = args.trials or (20 if args.quick else 100)
    failovers = args.failovers or (3 if args.quick else 10)
    replicas = 2

    plain_port, serve_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix='muse_bench_serve_', suffix='.log', delete=False)
    plain = start_plain_server(plain_port, log.name)
    ray = serve = None
    try:
        ray, serve, startup = start_serve(serve_port, args.num_cpus, replicas)
        urls = {'plain': f'ws://127.0.0.1:{plain_port}', 'serve': f'ws://127.0.0.1:{serve_port}'}
        first = asyncio.run(measure_first_fragments(urls, trials))
        kills = []
        for _ in range(failovers):
            wait_replicas(replicas)
            kills.append(asyncio.run(failover(ray, urls['serve'], stream_s=3.0)))
    finally:
        plain.stop(timeout=30)
        os.unlink(log.name)
        if serve is not None:
            serve.shutdown()
            ray.shutdown()

    print(f'\nsynth backend, loopback, fragment {FRAGMENT_S:g} s, max ahead {MAX_AHEAD_S:g} s, '
          f'{os.cpu_count()} CPUs (Ray: {args.num_cpus}), {replicas} Serve replicas')
    for name, seconds in startup.items():
        print(f'  startup: {name:38s} {seconds:6.1f} s')
    for name in ('plain', 'serve'):
        row(f'{name}: connect + hello + prompt -> 1st frame', first[name][0])
        row(f'{name}: prompt -> 1st frame', first[name][1])
    for index, label in ((0, 'session'), (1, 'prompt')):
        ratio = np.median(first['serve'][index]) / np.median(first['plain'][index])
        extra = (np.median(first['serve'][index]) - np.median(first['plain'][index])) * 1e3
        print(f'  ratio serve / plain, {label} -> 1st frame (p50): {ratio:.2f} '
              f'(+{extra:.1f} ms)')
    print(f'failover ({failovers} replica kills, bridge backoff, player prebuffer '
          f'{PREBUFFER_S:g} s):')
    for key in ('arrival gap', 'kill -> reconnected', 'player silence'):
        row(key, [k[key] for k in kills])
    ordered = all(k['in order, none missing'] for k in kills)
    print(f'  every resumed stream in order with no seq missing: {ordered}')
    silent = max(k['player silence'] for k in kills)
    print(f'  longest player silence {silent * 1e3:.0f} ms '
          f'({"within" if silent <= PREBUFFER_S else "BEYOND"} the {PREBUFFER_S:g} s prebuffer)')
    return 0 if ordered else 1


if __name__ == '__main__':
    sys.exit(main())
