"""The ONNX export gives the same outputs as PyTorch and carries its metadata."""

import json

import numpy as np
import onnx
import pytest

from muse_encoder import export
from muse_encoder.checkpoint import DEFAULT_CHECKPOINT, CheckpointError
from muse_encoder.inference import ActivityEncoder
from muse_common import activities
from muse_sensors import dalia


@pytest.fixture(scope='module')
def onnx_path(tmp_path_factory):
    return export.export_onnx(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp('onnx') / 'encoder.onnx')


def test_onnxruntime_matches_torch_on_random_inputs(onnx_path):
    differences = export.compare_with_torch(DEFAULT_CHECKPOINT, onnx_path, batch=8)
    assert set(differences) == {'logits', 'embedding'}
    assert max(differences.values()) < 1e-4


def test_onnx_backend_matches_torch_backend_on_real_windows(onnx_path):
    rng = np.random.default_rng(0)
    t = np.arange(256) / dalia.ACC_HZ
    torch_encoder = ActivityEncoder(backend='torch', threads=1)
    onnx_encoder = ActivityEncoder(backend='onnx', onnx_path=onnx_path, threads=1)
    for f in (0.5, 1.8, 3.0):
        window = np.stack([0.3 * np.sin(2 * np.pi * f * t), 0.1 * np.cos(2 * np.pi * f * t),
                           1 + 0.05 * rng.standard_normal(256)], axis=1).astype(np.float32)
        a, b = torch_encoder.predict(window, dalia.ACC_HZ), onnx_encoder.predict(window, dalia.ACC_HZ)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)
        assert a.class_id == b.class_id


def test_exported_file_describes_its_features_and_classes(onnx_path):
    model = onnx.load(str(onnx_path))
    metadata = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert metadata['muse_encoder.class_names'] == list(activities.ACTIVITY_NAMES)
    assert metadata['muse_encoder.feature_params']['target_rate_hz'] == 64.0
    assert [i.name for i in model.graph.input] == ['mel', 'statics']
    assert [o.name for o in model.graph.output] == ['logits', 'embedding']


def test_a_changed_model_is_caught_by_the_comparison(onnx_path, tmp_path):
    """The equality check can fail: an export of different weights does not pass it."""
    import torch
    from muse_encoder.checkpoint import load_checkpoint
    changed = load_checkpoint(DEFAULT_CHECKPOINT)
    with torch.no_grad():
        changed.model.fc_classes.bias += 0.5 * torch.arange(9, dtype=torch.float32)
    other = changed.save(tmp_path / 'changed.pt')
    with pytest.raises(export.ExportMismatchError, match='logits'):
        export.compare_with_torch(other, onnx_path)


def test_packaged_onnx_is_the_packaged_checkpoint():
    """models/default.onnx (for backend 'onnx') must be re-exported whenever default.pt changes."""
    packaged = DEFAULT_CHECKPOINT.with_suffix('.onnx')
    assert packaged.is_file()
    assert max(export.compare_with_torch(DEFAULT_CHECKPOINT, packaged).values()) < 1e-4


def test_cli_writes_and_verifies(tmp_path, capsys):
    output = tmp_path / 'cli.onnx'
    assert export.main(['--output', str(output)]) == 0
    assert output.is_file() and 'max |diff|' in capsys.readouterr().out


def test_cli_names_a_missing_checkpoint(tmp_path, capsys):
    assert export.main(['--checkpoint', str(tmp_path / 'none.pt')]) == 1
    assert 'none.pt does not exist' in capsys.readouterr().err


def test_missing_onnx_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        ActivityEncoder(backend='onnx', onnx_path=tmp_path / 'missing.onnx')
    assert issubclass(CheckpointError, ValueError)
