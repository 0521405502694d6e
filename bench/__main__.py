"""Run the MUSE benchmarks: ``./muse.sh bench [--full] [NAME ...]``.

Each benchmark is a plain script ``bench/bench_<name>.py`` that prints its own numbers and
ratios against a baseline measured in the same run. By default they run with ``--quick``.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from muse_common.domain import claim_domain

BENCH_DIR = Path(__file__).resolve().parent


def main(argv=None):
    available = sorted(p.stem[len('bench_'):] for p in BENCH_DIR.glob('bench_*.py'))
    parser = argparse.ArgumentParser(prog='muse.sh bench', description=__doc__)
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help=f'benchmarks to run (default all): {", ".join(available)}')
    parser.add_argument('--full', action='store_true', help='full-length runs instead of --quick')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f'unknown benchmark(s) {unknown}; available: {available}')
    # The benchmarks that start ROS graphs run them on a domain of their own, held until the
    # last one ends (a ROS_DOMAIN_ID set by the user is used as given).
    lease = claim_domain()
    os.environ.update(lease.env())
    print(f'ROS domain {lease.domain_id}', flush=True)
    results = []
    for name in args.names or available:
        cmd = [sys.executable, str(BENCH_DIR / f'bench_{name}.py')] + ([] if args.full else ['--quick'])
        print(f'\n=== bench {name}: {" ".join(cmd[1:])}', flush=True)
        start = time.monotonic()
        code = subprocess.call(cmd)
        results.append((name, code, time.monotonic() - start))
    print('\n=== summary')
    for name, code, seconds in results:
        print(f'  {name:24s} {"ok" if code == 0 else f"FAILED ({code})":12s} {seconds:7.1f} s')
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == '__main__':
    sys.exit(main())
