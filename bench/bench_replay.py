"""Benchmark: how closely the sensor replay keeps to its schedule at 1x (real time).

Measured in one run, on the same synthetic subject:

1. baseline pacing: the loop one writes first, ``sleep(1 / 32)`` between samples, where every
   sleep's overshoot (and the publishing time) adds up,
2. ``muse_sensors.replay.TimelinePlayer``: every due time from one anchor (drift-free),
   with the same no-op publisher, in this process,
3. the real ``sensor_replay`` node as its own process at 1x, heard by an rclpy subscriber in
   this process: the node's own lateness report (publish time - schedule), the delivery
   delay (arrival - header stamp) and the drift of the stamps against 32 Hz.

Lateness = how long after its scheduled time (start + data_time / rate) an event went out.
Prints mean, median, p95 and max per pacing, and the baseline/TimelinePlayer ratios.

    ./muse.sh exec python bench/bench_replay.py [--quick] [--seconds S]
"""

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from muse_common.stats import percentile
from muse_sensors import dalia, synthetic
from muse_sensors.replay import ImuSample, TimelinePlayer, subject_events


def summary(label, lateness_s):
    ms = np.asarray(lateness_s) * 1e3
    return {'label': label, 'n': len(ms), 'mean': ms.mean(), 'median': np.median(ms),
            'p95': percentile(ms, 95), 'max': ms.max()}


def print_table(rows):
    print(f'{"pacing":44s} {"events":>7s} {"mean":>9s} {"median":>9s} {"p95":>9s} {"max":>9s}  [ms]')
    for r in rows:
        print(f'{r["label"]:44s} {r["n"]:7d} {r["mean"]:9.3f} {r["median"]:9.3f} {r["p95"]:9.3f} '
              f'{r["max"]:9.3f}')


def progress_during(seconds, desc):
    """A tqdm bar that fills over ``seconds`` of wall time on its own thread."""
    stop = threading.Event()

    def run():
        with tqdm(total=round(seconds), desc=desc, unit='s', file=sys.stderr, leave=False) as bar:
            began = time.monotonic()
            while not stop.wait(0.5):
                bar.n = min(round(time.monotonic() - began), bar.total)
                bar.refresh()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return lambda: (stop.set(), thread.join())


def baseline_sleep_loop(events):
    """Naive pacing: sleep one sample period after each event; lateness vs the schedule."""
    lateness = []
    start = time.monotonic()
    previous_t = events[0].t
    for event in events:
        time.sleep(max(0.0, event.t - previous_t))
        previous_t = event.t
        lateness.append(time.monotonic() - (start + event.t - events[0].t))
    return lateness


def player_loop(subject, seconds):
    done = threading.Event()
    lateness = []
    player = TimelinePlayer(lambda: subject_events(subject, 0.0, seconds), 0.0, seconds,
                    lambda _event, _play_t, late: lateness.append(late), rate=1.0,
                    on_end=done.set)
    player.start()
    done.wait(seconds * 3 + 30)
    return lateness


def node_run(subject_path, seconds):
    """Start sensor_replay at 1x and listen to /bench/imu; returns (node log, arrivals)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Imu

    from muse_common.lifecycle import LifecycleClient
    from muse_common.stamps import to_sec

    rclpy.init()
    node = rclpy.create_node('bench_replay_listener')
    arrivals = []   # (arrival wall time [s], header stamp [s])
    node.create_subscription(
        Imu, '/bench/imu', lambda m: arrivals.append((time.time(), to_sec(m.header.stamp))),
        QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    cmd = [sys.executable, '-m', 'muse_sensors.sensor_replay_node', '--ros-args',
           '-r', '__ns:=/bench', '-p', f'source:={subject_path}', '-p', 'rate:=1.0',
           '-p', f'duration_s:={float(seconds)}']
    finish = progress_during(seconds + 3, 'sensor_replay node at 1x')
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A managed node: configure, activate once this process sees its publisher, and stop
        # it once it has deactivated itself at the end of the data.
        replay = LifecycleClient(node, '/bench/sensor_replay', timeout_s=60.0)
        if not (replay.wait_for_service(60.0) and replay.change_state('configure')):
            raise RuntimeError('sensor_replay did not configure')
        deadline = time.monotonic() + 30
        while not node.count_publishers('/bench/imu') and time.monotonic() < deadline:
            time.sleep(0.05)
        replay.change_state('activate')
        deadline = time.monotonic() + seconds * 3 + 60
        while replay.get_state() != 'inactive' and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        finish()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return result, arrivals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='10 s per pacing instead of 60 s')
    parser.add_argument('--seconds', type=float, default=None, help='data seconds per pacing')
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)

    with tempfile.TemporaryDirectory() as tmp:
        minutes = max(1.0, np.ceil(seconds / 60) + 0.5)
        path = synthetic.write_subject(tmp, 1, minutes, seed=0, chest=False)
        subject = dalia.load_subject(path)
        events = [e for e in subject_events(subject, 0.0, seconds) if isinstance(e, ImuSample)]
        print(f'subject {subject.name}: {seconds:g} s of data per pacing at 1x '
              f'({len(events)} imu samples at 32 Hz); machine load: '
              f'{Path("/proc/loadavg").read_text().split()[0]}')

        finish = progress_during(seconds, 'baseline sleep(1/32) loop')
        base = baseline_sleep_loop(events)
        finish()
        finish = progress_during(seconds, 'TimelinePlayer (anchored schedule)')
        ours = player_loop(subject, seconds)
        finish()
        result, arrivals = node_run(path, seconds)

    rows = [summary('baseline: sleep(1/32) per sample', base),
            summary('TimelinePlayer, in process (no-op publish)', ours)]
    match = re.search(r'lateness mean ([\d.]+) ms, p95 ([\d.]+) ms, max ([\d.]+) ms',
                      result.stdout + result.stderr)
    print()
    print_table(rows)
    if match:
        mean, p95, worst = map(float, match.groups())
        print(f'{"sensor_replay node (its own report)":44s} {"":7s} {mean:9.3f} {"":9s} {p95:9.3f} '
              f'{worst:9.3f}')
    else:
        print(f'sensor_replay node: no summary in its log (exit {result.returncode}):\n'
              f'{result.stderr[-2000:]}')
    drift_base = (base[-1] - base[0]) * 1e3
    print()
    print(f'drift over {seconds:g} s: baseline {drift_base:+.1f} ms (last - first lateness), '
          f'TimelinePlayer {(ours[-1] - ours[0]) * 1e3:+.3f} ms')
    print(f'ratios baseline / TimelinePlayer: mean {rows[0]["mean"] / rows[1]["mean"]:.1f}x, '
          f'p95 {rows[0]["p95"] / rows[1]["p95"]:.1f}x, max {rows[0]["max"] / rows[1]["max"]:.1f}x')
    if arrivals:
        arrival, stamp = np.array(arrivals).T
        delay = summary('node -> subscriber: arrival - header stamp', arrival - stamp)
        print_table([delay])
        periods = (stamp - stamp[0]) * 32
        grid_error_ms = np.abs(periods - np.round(periods)).max() / 32 * 1e3
        print(f'stamps: {len(stamp)} imu received of {len(events)}; every stamp within '
              f'{grid_error_ms:.3f} ms of the 32 Hz grid started by the first (no drift)')
    return 0 if result.returncode == 0 and match else 1


if __name__ == '__main__':
    sys.exit(main())
