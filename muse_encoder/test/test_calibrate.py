"""python -m muse_encoder.calibrate: fits a temperature on held-out windows and writes it
consistently into the .pt and the .onnx next to it (weights untouched)."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from muse_encoder import calibrate
from muse_encoder.checkpoint import load_checkpoint
from muse_encoder.dataset import stream_to_npz
from muse_encoder.features import AccelToRGBMel
from muse_encoder.onnx_model import DEFAULT_CHECKPOINT
from muse_sensors import synthetic


@pytest.fixture(scope='module')
def held_out_npz(tmp_path_factory):
    folder = tmp_path_factory.mktemp('calibration')
    stream = synthetic.generate_wrist_stream(951, 2.0, 5, balanced=True, domain=synthetic.DOMAIN_RANDOMISED)
    return stream_to_npz(stream, folder / 'S951.npz', AccelToRGBMel(), recent_s=4.0)


@pytest.fixture
def model_copy(tmp_path):
    for suffix in ('.pt', '.onnx'):
        shutil.copy(DEFAULT_CHECKPOINT.with_suffix(suffix), tmp_path / f'm{suffix}')
    return tmp_path / 'm.pt'


def onnx_temperature(path):
    entries = {e.key: e.value for e in onnx.load(str(path)).metadata_props}
    return json.loads(entries[calibrate.ONNX_TEMPERATURE_KEY])


def test_fit_reports_the_current_and_the_fitted_temperature(model_copy, held_out_npz):
    temperature, summary = calibrate.fit(model_copy, [held_out_npz])
    assert 0.05 < temperature < 20 and summary['windows'] > 50
    assert summary['previous_temperature'] == pytest.approx(load_checkpoint(model_copy).temperature)
    # The fitted temperature minimises the NLL, which on the fitting data does not make the
    # log-likelihood worse than T = 1 or the current temperature.
    for key in ('ece_before', 'ece_after', 'ece_previous'):
        assert 0 <= summary[key] <= 1


def test_write_changes_only_the_temperature_in_pt_and_onnx(model_copy, held_out_npz, capsys):
    before = load_checkpoint(model_copy)
    assert calibrate.main([str(model_copy), str(held_out_npz), '--write']) == 0
    assert 'wrote temperature' in capsys.readouterr().out
    after = load_checkpoint(model_copy)
    fitted = after.temperature
    assert fitted != before.temperature
    assert onnx_temperature(model_copy.with_suffix('.onnx')) == pytest.approx(fitted)
    assert after.training['temperature_refit']['temperature'] == pytest.approx(fitted)
    for key, value in before.model.state_dict().items():
        assert torch.equal(value, after.model.state_dict()[key]), key
    from muse_encoder.inference import ActivityEncoder
    encoder = ActivityEncoder(backend='onnx', onnx_path=model_copy.with_suffix('.onnx'))
    assert encoder.temperature == pytest.approx(fitted)


def test_missing_data_is_error_e_data(model_copy, tmp_path, capsys):
    assert calibrate.main([str(model_copy), str(tmp_path / 'none.npz')]) == 2
    assert 'error [E_DATA]' in capsys.readouterr().err
