"""Labelled acceleration windows for training: from PPG-DaLiA subjects or a generic .npz.

Windows follow PPG-DaLiA's heart-rate grid: 8 s long, every 2 s from the first wrist sample,
so window j is data time ``[2 j, 2 j + 8)`` s and its heart rate is ``label[j]`` (what the
replay node has published when the window closes: ``Subject.heart_rate_at(2 j + 8)``).

A window's activity is the most frequent 4 Hz activity id inside it. Transient windows
(id 0, PPG-DaLiA's label for the periods between protocol activities) are dropped by
default, as PPG-DaLiA practice does for evaluation; ``transient='keep'`` trains and evaluates
them as class 0 instead. Windows that straddle two activities keep the majority label, since
the live encoder sees such windows too.

The generic ``.npz`` holds:

- ``acc`` (N, T, 3) acceleration in g; ``sample_rate`` (scalar, Hz), T = 8 s worth of samples;
- ``labels`` (N,) activity ids 0..8 (PPG-DaLiA's); ``subjects`` (N,) subject ids (str or int);
- optional ``heart_rate_bpm`` (N,) and ``statics`` (N, 4) = age_years, sex_female (1 female,
  0 male), height_cm, weight_kg; NaN marks unknown values.
"""

from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
from muse_common import activities
from tqdm import tqdm

from muse_encoder.features import FeatureInputError
from muse_encoder.statics import STATIC_INPUTS, Statics, sex_female_from_code

TRANSIENT_ID = 0
TRANSIENT_POLICIES = ('drop', 'keep')


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

    def __len__(self):
        return len(self.labels)

    def subset(self, mask):
        return WindowSet(self.acc_g[mask], self.sample_rate, self.labels[mask],
                         self.subjects[mask], self.statics[mask], self.source)

    def apply_transient_policy(self, policy):
        if policy not in TRANSIENT_POLICIES:
            raise DatasetError(f'transient policy must be one of {TRANSIENT_POLICIES}, got {policy!r}')
        return self if policy == 'keep' else self.subset(self.labels != TRANSIENT_ID)


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
                     np.concatenate([s.statics for s in sets]), source=source)


def load_npz(path, features, num_classes):
    """Windows from a generic labelled-window .npz (layout in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'{path}: no such .npz file')
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f'{path}: not a readable .npz file ({exc})') from exc
    with data:
        missing = [k for k in ('acc', 'sample_rate', 'labels', 'subjects') if k not in data]
        if missing:
            raise DatasetError(f'{path}: missing arrays {missing} (found {sorted(data.files)})')
        acc = np.asarray(data['acc'])
        rate = np.asarray(data['sample_rate'])
        labels = np.asarray(data['labels'])
        subjects = np.asarray(data['subjects']).astype(str).astype(object)
        hr = np.asarray(data['heart_rate_bpm'], dtype=np.float64) if 'heart_rate_bpm' in data else None
        person = np.asarray(data['statics'], dtype=np.float64) if 'statics' in data else None
    if rate.size != 1:
        raise DatasetError(f"{path}: 'sample_rate' must be one number in Hz, got shape {rate.shape}")
    rate = float(rate.reshape(()))
    if acc.ndim != 3 or acc.shape[2] != 3:
        raise DatasetError(f"{path}: 'acc' must be shaped (N, T, 3) in g, got {acc.shape}")
    n = acc.shape[0]
    try:
        expected = features.window_samples(rate)
    except FeatureInputError as exc:
        raise DatasetError(f"{path}: 'sample_rate': {exc}") from exc
    if acc.shape[1] != expected:
        raise DatasetError(f"{path}: 'acc' windows have {acc.shape[1]} samples, expected {expected} "
                           f'({features.params.window_s:g} s at {rate:g} Hz)')
    if not np.isfinite(acc).all():
        raise DatasetError(f"{path}: 'acc' contains NaN or inf")
    for name, array in (('labels', labels), ('subjects', subjects)):
        if array.shape != (n,):
            raise DatasetError(f"{path}: '{name}' must be shaped ({n},), got {array.shape}")
    if labels.dtype.kind not in 'iu' or labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(f"{path}: 'labels' must be integer ids 0..{num_classes - 1}")
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
                     source=str(path))


def save_npz(path, windows):
    """Write a WindowSet in the generic .npz layout (the inverse of load_npz)."""
    np.savez_compressed(path, acc=windows.acc_g, sample_rate=windows.sample_rate,
                        labels=windows.labels, subjects=windows.subjects.astype(str),
                        heart_rate_bpm=windows.statics[:, 0], statics=windows.statics[:, 1:])


def load_windows(path, features, num_classes, progress=True):
    """A folder of PPG-DaLiA subjects or a .npz file."""
    path = Path(path)
    if path.is_dir():
        return load_dalia_folder(path, features, progress=progress)
    if path.suffix == '.npz':
        return load_npz(path, features, num_classes)
    raise DatasetError(f'{path}: expected a folder of PPG-DaLiA subjects or a .npz file of windows')


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
