"""Benchmark: the music server under attack, and the bridge link's recovery from an outage.

    ./muse.sh exec python bench/bench_adversarial.py [--quick] [--outage-s S]

1. Attacks: starts the server (test sine backend, the adversarial suite's settings) as its own
   process on 127.0.0.1, streams an honest listener from 127.0.0.1 and runs every attack of
   muse_server/test/adversary.py from other loopback addresses. Prints one row per attack:
   expected and observed answer, server RSS before/after, and the audio the honest listener
   still had buffered at its worst moment during the attack (< 0: it ran dry that long).
   Baseline: the same listener's worst buffer over a quiet stretch before the attacks.
2. Recovery: a ReconnectingLink streaming from a server process that is killed (SIGKILL) and
   restarted on the same port ``--outage-s`` later. Prints the silence the link saw (last frame
   before the kill -> first frame after the restart) minus the outage, with the retry cap while
   playing (PLAYING_RECONNECT_MAX_S) and without it (plain exponential backoff, the baseline),
   measured in the same run.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'muse_server' / 'test'))  # adversary and the test backends

import adversary  # noqa: E402
from server_test_support import TOKEN, free_port, wait_for_health  # noqa: E402
from muse_protocol import link as link_module  # noqa: E402
from muse_protocol import protocol  # noqa: E402
from muse_protocol.link import ReconnectingLink  # noqa: E402


def attack_table(log_dir: Path, quiet_s: float) -> bool:
    port = free_port()
    server = adversary.ServerProcess(port, log_dir / 'attacked-server.log')
    try:
        wait_for_health(port, server)
        honest = adversary.HonestListener(port).start()
        time.sleep(quiet_s)
        quiet_started = time.monotonic() - quiet_s / 2  # the listener's start-up excluded
        baseline = honest.buffered_s(quiet_started, time.monotonic())
        rows = []

        def each(outcomes, started, finished, rss=[adversary.rss_kb(server.proc.pid)]):
            after = adversary.rss_kb(server.proc.pid)
            buffered = honest.buffered_s(started, finished)
            for outcome in outcomes:
                rows.append((outcome, rss[0], after, buffered))
            rss[0] = after

        rss_start = adversary.rss_kb(server.proc.pid)
        started = time.monotonic()
        adversary.run_attacks(server, each)
        duration = time.monotonic() - started
        rss_end = adversary.rss_kb(server.proc.pid)
        time.sleep(0.5)
        honest.stop()
        exit_code = server.terminate()
    finally:
        server.terminate()
    log = server.output()

    print(f'{"attack":46s} {"expected":42s} {"observed":44s} {"RSS kB before/after":>20s} '
          f'{"honest buffer":>13s}')
    for outcome, before, after, buffered in rows:
        shown = 'n/a' if buffered is None else f'{buffered:+.2f} s'
        print(f'{("" if outcome.ok else "FAIL ") + outcome.attack:46s} {outcome.expected:42.42s} '
              f'{outcome.observed:44.44s} {before:>9d}/{after:<10d} {shown:>13s}')
    worst = honest.buffered_s(started, started + duration)
    print(f'\nattacks: {len(rows)} in {duration:.1f} s, {sum(o.ok for o, *_ in rows)} answered '
          f'as expected; server RSS {rss_start} -> {rss_end} kB ({rss_end - rss_start:+d} kB)')
    print(f'honest listener: {len(honest.arrivals)} frames, seq contiguous: '
          f'{honest.seqs_contiguous}, problems: {honest.problems or "none"}')
    print(f'honest listener worst buffer: quiet baseline {baseline:+.2f} s, under attack '
          f'{worst:+.2f} s (ratio {worst / baseline:.2f}; < 0 would be a gap)')
    tracebacks = log.count('Traceback') + log.count(' ERROR ')
    print(f'server log: {tracebacks} tracebacks/ERROR lines, token shown: {TOKEN in log}; '
          f'SIGTERM exit code {exit_code}')
    return all(o.ok for o, *_ in rows) and honest.seqs_contiguous and not tracebacks


async def _outage_silence(log_dir: Path, outage_s: float, capped: bool, tag: str) -> float:
    port = free_port()
    arrivals = []
    link = ReconnectingLink(f'ws://127.0.0.1:{port}', TOKEN,
                            lambda frame: arrivals.append(time.monotonic()),
                            reconnect_min_s=0.5, reconnect_max_s=10.0, ping_period_s=2.0)
    saved = link_module.PLAYING_RECONNECT_MAX_S
    link_module.PLAYING_RECONNECT_MAX_S = saved if capped else float('inf')
    server = adversary.ServerProcess(port, log_dir / f'outage-{tag}-1.log')
    runner = asyncio.create_task(link.run())
    try:
        await asyncio.to_thread(wait_for_health, port, server)
        link.set_prompt(protocol.Prompt(prompt_id=1, text='outage'))
        while len(arrivals) < 8:
            await asyncio.sleep(0.05)
        server.proc.kill()
        server.terminate()
        killed = time.monotonic()
        await asyncio.sleep(outage_s)
        server = adversary.ServerProcess(port, log_dir / f'outage-{tag}-2.log')
        count = len(arrivals)
        while len(arrivals) <= count:
            await asyncio.sleep(0.01)
        last_before = max(t for t in arrivals[:count] if t <= killed)
        return arrivals[count] - last_before - outage_s
    finally:
        link_module.PLAYING_RECONNECT_MAX_S = saved
        await link.close()
        await runner
        server.terminate()


def recovery(log_dir: Path, outage_s: float):
    capped = asyncio.run(_outage_silence(log_dir, outage_s, True, 'capped'))
    plain = asyncio.run(_outage_silence(log_dir, outage_s, False, 'plain'))
    print(f'\nrecovery from a {outage_s:g} s outage (silence beyond the outage; the player\'s '
          f'prebuffer covers part of it):')
    print(f'  retries capped at {link_module.PLAYING_RECONNECT_MAX_S:g} s while playing: '
          f'{capped:+.2f} s')
    print(f'  plain exponential backoff 0.5..10 s (baseline): {plain:+.2f} s '
          f'(capped / baseline {capped / plain:.2f})')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='shorter quiet stretch and outage')
    parser.add_argument('--outage-s', type=float, default=None,
                        help='server outage for the recovery run [s] (default 6, quick 3)')
    args = parser.parse_args(argv)
    outage_s = args.outage_s or (3.0 if args.quick else 6.0)
    with tempfile.TemporaryDirectory(prefix='bench_adversarial_') as tmp:
        ok = attack_table(Path(tmp), quiet_s=2.0 if args.quick else 5.0)
        recovery(Path(tmp), outage_s)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
