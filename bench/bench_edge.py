"""Benchmark: resident memory of the encoder node process, onnxruntime vs torch (goal <= 150 MB).

Each variant runs in a fresh process that starts rclpy, builds the real ``activity_encoder``
node (muse_encoder.activity_encoder_node) with ``backend`` onnx or torch, pushes windows
through its encoder (features + CNN, one thread), and reports its resident set size (VmRSS
now, VmHWM peak) from /proc/self/status and whether torch got imported. A process that only
starts rclpy is the baseline floor of any ROS node in this workspace.

    ./muse.sh exec python bench/bench_edge.py [--quick] [--windows N]
"""

import argparse
import json
import os
import subprocess
import sys

GOAL_MB = 150.0

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
print(json.dumps(result))
'''


def run(variant, windows):
    done = subprocess.run([sys.executable, '-c', CHILD, variant, str(windows)], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f'{variant} run failed:\n{done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer windows')
    parser.add_argument('--windows', type=int, default=None, help='windows per process (default 500, quick 100)')
    args = parser.parse_args(argv)
    windows = args.windows or (100 if args.quick else 500)
    results = {variant: run(variant, windows) for variant in ('rclpy', 'onnx', 'torch')}
    print(f'\nencoder node process, {windows} windows through features + CNN, 1 thread '
          f'({os.cpu_count()} CPUs)')
    print(f'{"process":34s} {"RSS MB":>8s} {"peak MB":>8s}  torch imported')
    labels = {'rclpy': 'rclpy only (floor of any node)', 'onnx': 'activity_encoder, backend onnx',
              'torch': 'activity_encoder, backend torch'}
    for variant, r in results.items():
        print(f'{labels[variant]:34s} {r["VmRSS"]:8.1f} {r["VmHWM"]:8.1f}  {r["torch_imported"]}')
    onnx, torch = results['onnx'], results['torch']
    print(f'\nonnx / torch peak RSS: {onnx["VmHWM"] / torch["VmHWM"]:.2f} '
          f'({torch["VmHWM"] - onnx["VmHWM"]:.0f} MB less); above the rclpy floor: onnx '
          f'{onnx["VmHWM"] - results["rclpy"]["VmHWM"]:.0f} MB, torch '
          f'{torch["VmHWM"] - results["rclpy"]["VmHWM"]:.0f} MB')
    verdict = 'meets' if onnx['VmHWM'] <= GOAL_MB else 'MISSES'
    print(f'goal <= {GOAL_MB:g} MB for the node process: onnx peak {onnx["VmHWM"]:.1f} MB {verdict} it')
    if onnx['torch_imported']:
        print('ERROR: the onnx node imported torch')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
