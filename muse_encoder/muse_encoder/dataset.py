"""Labelled acceleration windows: PPG-DaLiA subjects, a generic .npz, synthetic domain-randomised
streams, or the seglearn smartwatch exercise set.

Windows follow PPG-DaLiA's heart-rate grid: 8 s long, every 2 s from the first wrist sample,
so window j is data time ``[2 j, 2 j + 8)`` s and its heart rate is ``label[j]`` (what the
replay node has published when the window closes: ``Subject.heart_rate_at(2 j + 8)``).

A window's activity is the most frequent activity id inside it. Transient windows (id 0,
PPG-DaLiA's label for the periods between protocol activities) are dropped for PPG-DaLiA
subjects by default, as PPG-DaLiA practice does for evaluation (``transient='keep'`` trains
and evaluates them as class 0). For data with its own label names, id 0 is a class like any
other and is only dropped when asked (``transient='drop'``); drops are always reported.

The generic ``.npz`` holds:

- ``acc`` (N, T, 3) acceleration; ``sample_rate`` (scalar, Hz), T = 8 s worth of samples.
  Rates below 16 Hz are resampled to 32 Hz (with a note), not refused;
- optional ``units``: 'g' (default), 'm/s^2' or 'e4_counts'. Without it, data whose median
  magnitude is ~9.8 is taken for m/s^2, converted, and a warning names the file;
- ``labels`` (N,) integer class ids; optional ``label_names`` (C,) the name of every id (else
  PPG-DaLiA's 9 activities); optional ``subjects`` (N,) subject ids (str or int) and
  ``split`` (N,) 'train' / 'test' (a given split is used instead of the subject split; one
  of them is required for training);
- optional ``heart_rate_bpm`` (N,) and ``statics`` (N, 4) = age_years, sex_female (1 female,
  0 male), height_cm, weight_kg; NaN marks unknown values.
"""

from dataclasses import astuple, dataclass, field
from fractions import Fraction
import io
from pathlib import Path
import sys
import zipfile

import numpy as np
from muse_common import activities
from tqdm import tqdm

from muse_encoder.features import (MIN_INPUT_RATE_HZ, UNIT_SCALE, FeatureInputError,
                                   looks_like_ms2, to_g)
from muse_encoder.statics import STATIC_INPUTS, Statics, sex_female_from_code

TRANSIENT_ID = 0
TRANSIENT_POLICIES = ('auto', 'drop', 'keep')
SPLITS = ('train', 'test')
LOW_RATE_TARGET_HZ = 32.0      # where windows recorded below MIN_INPUT_RATE_HZ are resampled to


def note(message):
    """A remark about the data that the user should see (stderr, one line)."""
    print(f'note: {message}', file=sys.stderr)


def dalia_class_names():
    from muse_common.activities import ACTIVITY_NAMES
    return tuple(ACTIVITY_NAMES)


class DatasetError(ValueError):
    """Training data is missing, malformed or unusable; the message names the input."""


@dataclass
class WindowSet:
    """N labelled windows of one sample rate."""

    acc_g: np.ndarray          # (N, T, 3) float32, g
    sample_rate: float         # Hz
    labels: np.ndarray         # (N,) int64, PPG-DaLiA activity ids
    subjects: np.ndarray       # (N,) str
    statics: np.ndarray        # (N, 5) float32 in STATIC_INPUTS order, NaN = unknown
    source: str = ''
    class_names: tuple = field(default_factory=dalia_class_names)
    split: np.ndarray = None   # (N,) 'train' / 'test' given by the data, or None

    def __len__(self):
        return len(self.labels)

    def subset(self, mask):
        return WindowSet(self.acc_g[mask], self.sample_rate, self.labels[mask],
                         self.subjects[mask], self.statics[mask], self.source, self.class_names,
                         None if self.split is None else self.split[mask])


def transient_dropped(policy, class_names):
    """Whether ``policy`` drops class id 0 for data with these class names."""
    if policy not in TRANSIENT_POLICIES:
        raise DatasetError(f'transient policy must be one of {TRANSIENT_POLICIES}, got {policy!r}')
    if policy == 'auto':
        return tuple(class_names) == dalia_class_names()
    return policy == 'drop'


def apply_transient_policy(data, policy):
    """``data`` (anything with labels, subset, class_names) without id 0 where the policy
    says so; a note tells how many windows went."""
    if not transient_dropped(policy, data.class_names):
        return data
    keep = data.labels != TRANSIENT_ID
    if (~keep).any():
        note(f'{int((~keep).sum())} of {len(keep)} windows of class 0 ({data.class_names[0]!r}) '
             f'left out (transient policy {policy!r}; --transient keep keeps them)')
    return data.subset(keep)


def _window_labels(activity, starts_s, window_s, activity_hz, num_classes):
    """Majority 4 Hz activity id of each window (ties: the lower id, i.e. transient first)."""
    per_window = int(round(window_s * activity_hz))
    first = np.round(np.asarray(starts_s) * activity_hz).astype(int)
    index = np.minimum(first[:, None] + np.arange(per_window), len(activity) - 1)
    counts = (activity[index][..., np.newaxis] == np.arange(num_classes)).sum(axis=1)
    return counts.argmax(axis=1)


def windows_from_subject(subject, features):
    """All windows of one muse_sensors.dalia.Subject."""
    from muse_sensors import dalia
    windows, starts = features.sliding_windows(subject.acc_g, dalia.ACC_HZ)
    starts_s = starts / dalia.ACC_HZ
    window_s = features.params.window_s
    labels = _window_labels(subject.activity, starts_s, window_s, dalia.ACTIVITY_HZ,
                            activities.NUM_ACTIVITIES)
    profile = subject.profile
    person = Statics(age_years=profile.age, sex_female=sex_female_from_code(profile.sex_code),
                     height_cm=profile.height_cm, weight_kg=profile.weight_kg)
    statics = np.array([astuple(person.with_heart_rate(subject.heart_rate_at(t + window_s)))
                        for t in starts_s], dtype=np.float32).reshape(len(starts), len(STATIC_INPUTS))
    return WindowSet(np.ascontiguousarray(windows, dtype=np.float32), float(dalia.ACC_HZ),
                     labels.astype(np.int64), np.full(len(labels), subject.name, dtype=object),
                     statics, source=str(subject.path))


def load_dalia_folder(folder, features, progress=True):
    """Windows of every subject pickle under ``folder`` (muse_sensors.dalia.find_subjects)."""
    from muse_sensors import dalia
    try:
        paths = dalia.find_subjects(folder)
    except FileNotFoundError as exc:
        raise DatasetError(str(exc)) from exc
    if not paths:
        raise DatasetError(f'{folder}: no PPG-DaLiA subject pickles (S<i>/S<i>.pkl or *.pkl) found')
    sets = []
    for path in tqdm(paths, desc='loading subjects', unit='subject', disable=not progress):
        try:
            subject = dalia.load_subject(path)
            sets.append(windows_from_subject(subject, features))
        except (dalia.DaliaFormatError, FeatureInputError) as exc:
            raise DatasetError(f'cannot use subject {path}: {exc}') from exc
    names = [s.subjects[0] for s in sets]
    if len(set(names)) != len(names):
        raise DatasetError(f'{folder}: subject names repeat ({sorted(names)}); the subject split needs unique names')
    return concatenate(sets, source=str(folder))


def concatenate(sets, source=''):
    rates = {s.sample_rate for s in sets}
    if len(rates) != 1:
        raise DatasetError(f'windows of different sample rates cannot be mixed: {sorted(rates)}')
    return WindowSet(np.concatenate([s.acc_g for s in sets]), rates.pop(),
                     np.concatenate([s.labels for s in sets]),
                     np.concatenate([s.subjects for s in sets]),
                     np.concatenate([s.statics for s in sets]), source=source,
                     class_names=sets[0].class_names)


def _string_array(values):
    return np.asarray(values).astype(str).astype(object)


def load_npz(path, features, num_classes=None):
    """Windows from a generic labelled-window .npz (layout in the module docstring).

    ``num_classes``: without ``label_names`` in the file, ids must lie below it (default:
    PPG-DaLiA's 9)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'{path}: no such .npz file')
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f'{path}: not a readable .npz file ({exc})') from exc
    with data:
        missing = [k for k in ('acc', 'sample_rate', 'labels') if k not in data]
        if missing:
            raise DatasetError(f'{path}: missing arrays {missing} (found {sorted(data.files)})')
        acc = np.asarray(data['acc'])
        rate = np.asarray(data['sample_rate'])
        labels = np.asarray(data['labels'])
        optional = {k: np.asarray(data[k]) for k in ('subjects', 'split', 'label_names', 'units')
                    if k in data}
        hr = np.asarray(data['heart_rate_bpm'], dtype=np.float64) if 'heart_rate_bpm' in data else None
        person = np.asarray(data['statics'], dtype=np.float64) if 'statics' in data else None
    if rate.size != 1 or rate.dtype.kind not in 'iuf':
        raise DatasetError(f"{path}: 'sample_rate' must be one number in Hz, got {rate!r}")
    rate = float(rate.reshape(()))
    if acc.ndim != 3 or acc.shape[2] != 3 or acc.dtype.kind not in 'iuf':
        raise DatasetError(f"{path}: 'acc' must be shaped (N, T, 3) and numeric, got {acc.shape} {acc.dtype}")
    n = acc.shape[0]
    if not (np.isfinite(rate) and rate > 0):
        raise DatasetError(f"{path}: 'sample_rate' must be a positive rate in Hz, got {rate!r}")
    expected = int(round(features.params.window_s * rate))
    if acc.shape[1] != expected:
        raise DatasetError(f"{path}: 'acc' windows have {acc.shape[1]} samples, expected {expected} "
                           f'({features.params.window_s:g} s at {rate:g} Hz)')
    if not np.isfinite(acc).all():
        raise DatasetError(f"{path}: 'acc' contains NaN or inf")
    if labels.shape != (n,):
        raise DatasetError(f"{path}: 'labels' must be shaped ({n},), got {labels.shape}")
    if 'label_names' in optional:
        class_names = tuple(str(v) for v in optional['label_names'].reshape(-1))
        if len(set(class_names)) != len(class_names) or not class_names:
            raise DatasetError(f"{path}: 'label_names' must be distinct names, got {list(class_names)}")
    else:
        class_names = dalia_class_names()
        if num_classes is not None and num_classes != len(class_names):
            class_names = tuple(f'class_{i}' for i in range(num_classes))
    if labels.dtype.kind not in 'iu' or (n and (labels.min() < 0 or labels.max() >= len(class_names))):
        raise DatasetError(f"{path}: 'labels' must be integer ids 0..{len(class_names) - 1}"
                           + ('' if 'label_names' in optional else " (or give 'label_names')"))
    subjects = split = None
    if 'subjects' in optional:
        subjects = _string_array(optional['subjects'])
        if subjects.shape != (n,):
            raise DatasetError(f"{path}: 'subjects' must be shaped ({n},), got {subjects.shape}")
    if 'split' in optional:
        split = _string_array(optional['split'])
        if split.shape != (n,) or not set(split) <= set(SPLITS):
            raise DatasetError(f"{path}: 'split' must be shaped ({n},) with values {SPLITS}, "
                               f'got shape {split.shape}, values {sorted(set(split.tolist()))[:5]}')
    if subjects is None:
        subjects = np.full(n, path.stem, dtype=object)
    if 'units' in optional:
        units = str(optional['units'].reshape(()))
        if units not in UNIT_SCALE:
            raise DatasetError(f"{path}: 'units' must be one of {tuple(UNIT_SCALE)}, got {units!r}")
    elif looks_like_ms2(acc):
        units = 'm/s^2'
        print(f'warning: {path}: acceleration has a median magnitude of '
              f'{np.median(np.linalg.norm(acc.reshape(-1, 3), axis=1)):.2f}, which looks like m/s^2 '
              "with gravity, not g: converted to g (store units='g' or 'm/s^2' to say so)",
              file=sys.stderr)
    else:
        units = 'g'
    acc = to_g(acc, units)
    if rate < MIN_INPUT_RATE_HZ:
        acc, rate = _resample_windows(acc, rate, LOW_RATE_TARGET_HZ)
        note(f'{path}: {n} windows at {expected / features.params.window_s:g} Hz are below the '
             f'features\' {MIN_INPUT_RATE_HZ:g} Hz minimum: resampled to {rate:g} Hz')
    try:
        features.window_samples(rate)
    except FeatureInputError as exc:
        raise DatasetError(f"{path}: 'sample_rate': {exc}") from exc
    statics = np.full((n, len(STATIC_INPUTS)), np.nan, dtype=np.float32)
    if hr is not None:
        if hr.shape != (n,):
            raise DatasetError(f"{path}: 'heart_rate_bpm' must be shaped ({n},), got {hr.shape}")
        statics[:, 0] = hr
    if person is not None:
        if person.shape != (n, len(STATIC_INPUTS) - 1):
            raise DatasetError(f"{path}: 'statics' must be shaped ({n}, {len(STATIC_INPUTS) - 1}) "
                               f'({", ".join(STATIC_INPUTS[1:])}), got {person.shape}')
        statics[:, 1:] = person
    # Implausible values (0 bpm, age 0, ...) mean unknown, exactly as at run time.
    statics = np.array([astuple(Statics(*row)) for row in statics], dtype=np.float32).reshape(n, -1)
    return WindowSet(acc.astype(np.float32), rate, labels.astype(np.int64), subjects, statics,
                     source=str(path), class_names=class_names, split=split)


def _resample_windows(acc, rate, target):
    from scipy.signal import resample_poly
    ratio = Fraction(target / rate).limit_denominator(100)
    out = resample_poly(acc, ratio.numerator, ratio.denominator, axis=1, padtype='line')
    new_rate = rate * float(ratio)
    return out.astype(np.float32), new_rate


def save_npz(path, windows, units='g'):
    """Write a WindowSet in the generic .npz layout (the inverse of load_npz)."""
    extra = {} if windows.split is None else {'split': windows.split.astype(str)}
    np.savez_compressed(path, acc=windows.acc_g, sample_rate=windows.sample_rate,
                        labels=windows.labels, subjects=windows.subjects.astype(str),
                        label_names=np.array(windows.class_names), units=units,
                        heart_rate_bpm=windows.statics[:, 0], statics=windows.statics[:, 1:], **extra)


def load_windows(path, features, num_classes=None, progress=True):
    """A folder of PPG-DaLiA subjects, one subject pickle, or a .npz file."""
    path = Path(path)
    if path.is_dir():
        return load_dalia_folder(path, features, progress=progress)
    if path.suffix == '.npz':
        return load_npz(path, features, num_classes)
    if path.suffix == '.pkl' and path.is_file():
        from muse_sensors import dalia
        try:
            return windows_from_subject(dalia.load_subject(path), features)
        except (dalia.DaliaFormatError, FeatureInputError) as exc:
            raise DatasetError(f'cannot use subject {path}: {exc}') from exc
    if not path.exists():
        raise DatasetError(f'{path}: no such file or folder')
    raise DatasetError(f'{path}: expected a folder of PPG-DaLiA subjects, a subject .pkl or a .npz of windows')


def stream_windows(acc_g, rate_hz, per_sample_labels, features, recent_s=None):
    """Windows (W, T, 3) of a stream every stride, and each one's label: the majority over the
    whole window, or over its last ``recent_s`` seconds (what the wearer is doing now, which
    is what the node should publish at the window's end)."""
    windows, starts = features.sliding_windows(acc_g, rate_hz)
    length = windows.shape[1]
    skip = 0 if recent_s is None else max(0, length - int(round(recent_s * rate_hz)))
    labels = np.array([np.bincount(per_sample_labels[s + skip:s + length]).argmax() for s in starts],
                      dtype=np.int64)
    return np.ascontiguousarray(windows, dtype=np.float32), labels, starts


def windows_from_stream(stream, features, recent_s=None):
    """Windows of one muse_sensors.synthetic.WristStream, converted to g by its declared units
    (labels as in :func:`stream_windows`)."""
    acc_g = to_g(stream.acc, stream.units)
    windows, labels, starts = stream_windows(acc_g, stream.rate_hz, stream.activity, features, recent_s)
    statics = np.full((len(labels), len(STATIC_INPUTS)), np.nan, np.float32)
    if getattr(stream, 'heart_rate_bpm', None) is not None:
        end_s = (starts + windows.shape[1]) / stream.rate_hz
        statics[:, 0] = np.interp(end_s, np.arange(len(stream.heart_rate_bpm)) / 4.0,
                                  stream.heart_rate_bpm)
    if getattr(stream, 'profile', None) is not None:
        statics[:, 1:] = stream.profile
    return WindowSet(windows, float(stream.rate_hz), labels, np.full(len(labels), stream.name, dtype=object),
                     statics, source=f'synthetic {stream.name}')


# --------------------------------------------------------------- seglearn smartwatch set

WATCH_WHEEL = 'seglearn-1.2.5-py3-none-any.whl'
WATCH_MEMBER = 'seglearn/data/watch_dataset.npy'
WATCH_RATE_HZ = 50.0
DEFAULT_CACHE = Path('.cache') / 'wheels'


def fetch_watch_wheel(cache_dir=DEFAULT_CACHE):
    """The seglearn 1.2.5 wheel in ``cache_dir``, downloaded once with ``pip download`` (the
    data is neither committed nor installed)."""
    cache_dir = Path(cache_dir)
    wheel = cache_dir / WATCH_WHEEL
    if not wheel.is_file():
        import subprocess
        cache_dir.mkdir(parents=True, exist_ok=True)
        note(f'downloading {WATCH_WHEEL} into {cache_dir} (pip download --no-deps)')
        done = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
                               'seglearn==1.2.5', '-d', str(cache_dir)], capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise DatasetError(f'cannot download seglearn==1.2.5 into {cache_dir}: '
                               f'{done.stderr.strip()[-300:] or "no wheel written"}')
    return wheel


def load_watch(features, cache_dir=DEFAULT_CACHE, wheel=None):
    """The seglearn smartwatch shoulder-exercise set (10 subjects x 7 exercises x 2 sides,
    6-axis wrist IMU at 50 Hz, accelerometer in g): accelerometer windows every stride,
    class names from the data, subjects 'W<id>'. Series shorter than a window are skipped."""
    wheel = Path(wheel) if wheel else fetch_watch_wheel(cache_dir)
    try:
        with zipfile.ZipFile(wheel) as archive:
            raw = archive.read(WATCH_MEMBER)
        data = np.load(io.BytesIO(raw), allow_pickle=True).item()
        series, y, subject = data['X'], np.asarray(data['y']), np.asarray(data['subject'])
        class_names = tuple(str(v) for v in data['y_labels'])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f'{wheel}: no readable {WATCH_MEMBER} ({exc})') from exc
    sets = []
    for x, label, who in zip(series, y, subject):
        x = np.asarray(x, dtype=np.float32)
        if len(x) < features.window_samples(WATCH_RATE_HZ):
            continue
        windows, starts = features.sliding_windows(x[:, :3], WATCH_RATE_HZ)
        n = len(starts)
        sets.append(WindowSet(np.ascontiguousarray(windows), WATCH_RATE_HZ, np.full(n, int(label)),
                              np.full(n, f'W{int(who)}', dtype=object),
                              np.full((n, len(STATIC_INPUTS)), np.nan, np.float32),
                              class_names=class_names))
    return concatenate(sets, source=f'seglearn watch_dataset ({wheel.name})')


def split_subjects(subjects, test_fraction=0.2, seed=0):
    """Whole subjects to (train, test) name lists: a seeded shuffle, ceil(fraction * n) held out."""
    names = sorted(set(subjects))
    if len(names) < 2:
        raise DatasetError(f'need at least 2 subjects to hold whole subjects out, got {names}')
    order = np.random.default_rng(seed).permutation(len(names))
    n_test = min(len(names) - 1, max(1, int(np.ceil(test_fraction * len(names)))))
    test = sorted(names[i] for i in order[:n_test])
    train = sorted(names[i] for i in order[n_test:])
    return train, test


def stream_to_npz(stream, path, features, recent_s=None):
    """Write a synthetic WristStream as a labelled-window .npz in its own units and rate
    (labels as in :func:`stream_windows`)."""
    windows, labels, _ = stream_windows(stream.acc, stream.rate_hz, stream.activity, features, recent_s)
    np.savez_compressed(path, acc=windows, sample_rate=float(stream.rate_hz), labels=labels,
                        subjects=np.full(len(labels), stream.name), units=stream.units,
                        label_names=np.array(dalia_class_names()))
    return path


def main(argv=None):
    """``python -m muse_encoder.dataset --out DIR [--domain shifted]``: synthetic subjects as
    labelled-window .npz files (one per subject, in the device's own units and rate), e.g.
    for an independent check of a model with ``python -m muse_encoder.evaluate``."""
    import argparse
    from muse_encoder.features import AccelToRGBMel
    from muse_sensors import synthetic
    parser = argparse.ArgumentParser(prog='python -m muse_encoder.dataset', description=main.__doc__)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--domain', choices=('randomised', 'shifted'), default='shifted')
    parser.add_argument('--subjects', type=int, default=4)
    parser.add_argument('--first', type=int, default=901, help='index of the first subject (default 901)')
    parser.add_argument('--minutes', type=float, default=6.0)
    parser.add_argument('--seed', type=int, default=99)
    parser.add_argument('--label-recent-s', type=float, default=None,
                        help='label a window by the majority activity of its last this many seconds '
                        '(as training does, 4); default: of the whole window')
    args = parser.parse_args(argv)
    domain = synthetic.DOMAIN_SHIFTED if args.domain == 'shifted' else synthetic.DOMAIN_RANDOMISED
    features = AccelToRGBMel()
    args.out.mkdir(parents=True, exist_ok=True)
    for index in range(args.first, args.first + args.subjects):
        stream = synthetic.generate_wrist_stream(index, args.minutes, args.seed, balanced=True, domain=domain)
        path = stream_to_npz(stream, args.out / f'{stream.name}.npz', features, args.label_recent_s)
        print(f'{path}: {stream.rate_hz:g} Hz, {stream.units}, gravity '
              f'{"removed" if stream.device["gravity_removed"] else "present"}, cadence x'
              f'{stream.device["cadence_scale"]:.2f}, amplitude x{stream.device["amplitude_scale"]:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
