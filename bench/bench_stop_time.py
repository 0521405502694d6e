"""How long each node takes to exit after SIGINT, mid-session, idle machine vs two busy cores.

Starts the runner on a short synthetic subject, waits until the first prompt is audible, then
presses Ctrl-C (SIGINT to the runner, which stops every node in reverse start order, each with
SIGINT, and prints how long each took). Once with nothing else running, once with two
``while 1: pass`` processes at nice 0 keeping two cores busy. Prints the per-node times and
the loaded/idle ratio.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_LINE = re.compile(r'stop times after SIGINT: (.*)')


def one_session(out_dir, minutes, rate):
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}  # a free domain
    runner = subprocess.Popen(
        [sys.executable, '-m', 'muse_bringup.run', '--synthetic-minutes', str(minutes),
         '--rate', str(rate), '--sink', 'null', '--quiet', '--output-dir', str(out_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and runner.poll() is None:
        logs = list(Path(out_dir).glob('session-*/logs/audio_player.log'))
        if logs and 'prompt 1 audible' in logs[0].read_text(errors='replace'):
            break
        time.sleep(0.2)
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=600)
    match = STOP_LINE.search(output)
    if not match:
        raise RuntimeError(f'no stop times in the runner output:\n{output[-3000:]}')
    return {name: float(seconds) for name, seconds in
            re.findall(r'(\w+) ([\d.]+) s', match.group(1))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--quick', action='store_true', help='a shorter subject')
    args = parser.parse_args(argv)
    minutes, rate = (2.0, 2.0) if args.quick else (4.0, 2.0)
    with tempfile.TemporaryDirectory(prefix='muse_bench_stop_') as tmp:
        idle = one_session(Path(tmp) / 'idle', minutes, rate)
        burners = [subprocess.Popen([sys.executable, '-c', 'while 1: pass'])
                   for _ in range(2)]
        try:
            loaded = one_session(Path(tmp) / 'loaded', minutes, rate)
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
    print(f'{"node":18s} {"idle [s]":>9s} {"2 busy cores [s]":>17s} {"ratio":>6s}')
    for name in idle:
        ratio = loaded.get(name, float('nan')) / idle[name] if idle[name] > 0 else float('nan')
        print(f'{name:18s} {idle[name]:9.2f} {loaded.get(name, float("nan")):17.2f} '
              f'{ratio:6.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
