"""The training CLI end to end on tiny synthetic subjects, the .npz path (label names, split,
units, low rates, class 0), the seglearn watch loader and cross-validation, the window
labels and heart-rate alignment, the subject split, and clear errors for bad data."""

import io
import json
import zipfile

import numpy as np
import pytest

from muse_encoder import train
from muse_encoder.checkpoint import load_checkpoint
from muse_encoder.dataset import (WATCH_MEMBER, WATCH_WHEEL, DatasetError, load_dalia_folder,
                                  load_npz, load_watch, save_npz, split_subjects)
from muse_encoder.features import AccelToRGBMel
from muse_encoder.inference import ActivityEncoder
from muse_sensors import dalia
from muse_sensors.synthetic import write_subject

ARTEFACTS = ('tiny.pt', 'metrics.json', 'training_curves.png', 'confusion_matrix.png', 'mel_examples.png')


@pytest.fixture(scope='module')
def subjects(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tiny_subjects')
    for index in (1, 2, 3):
        write_subject(folder, index, 2.5, seed=5, balanced=True, chest=False)
    return folder


@pytest.fixture(scope='module')
def features():
    return AccelToRGBMel()


def run_cli(args):
    return train.main(args + ['--epochs', '2', '--threads', '1', '--quiet', '--batch-size', '32'])


def test_tiny_training_run_writes_every_artefact(subjects, tmp_path, capsys):
    out = tmp_path / 'run'
    assert run_cli([str(subjects), '--output-dir', str(out), '--name', 'tiny']) == 0
    for name in ARTEFACTS:
        assert (out / name).stat().st_size > 0, name
    assert 'macro-F1' in capsys.readouterr().out
    metrics = json.loads((out / 'metrics.json').read_text())
    # 3 subjects: one held out, whole.
    assert len(metrics['subjects']['test']) == 1 and len(metrics['subjects']['train']) == 2
    assert not set(metrics['subjects']['test']) & set(metrics['subjects']['train'])
    assert len(metrics['history']) == 2
    assert 0 <= metrics['macro_f1'] <= 1 and 0 <= metrics['accuracy'] <= 1
    assert set(metrics['per_class_f1']) == set(metrics['evaluated_classes'])
    calibration = metrics['calibration']
    assert calibration['temperature'] > 0 and 0 <= calibration['ece_before'] <= 1
    assert 0 <= calibration['ece_after'] <= 1
    matrix = np.array(metrics['confusion_matrix'])
    assert matrix.shape == (9, 9) and matrix.sum() == metrics['windows']['test']
    checkpoint = load_checkpoint(out / 'tiny.pt')
    assert checkpoint.training['macro_f1'] == metrics['macro_f1']
    assert checkpoint.temperature == pytest.approx(calibration['temperature'])
    assert checkpoint.feature_params.representation == 'invariant'
    # The checkpoint is usable for inference as it is.
    encoder = ActivityEncoder(out / 'tiny.pt', backend='torch')
    assert encoder.predict(np.zeros((256, 3), np.float32) + [0, 0, 1], 32).probabilities.shape == (9,)


@pytest.mark.parametrize('policy', ['drop', 'keep'])
def test_transient_windows_are_dropped_or_kept_as_class_zero(subjects, features, tmp_path, policy):
    # Tiny subjects have transients too short to label a window, so mark some by hand.
    windows = load_dalia_folder(subjects, features, progress=False)
    windows.labels[::4] = 0
    save_npz(tmp_path / 'windows.npz', windows)      # with PPG-DaLiA's label names
    out = tmp_path / policy
    assert run_cli([str(tmp_path / 'windows.npz'), '--output-dir', str(out), '--name', 'tiny',
                    '--transient', policy]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    transient_rows = np.array(metrics['confusion_matrix'])[0].sum()
    if policy == 'drop':
        assert 'transient' not in metrics['evaluated_classes'] and transient_rows == 0
    else:
        assert 'transient' in metrics['evaluated_classes'] and transient_rows > 0


def test_synthetic_option_trains_on_domain_randomised_subjects(tmp_path):
    out = tmp_path / 'synthetic'
    assert run_cli(['--synthetic', '2', '--minutes', '2.5', '--seed', '3',
                    '--output-dir', str(out), '--name', 'tiny', '--onnx']) == 0
    assert (out / 'tiny.onnx').stat().st_size > 0
    data = json.loads((out / 'metrics.json').read_text())['data']
    assert 'domain-randomised' in data and '2 subjects' in data and 'rates_hz' in data


def test_npz_of_windows_trains_too(subjects, features, tmp_path):
    windows = load_dalia_folder(subjects, features, progress=False)
    save_npz(tmp_path / 'windows.npz', windows)
    out = tmp_path / 'npz'
    assert run_cli([str(tmp_path / 'windows.npz'), '--output-dir', str(out), '--name', 'tiny']) == 0
    assert json.loads((out / 'metrics.json').read_text())['windows']['test'] > 0


def test_window_labels_and_heart_rate_follow_the_dataset_grid(subjects, features):
    subject = dalia.load_subject(dalia.find_subjects(subjects)[0])
    windows = load_dalia_folder(subjects, features, progress=False)
    mine = windows.subset(windows.subjects == subject.name)
    n = len(mine)
    assert n == (len(subject.acc_g) - 256) // 64 + 1
    for j in (0, n // 2, n - 1):
        np.testing.assert_array_equal(mine.acc_g[j], subject.acc_g[64 * j:64 * j + 256])
        # Window j is data time [2j, 2j + 8) s: PPG-DaLiA's heart-rate label j.
        assert mine.statics[j, 0] == pytest.approx(subject.hr_bpm[j], rel=1e-6)
        labels = subject.activity[8 * j:8 * j + 32]
        assert mine.labels[j] == np.bincount(labels).argmax()
    assert mine.statics[0, 1] == subject.profile.age
    assert mine.statics[0, 3] == pytest.approx(subject.profile.height_cm)


def test_subject_split_is_whole_seeded_and_80_20():
    names = [f'S{i}' for i in range(1, 16)]
    train_names, test_names = split_subjects(np.repeat(names, 3), 0.2, seed=7)
    assert len(test_names) == 3 and len(train_names) == 12
    assert sorted(train_names + test_names) == sorted(names)
    assert split_subjects(names, 0.2, seed=7) == (train_names, test_names)
    assert split_subjects(names, 0.2, seed=8) != (train_names, test_names)
    with pytest.raises(DatasetError, match='at least 2 subjects'):
        split_subjects(['S1', 'S1'])


def write_npz(path, **overrides):
    n = 6
    arrays = dict(acc=np.zeros((n, 256, 3), np.float32), sample_rate=32.0,
                  labels=np.array([1, 2, 1, 2, 1, 2]), subjects=np.array(['a', 'a', 'a', 'b', 'b', 'b']))
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize('overrides, message', [
    ({'labels': None}, "missing arrays \\['labels'\\]"),
    ({'sample_rate': 0.0}, "'sample_rate' must be a positive rate"),
    ({'units': 'furlongs'}, "'units' must be one of"),
    ({'split': np.array(['train'] * 5 + ['later'])}, "'split' must be shaped"),
    ({'label_names': np.array(['a', 'a'])}, "'label_names' must be distinct"),
    ({'label_names': np.array(['a', 'b']), 'labels': np.array([0, 1, 2, 0, 1, 0])}, 'ids 0..1'),
    ({'acc': np.zeros((6, 200, 3), np.float32)}, 'expected 256'),
    ({'acc': np.zeros((6, 256), np.float32)}, r"'acc' must be shaped \(N, T, 3\)"),
    ({'acc': np.full((6, 256, 3), np.nan, np.float32)}, 'NaN'),
    ({'labels': np.array([1, 2, 3, 4, 5, 12])}, 'ids 0..8'),
    ({'subjects': np.array(['a', 'b'])}, r"'subjects' must be shaped \(6,\)"),
    ({'statics': np.zeros((6, 3))}, r"'statics' must be shaped \(6, 4\)"),
])
def test_malformed_npz_is_refused_by_name(tmp_path, features, overrides, message):
    path = write_npz(tmp_path / 'bad.npz', **overrides)
    with pytest.raises(DatasetError, match=message):
        load_npz(path, features, 9)


def test_cli_reports_bad_data_and_exits_non_zero(tmp_path, capsys):
    path = write_npz(tmp_path / 'bad.npz', labels=None)
    assert run_cli([str(path), '--output-dir', str(tmp_path / 'out')]) == 2
    assert "missing arrays ['labels']" in capsys.readouterr().err
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert run_cli([str(empty), '--output-dir', str(tmp_path / 'out')]) == 2
    assert 'no PPG-DaLiA subject pickles' in capsys.readouterr().err
    assert not (tmp_path / 'out' / 'metrics.json').exists()


def test_cli_refuses_bad_options():
    for args in (['--synthetic', '1'], ['x', '--test-fraction', '1.5'], ['x', '--epochs', '0'], []):
        with pytest.raises(SystemExit) as exit_info:
            train.main(args + ['--quiet'])
        assert exit_info.value.code == 2


def test_npz_with_its_own_label_names_keeps_class_zero_unless_asked(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = np.arange(256) / 32
    acc, labels, subjects = [], [], []
    for subject in 'abc':
        for label, hz in enumerate((0.7, 1.9, 3.1)):
            for _ in range(4):
                motion = 0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6))[:, None] * rng.normal(size=3)
                acc.append(motion + [0, 0, 1] + 0.01 * rng.standard_normal((256, 3)))
                labels.append(label)
                subjects.append(subject)
    path = write_npz(tmp_path / 'own.npz', acc=np.array(acc, np.float32), labels=np.array(labels),
                     subjects=np.array(subjects), label_names=np.array(['rest', 'walk', 'run']))
    out = tmp_path / 'own'
    assert run_cli([str(path), '--output-dir', str(out), '--name', 'own']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['class_names'] == ['rest', 'walk', 'run'] and 'rest' in metrics['evaluated_classes']
    assert load_checkpoint(out / 'own.pt').class_names == ('rest', 'walk', 'run')
    capsys.readouterr()
    assert run_cli([str(path), '--output-dir', str(tmp_path / 'drop'), '--transient', 'drop']) == 0
    assert "12 of 36 windows of class 0 ('rest') left out" in capsys.readouterr().err


def test_npz_in_m_s2_is_recognised_and_named(tmp_path, features, capsys):
    path = write_npz(tmp_path / 'phone.npz', acc=np.zeros((6, 256, 3), np.float32) + [0, 0, 9.81])
    windows = load_npz(path, features)
    assert 'phone.npz' in capsys.readouterr().err
    np.testing.assert_allclose(windows.acc_g[0, 0], [0, 0, 9.81 / 9.80665], rtol=1e-5)
    declared = write_npz(tmp_path / 'declared.npz', acc=np.zeros((6, 256, 3), np.float32) + [0, 0, 0.5],
                         units='m/s^2')
    np.testing.assert_allclose(load_npz(declared, features).acc_g[0, 0, 2], 0.5 / 9.80665, rtol=1e-5)


def test_npz_below_the_supported_rate_is_resampled_with_a_note(tmp_path, features, capsys):
    path = write_npz(tmp_path / 'slow.npz', acc=np.zeros((6, 80, 3), np.float32) + [0, 0, 1], sample_rate=10.0)
    windows = load_npz(path, features)
    assert windows.sample_rate == 32.0 and windows.acc_g.shape == (6, 256, 3)
    assert 'resampled to 32 Hz' in capsys.readouterr().err


def test_npz_split_is_used_instead_of_the_subject_split(subjects, features, tmp_path):
    windows = load_dalia_folder(subjects, features, progress=False)
    windows.split = np.where(windows.subjects == 'S2', 'test', 'train').astype(object)
    save_npz(tmp_path / 'split.npz', windows)
    out = tmp_path / 'split'
    assert run_cli([str(tmp_path / 'split.npz'), '--output-dir', str(out), '--calibration-fraction', '0']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['subjects']['test'] == ['S2'] and metrics['subjects']['train'] == ['S1', 'S3']


def fake_watch_wheel(folder, subjects=4):
    """A wheel holding a watch_dataset.npy of the real structure (random motion)."""
    rng = np.random.default_rng(1)
    t = np.arange(600) / 50
    X, y, who = [], [], []
    for subject in range(1, subjects + 1):
        for label, hz in enumerate((0.4, 1.2)):
            motion = 0.4 * np.sin(2 * np.pi * hz * t)[:, None] * rng.normal(size=3) + [0, 0, 1]
            X.append(np.hstack([motion, rng.standard_normal((600, 3))]))
            y.append(label)
            who.append(subject)
    X.append(np.zeros((100, 6)))        # shorter than a window: skipped
    y.append(0)
    who.append(1)
    data = {'X': X, 'y': np.array(y), 'subject': np.array(who), 'side': np.ones(len(y)),
            'y_labels': ['PEN', 'ABD'], 'X_labels': ['ax', 'ay', 'az', 'wx', 'wy', 'wz']}
    buffer = io.BytesIO()
    np.save(buffer, np.array(data, dtype=object), allow_pickle=True)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / WATCH_WHEEL, 'w') as archive:
        archive.writestr(WATCH_MEMBER, buffer.getvalue())
    return folder


def test_watch_loader_reads_the_wheel_and_cross_validates(tmp_path, features, capsys):
    cache = fake_watch_wheel(tmp_path / 'wheels')
    windows = load_watch(features, cache_dir=cache)
    assert windows.class_names == ('PEN', 'ABD') and windows.sample_rate == 50.0
    assert sorted(set(windows.subjects)) == ['W1', 'W2', 'W3', 'W4']
    assert len(windows) == 8 * 3          # (12 s - 8 s) / 2 s + 1 windows per series
    out = tmp_path / 'cv'
    assert run_cli(['--watch', '--cache-dir', str(cache), '--folds', '2', '--output-dir', str(out)]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert len(metrics['folds']) == 2 and 0 <= metrics['accuracy_mean'] <= 1
    tested = [s for fold in metrics['folds'] for s in fold['test_subjects']]
    assert sorted(tested) == ['W1', 'W2', 'W3', 'W4']
    assert 'leave-subjects-out' in capsys.readouterr().out
    assert (out / 'confusion_matrix.png').stat().st_size > 0


def test_unreadable_watch_wheel_is_named(tmp_path, features):
    (tmp_path / WATCH_WHEEL).write_bytes(b'not a zip')
    with pytest.raises(DatasetError, match=WATCH_WHEEL):
        load_watch(features, cache_dir=tmp_path)


def test_rotated_copies_turn_each_window_rigidly_within_the_limit(tmp_path, features):
    windows = load_watch(features, cache_dir=fake_watch_wheel(tmp_path / 'wheels'))
    extended, augmented = train.rotated_copies(windows, 2, 20.0, seed=3)
    n = len(windows)
    assert len(extended) == 3 * n and augmented.sum() == 2 * n and not augmented[:n].any()
    assert np.array_equal(extended.labels, np.tile(windows.labels, 3))
    assert np.array_equal(extended.subjects, np.tile(windows.subjects, 3))
    original, turned = windows.acc_g, extended.acc_g[n:2 * n]
    # A rotation keeps every sample's magnitude and turns by at most 20 degrees.
    np.testing.assert_allclose(np.linalg.norm(turned, axis=2), np.linalg.norm(original, axis=2), rtol=1e-4)
    cosine = np.sum(original * turned, axis=2) / (np.linalg.norm(original, axis=2) * np.linalg.norm(turned, axis=2))
    assert np.degrees(np.arccos(np.clip(cosine, -1, 1))).max() <= 20.0 + 1e-3
    assert not np.allclose(turned, original)


def test_watch_cross_validation_with_rotated_copies_scores_only_real_windows(tmp_path, capsys):
    cache = fake_watch_wheel(tmp_path / 'wheels')
    out = tmp_path / 'cv'
    assert run_cli(['--watch', '--cache-dir', str(cache), '--folds', '2', '--representation', 'gravity',
                    '--augment-rotations', '1', '--output-dir', str(out)]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['windows'] == 24 and metrics['rotated_copies'] == 24
    assert sum(fold['windows'] for fold in metrics['folds']) == 24
    assert 'rotated by up to 20 degrees' in metrics['data']


def test_rotations_are_refused_for_synthetic_subjects():
    with pytest.raises(SystemExit):
        train.main(['--synthetic', '3', '--augment-rotations', '1'])
