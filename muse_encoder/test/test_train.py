"""The training CLI end to end on tiny synthetic subjects, the .npz path, the window labels
and heart-rate alignment, the subject split, and clear errors for bad data."""

import json

import numpy as np
import pytest

from muse_encoder import train
from muse_encoder.checkpoint import load_checkpoint
from muse_encoder.dataset import (DatasetError, load_dalia_folder, load_npz, save_npz,
                                  split_subjects)
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
    matrix = np.array(metrics['confusion_matrix'])
    assert matrix.shape == (9, 9) and matrix.sum() == metrics['windows']['test']
    checkpoint = load_checkpoint(out / 'tiny.pt')
    assert checkpoint.training['macro_f1'] == metrics['macro_f1']
    # The checkpoint is usable for inference as it is.
    encoder = ActivityEncoder(out / 'tiny.pt')
    assert encoder.predict(np.zeros((256, 3), np.float32) + [0, 0, 1], 32).probabilities.shape == (9,)


@pytest.mark.parametrize('policy', ['drop', 'keep'])
def test_transient_windows_are_dropped_or_kept_as_class_zero(subjects, features, tmp_path, policy):
    # Tiny subjects have transients too short to label a window, so mark some by hand.
    windows = load_dalia_folder(subjects, features, progress=False)
    windows.labels[::4] = 0
    save_npz(tmp_path / 'windows.npz', windows)
    out = tmp_path / policy
    assert run_cli([str(tmp_path / 'windows.npz'), '--output-dir', str(out), '--name', 'tiny',
                    '--transient', policy]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    transient_rows = np.array(metrics['confusion_matrix'])[0].sum()
    if policy == 'drop':
        assert 'transient' not in metrics['evaluated_classes'] and transient_rows == 0
    else:
        assert 'transient' in metrics['evaluated_classes'] and transient_rows > 0


def test_synthetic_option_generates_subjects_first(tmp_path):
    out = tmp_path / 'synthetic'
    data = tmp_path / 'generated'
    assert run_cli(['--synthetic', '2', '--minutes', '2.5', '--seed', '3', '--data-dir', str(data),
                    '--output-dir', str(out), '--name', 'tiny', '--onnx']) == 0
    assert sorted(p.name for p in data.iterdir()) == ['S1', 'S2']
    assert (out / 'tiny.onnx').stat().st_size > 0
    assert 'synthetic: 2 subjects' in json.loads((out / 'metrics.json').read_text())['data']


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
    ({'sample_rate': 0.0}, "'sample_rate'"),
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
