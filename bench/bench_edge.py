"""Benchmark: the edge footprint. Goal: <= 150 MB for the encoder node process.

1. The encoder node alone, onnxruntime vs torch: each variant runs in a fresh process that
   starts rclpy, builds the real ``activity_encoder`` node (muse_encoder.activity_encoder_node)
   with ``backend`` onnx or torch, pushes windows through its encoder (features + CNN, one
   thread), and reports its resident set size (VmRSS now, VmHWM peak) from /proc/self/status
   and which heavy packages got imported. A process that only starts rclpy is the floor of
   any ROS node in this workspace.
2. The whole graph at rate 1 (``--replay S``, 0 = skip): ``muse_run`` replays S seconds of a
   synthetic subject in real time (local synth server, null audio sink); every 0.5 s this
   process reads each node's /proc/<pid>/status and /proc/<pid>/stat, and reports per node
   the peak resident memory and the CPU share (CPU seconds / wall seconds, in % of one core)
   between the graph becoming active and the end of the replay.

    ./muse.sh exec python bench/bench_edge.py [--quick] [--windows N] [--replay S]
"""

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import threading
import time

GOAL_MB = 150.0
HEAVY = ('torch', 'scipy', 'librosa', 'numba', 'pandas')
# The nodes that run on the wearer's side; the music server (and the session recorder, an
# evaluation tool) are reported too but are not part of the edge budget.
EDGE_NODES = ('sensor_replay', 'activity_encoder', 'prompt_builder', 'cloud_bridge', 'audio_player')
OTHER_PROCESSES = ('session_recorder', 'muse_music_server')

CHILD = r'''
import json, os, sys
for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ[var] = '1'
variant, windows = sys.argv[1], int(sys.argv[2])

def status():
    fields = {}
    with open('/proc/self/status') as f:
        for line in f:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                fields[key] = int(value.split()[0]) / 1024
    return fields

import rclpy
rclpy.init(args=['--ros-args', '-p', f'backend:={variant}'] if variant != 'rclpy' else None)
if variant != 'rclpy':
    import numpy as np
    from muse_encoder.activity_encoder_node import ActivityEncoderNode
    from muse_encoder.statics import Statics
    node = ActivityEncoderNode()
    assert node.start(), 'the encoder node did not configure and activate'
    rng = np.random.default_rng(0)
    t = np.arange(256) / 32
    for i in range(windows):
        window = (np.array([0.1, 0.2, 0.97]) + 0.3 * np.sin(2 * np.pi * (1 + i % 7 * 0.2) * t)[:, None]
                  + 0.02 * rng.standard_normal((256, 3))).astype(np.float32)
        node._encoder.predict(window, 32.0, Statics(heart_rate_bpm=90))
    result = status()
    node.finish()
    node.destroy_node()
else:
    result = status()
result['torch_imported'] = 'torch' in sys.modules
result['heavy_imported'] = [m for m in sys.argv[3].split(',') if m in sys.modules]
print(json.dumps(result))
'''


def run(variant, windows):
    done = subprocess.run([sys.executable, '-c', CHILD, variant, str(windows), ','.join(HEAVY)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f'{variant} run failed:\n{done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def _proc_sample(pid):
    """(VmRSS MB, VmHWM MB, CPU seconds) of a live process, or None once it is gone."""
    try:
        with open(f'/proc/{pid}/status') as f:
            fields = {k: v for k, _, v in (line.partition(':') for line in f)}
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read().rsplit(')', 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ticks = os.sysconf('SC_CLK_TCK')
    cpu_s = (int(stat[11]) + int(stat[12])) / ticks      # utime + stime
    return (int(fields['VmRSS'].split()[0]) / 1024, int(fields['VmHWM'].split()[0]) / 1024, cpu_s)


def _children(parent):
    """{process name: pid} of the direct children of ``parent`` that are MUSE graph processes."""
    found = {}
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text().rsplit(')', 1)[1].split()
            argv = (entry / 'cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        if int(stat[1]) != parent:
            continue
        names = {Path(a.decode(errors='replace')).name for a in argv[:2]}
        for name in EDGE_NODES + OTHER_PROCESSES:
            if name in names:
                found[name] = int(entry.name)
    return found


def replay_graph(seconds):
    """Run the whole graph at rate 1 for ``seconds`` of data; per process: peak RSS, median
    RSS and CPU share while the replay runs."""
    out = tempfile.mkdtemp(prefix='bench_edge_')
    minutes = seconds / 60 + 1
    runner = subprocess.Popen(
        [sys.executable, '-m', 'muse_bringup.runner', '--rate', '1', '--duration-s', str(seconds),
         '--synthetic-minutes', f'{minutes:g}', '--sink', 'null', '--quiet', '--tail-s', '1',
         '--output-dir', out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    active, finished, log = threading.Event(), threading.Event(), []

    def follow():
        for line in runner.stdout:
            log.append(line)
            if 'graph active' in line:
                active.set()
            if 'replay finished' in line:
                finished.set()
    threading.Thread(target=follow, daemon=True).start()
    samples = {}                      # name -> [(wall, rss, hwm, cpu)]
    while runner.poll() is None and not finished.is_set():
        now = time.monotonic()
        for name, pid in _children(runner.pid).items():
            sample = _proc_sample(pid)
            if sample is not None and active.is_set():
                samples.setdefault(name, []).append((now, *sample))
        time.sleep(0.5)
    runner.wait(timeout=120)
    if not active.is_set() or not samples:
        raise SystemExit('the graph never became active:\n' + ''.join(log[-40:]))
    result = {}
    for name, rows in samples.items():
        wall = rows[-1][0] - rows[0][0]
        rss = sorted(r[1] for r in rows)
        result[name] = {'rss_mb': rss[len(rss) // 2], 'peak_mb': max(r[2] for r in rows),
                        'cpu_percent': 100 * (rows[-1][3] - rows[0][3]) / wall if wall > 0 else float('nan'),
                        'seconds': wall}
    return result


def print_graph(result, seconds):
    print(f'\nwhole graph at rate 1, {seconds:g} s of data (muse_run, local synth server, null sink); '
          'from "graph active" to the end of the replay')
    print(f'{"process":22s} {"median RSS MB":>14s} {"peak MB":>8s} {"CPU % of one core":>18s}')
    edge_peak, edge_cpu = 0.0, 0.0
    for name in EDGE_NODES + OTHER_PROCESSES:
        if name in result:
            r = result[name]
            tag = '' if name in EDGE_NODES else '  (not edge)'
            print(f'{name:22s} {r["rss_mb"]:14.1f} {r["peak_mb"]:8.1f} {r["cpu_percent"]:18.1f}{tag}')
            if name in EDGE_NODES:
                edge_peak += r['peak_mb']
                edge_cpu += r['cpu_percent']
    print(f'{"edge nodes together":22s} {"":14s} {edge_peak:8.1f} {edge_cpu:18.1f}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer windows')
    parser.add_argument('--windows', type=int, default=None, help='windows per process (default 500, quick 100)')
    parser.add_argument('--replay', type=float, default=None,
                        help='seconds of data to replay through the whole graph at rate 1 '
                             '(default 120, quick 40; 0 = skip)')
    args = parser.parse_args(argv)
    windows = args.windows or (100 if args.quick else 500)
    replay_s = args.replay if args.replay is not None else (40.0 if args.quick else 120.0)
    results = {variant: run(variant, windows) for variant in ('rclpy', 'onnx', 'torch')}
    print(f'\nencoder node process, {windows} windows through features + CNN, 1 thread '
          f'({os.cpu_count()} CPUs)')
    print(f'{"process":34s} {"RSS MB":>8s} {"peak MB":>8s}  heavy packages imported')
    labels = {'rclpy': 'rclpy only (floor of any node)', 'onnx': 'activity_encoder, backend onnx',
              'torch': 'activity_encoder, backend torch'}
    for variant, r in results.items():
        print(f'{labels[variant]:34s} {r["VmRSS"]:8.1f} {r["VmHWM"]:8.1f}  {", ".join(r["heavy_imported"]) or "none"}')
    onnx, torch = results['onnx'], results['torch']
    print(f'\nonnx / torch peak RSS: {onnx["VmHWM"] / torch["VmHWM"]:.2f} '
          f'({torch["VmHWM"] - onnx["VmHWM"]:.0f} MB less); above the rclpy floor: onnx '
          f'{onnx["VmHWM"] - results["rclpy"]["VmHWM"]:.0f} MB, torch '
          f'{torch["VmHWM"] - results["rclpy"]["VmHWM"]:.0f} MB')
    verdict = 'meets' if onnx['VmHWM'] <= GOAL_MB else 'MISSES'
    print(f'goal <= {GOAL_MB:g} MB for the node process: onnx peak {onnx["VmHWM"]:.1f} MB {verdict} it')
    if replay_s > 0:
        print_graph(replay_graph(replay_s), replay_s)
    if onnx['heavy_imported']:
        print(f'ERROR: the onnx node imported {", ".join(onnx["heavy_imported"])}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
