"""The evaluation CLI: metrics and confusion PNG from .npz and subject data, coded errors;
calibration metrics (ECE, temperature scaling); reaction-time bookkeeping."""

import json

import numpy as np
import pytest

from muse_common.activities import ACTIVITY_NAMES
from muse_encoder import evaluate, metrics, reaction
from muse_encoder.onnx_model import DEFAULT_CHECKPOINT
from muse_sensors.synthetic import write_subject


@pytest.fixture(scope='module')
def subject_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('eval_subjects')
    write_subject(folder, 77, 2.5, seed=31, balanced=True, chest=False)
    return folder


def windows_npz(path, **extra):
    rng = np.random.default_rng(0)
    t = np.arange(256) / 32
    acc = np.stack([np.stack([0.3 * np.sin(2 * np.pi * 1.9 * t), 0.1 * rng.standard_normal(256),
                              1 + 0.2 * np.sin(2 * np.pi * 1.9 * t)], 1) for _ in range(6)])
    arrays = dict(acc=acc.astype(np.float32), sample_rate=32.0, labels=np.array([0, 0, 1, 1, 1, 0]),
                  label_names=np.array(['walking', 'sitting']), subjects=np.array(list('aabbcc')))
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize('model', ['default.onnx', 'default.pt'])
def test_cli_scores_npz_and_subjects_and_writes_metrics_and_png(tmp_path, subject_folder, capsys, model):
    out = tmp_path / 'eval'
    npz = windows_npz(tmp_path / 'w.npz')
    assert evaluate.main([str(DEFAULT_CHECKPOINT.with_name(model)), str(npz), str(subject_folder),
                          '--output-dir', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'accuracy' in printed and 'ECE' in printed
    result = json.loads((out / 'metrics.json').read_text())
    for key in ('accuracy', 'macro_f1', 'per_class_f1', 'confusion_matrix', 'mean_confidence',
                'expected_calibration_error', 'temperature'):
        assert key in result, key
    matrix = np.array(result['confusion_matrix'])
    assert matrix.shape == (9, 9) and matrix.sum() == result['windows']
    # The .npz's names were matched: its 'walking' windows are counted in PPG-DaLiA's row 7.
    assert matrix[ACTIVITY_NAMES.index('walking')].sum() >= 3
    assert (out / 'confusion_matrix.png').stat().st_size > 0
    assert result['backend'] == ('onnx' if model.endswith('.onnx') else 'torch')


def test_missing_model_is_error_e_checkpoint(tmp_path, capsys):
    npz = windows_npz(tmp_path / 'w.npz')
    assert evaluate.main([str(tmp_path / 'none.pt'), str(npz), '--output-dir', str(tmp_path)]) == 3
    assert 'error [E_CHECKPOINT]' in capsys.readouterr().err


def test_not_a_model_is_error_e_checkpoint(tmp_path, capsys):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'nonsense')
    assert evaluate.main([str(bad), str(windows_npz(tmp_path / 'w.npz')), '--output-dir', str(tmp_path)]) == 3
    assert 'error [E_CHECKPOINT]' in capsys.readouterr().err


def test_missing_or_malformed_data_is_error_e_data(tmp_path, capsys):
    model = str(DEFAULT_CHECKPOINT.with_suffix('.onnx'))
    assert evaluate.main([model, str(tmp_path / 'nothing.npz'), '--output-dir', str(tmp_path)]) == 2
    assert 'error [E_DATA]' in capsys.readouterr().err
    bad = windows_npz(tmp_path / 'bad.npz', acc=np.zeros((6, 100, 3), np.float32))
    assert evaluate.main([model, str(bad), '--output-dir', str(tmp_path)]) == 2
    assert 'expected 256' in capsys.readouterr().err
    assert not (tmp_path / 'metrics.json').exists()


def test_classes_the_model_does_not_know_are_error_e_labels(tmp_path, capsys):
    npz = windows_npz(tmp_path / 'w.npz', label_names=np.array(['walking', 'juggling']))
    model = str(DEFAULT_CHECKPOINT.with_suffix('.onnx'))
    assert evaluate.main([model, str(npz), '--output-dir', str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert 'error [E_LABELS]' in err and "['juggling']" in err


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    # 100 windows, confidence 0.8, 80 right: calibrated.
    probabilities = np.tile([0.8, 0.2], (100, 1))
    truth = np.array([0] * 80 + [1] * 20)
    assert metrics.expected_calibration_error(probabilities, truth) == pytest.approx(0.0, abs=1e-9)
    overconfident = np.tile([0.99, 0.01], (100, 1))
    assert metrics.expected_calibration_error(overconfident, truth) == pytest.approx(0.19, abs=1e-6)


def test_temperature_scaling_repairs_overconfident_logits():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), truth] += 1.0        # informative ...
    logits *= 6.0                                # ... but far too sharp
    temperature = metrics.fit_temperature(logits, truth)
    assert 4.0 < temperature < 8.0
    summary = metrics.calibration_summary(logits, truth, temperature)
    assert summary['ece_after'] < 0.03 < summary['ece_before']
    assert summary['mean_confidence_after'] < summary['mean_confidence_before']


def test_reaction_time_and_false_changes_are_counted_in_data_seconds():
    rate = 10.0
    # 60 s of walking (7), 20 s transient, 60 s of cycling (4).
    truth = np.array([7] * 600 + [0] * 200 + [4] * 600)
    ends = np.arange(8, 141, 1.0)
    published = np.full(len(ends), 7)
    published[(ends >= 62) & (ends < 66)] = 2           # a wrong 'stairs' in between
    published[ends >= 85] = 4                           # cycling named 5 s after it began at 80 s
    estimates = reaction.StreamEstimates(ends, np.zeros((len(ends), 9)), truth, rate)
    [(delay, false)] = reaction.reactions(estimates, published)
    assert delay == pytest.approx(5.0) and false == 1
    summary = reaction.summarise([(delay, false), (None, 0)])
    assert summary['missed'] == 1 and summary['p50_s'] == pytest.approx(5.0)
