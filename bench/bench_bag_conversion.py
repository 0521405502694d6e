"""Benchmark: PPG-DaLiA subject -> rosbag2 conversion speed, MCAP and sqlite3.

Measured in one run, on the same synthetic subject (wrist data only; chest signals are not
converted):

- baseline: building and CDR-serialising every message, written nowhere (what any
  converter pays before storage),
- ``muse_sensors.bag.write_bag`` into MCAP and into sqlite3 (the converter itself),
- reading each bag back into the replay timeline (``bag.bag_events``, what the replay node
  does when it plays a bag).

Speed is seconds of data per second of conversion (x real time). Prints median and p95 over
the repetitions and the ratio of each storage to the serialise-only baseline.

    ./muse.sh exec python bench/bench_bag_conversion.py [--quick] [--minutes M] [--runs N]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from muse_sensors import bag, dalia, synthetic
from muse_sensors.replay import subject_events


def serialise_only(subject):
    """The baseline: every message built and serialised, nothing stored."""
    from muse_common.rosbag_types import muse_typestore
    from muse_sensors.bag import _MessageFactory
    from muse_sensors.replay import ActivityLabel, HeartRateSample, ImuSample, ProfileRecord

    store = muse_typestore()
    make = _MessageFactory(store, 1.7e9, 'wrist')
    builders = {ImuSample: (make.imu, bag.IMU_TYPE),
                HeartRateSample: (make.heart_rate, bag.HEART_RATE_TYPE),
                ProfileRecord: (make.profile, bag.PROFILE_TYPE),
                ActivityLabel: (make.ground_truth, bag.ACTIVITY_TYPE)}
    total = 0
    for event in subject_events(subject):
        build, msgtype = builders[type(event)]
        total += len(store.serialize_cdr(build(event), msgtype))
    return total


def measure(label, fn, runs, data_s):
    times = []
    for _ in tqdm(range(runs), desc=label, unit='run', leave=False, file=sys.stderr):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    times = np.array(times)
    return {'label': label, 'median_s': float(np.median(times)),
            'p95_s': float(np.percentile(times, 95)), 'speed': data_s / float(np.median(times))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='5-minute subject, 2 runs')
    parser.add_argument('--minutes', type=float, default=None,
                        help='subject length (default 30, quick 5)')
    parser.add_argument('--runs', type=int, default=None, help='repetitions (default 3, quick 2)')
    args = parser.parse_args()
    minutes = args.minutes or (5.0 if args.quick else 30.0)
    runs = args.runs or (2 if args.quick else 3)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = synthetic.write_subject(tmp, 1, minutes, seed=0, chest=False)
        began = time.perf_counter()
        subject = dalia.load_subject(path)
        load_s = time.perf_counter() - began
        n_messages = sum(1 for _ in subject_events(subject))
        data_s = subject.duration_s
        print(f'subject {subject.name}: {data_s:.0f} s of data, {n_messages} messages; '
              f'loading the pickle took {load_s * 1e3:.0f} ms; {runs} runs each')

        rows = [measure('baseline: build + serialise only', lambda: serialise_only(subject),
                        runs, data_s)]
        sizes = {}
        for storage in bag.STORAGES:
            out = tmp / storage

            def convert(storage=storage, out=out):
                shutil.rmtree(out, ignore_errors=True)
                bag.write_bag(subject, out, storage, start_time_s=1.7e9)

            rows.append(measure(f'write_bag {storage}', convert, runs, data_s))
            sizes[storage] = sum(f.stat().st_size for f in out.iterdir())
            info = bag.bag_info(out)
            rows.append(measure(f'read back {storage} (bag_events)',
                                lambda info=info: sum(1 for _ in bag.bag_events(info)),
                                runs, data_s))

    print(f'{"step":36s} {"median":>9s} {"p95":>9s} {"speed":>14s}')
    for r in rows:
        print(f'{r["label"]:36s} {r["median_s"]:8.3f}s {r["p95_s"]:8.3f}s '
              f'{r["speed"]:10.0f}x rt')
    base = rows[0]['speed']
    for r in rows[1:]:
        print(f'{r["label"]:36s} {r["speed"] / base:6.2f} of the baseline speed')
    for storage, size in sizes.items():
        print(f'{storage} bag: {size / 1e6:.1f} MB ({size / data_s / 1e3:.1f} kB per data second)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
