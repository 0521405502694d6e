"""The CNN: size, shapes, class names, embedding, determinism; checkpoints round-trip."""

import numpy as np
import pytest
import torch

from muse_encoder.checkpoint import CheckpointError, EncoderCheckpoint, load_checkpoint
from muse_encoder.features import FeatureParams
from muse_encoder.model import ActivityCNN, ModelConfig, count_parameters
from muse_encoder.statics import STATIC_INPUTS
from muse_common.activities import ACTIVITY_NAMES

DEFAULTS = {'heart_rate_bpm': 90.0, 'age_years': 30.0, 'sex_female': 0.5, 'height_cm': 172.0,
            'weight_kg': 70.0}


def inputs(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, 64, 64, generator=generator) - 3,
            torch.tensor([[90.0, 30.0, 1.0, 170.0, 65.0]]).repeat(batch, 1))


def test_about_half_a_million_parameters():
    assert 400_000 <= count_parameters(ActivityCNN()) <= 600_000


def test_nine_classes_named_as_ppg_dalia():
    model = ActivityCNN()
    assert model.config.class_names == tuple(ACTIVITY_NAMES)
    assert model.config.num_classes == 9


def test_three_conv_blocks_then_two_fully_connected_layers():
    model = ActivityCNN()
    assert len(model.blocks) == 3
    assert all(isinstance(block[0], torch.nn.Conv2d) for block in model.blocks)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear == [model.fc_embedding, model.fc_classes]
    # The static inputs go into the fully connected part.
    assert model.fc_embedding.in_features == 64 * 8 * 2 + len(STATIC_INPUTS)


def test_output_shapes_and_the_embedding_is_the_penultimate_layer():
    model = ActivityCNN().eval()
    mel, statics = inputs()
    with torch.no_grad():
        logits, embedding = model(mel, statics)
        assert logits.shape == (4, 9)
        assert embedding.shape == (4, model.config.embedding_dim)
        torch.testing.assert_close(model.fc_classes(embedding), logits)


def test_static_inputs_change_the_output():
    model = ActivityCNN().eval()
    mel, statics = inputs(batch=1)
    other = statics.clone()
    other[0, 0] = 170.0
    with torch.no_grad():
        assert not torch.allclose(model(mel, statics)[0], model(mel, other)[0])


def test_same_seed_same_model_and_same_training_step():
    def one_step():
        torch.manual_seed(3)
        model = ActivityCNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        mel, statics = inputs(batch=8, seed=1)
        loss = torch.nn.functional.cross_entropy(model(mel, statics)[0], torch.arange(8) % 9)
        loss.backward()
        optimizer.step()
        return model.state_dict()
    first, second = one_step(), one_step()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_eval_forward_is_deterministic():
    model = ActivityCNN().eval()
    mel, statics = inputs()
    with torch.no_grad():
        assert torch.equal(model(mel, statics)[0], model(mel, statics)[0])


def test_normalisation_is_part_of_the_weights():
    model = ActivityCNN()
    model.set_normalisation([-3, -3.5, -2.5], [1.5, 1.2, 1.1], [90, 30, 0.5, 172, 70], [20, 8, 0.5, 9, 12])
    state = model.state_dict()
    assert state['mel_mean'].tolist() == [-3, -3.5, -2.5]
    assert state['static_std'].tolist() == [20, 8, 0.5, 9, 12]


def test_bad_pooling_configuration_is_refused():
    with pytest.raises(ValueError, match='does not divide'):
        ActivityCNN(ModelConfig(pooled_bands=3))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = ActivityCNN()
    model.set_normalisation([-3, -3, -3], [2, 2, 2], [90, 30, 0.5, 172, 70], [20, 8, 0.5, 9, 12])
    model.eval()
    path = EncoderCheckpoint(model, FeatureParams(), DEFAULTS, {'note': 'test'}).save(tmp_path / 'c.pt')
    loaded = load_checkpoint(path)
    mel, statics = inputs()
    with torch.no_grad():
        for a, b in zip(model(mel, statics), loaded.model(mel, statics)):
            assert torch.equal(a, b)
    assert loaded.feature_params == FeatureParams()
    assert loaded.static_defaults == DEFAULTS
    assert loaded.class_names == tuple(ACTIVITY_NAMES)
    assert loaded.training == {'note': 'test'}
    assert not loaded.model.training


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match='nothing.pt does not exist'):
        load_checkpoint(tmp_path / 'nothing.pt')


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'not a torch file')
    with pytest.raises(CheckpointError, match='cannot read'):
        load_checkpoint(garbage)
    other = tmp_path / 'other.pt'
    torch.save({'weights': torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match='not a muse_encoder checkpoint'):
        load_checkpoint(other)


def test_a_checkpoint_with_mismatched_weights_is_refused(tmp_path):
    model = ActivityCNN()
    data = EncoderCheckpoint(model, FeatureParams(), DEFAULTS).to_dict()
    data['model_config']['embedding_dim'] = 100
    torch.save(data, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointError, match='inconsistent'):
        load_checkpoint(tmp_path / 'bad.pt')


def test_checkpoints_cannot_run_code_when_loaded(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ('pwned',))
    torch.save({'format': 1, 'x': Payload()}, tmp_path / 'evil.pt')
    with pytest.raises(CheckpointError, match='cannot read'):
        load_checkpoint(tmp_path / 'evil.pt')


def test_the_packaged_default_checkpoint_loads():
    checkpoint = load_checkpoint()
    assert checkpoint.class_names == tuple(ACTIVITY_NAMES)
    assert 400_000 <= count_parameters(checkpoint.model) <= 600_000
    # Held-out domain-randomised subjects (any device convention): 0.89 when it was made.
    assert checkpoint.training['macro_f1'] >= 0.85
    assert checkpoint.feature_params.representation == 'invariant' and checkpoint.temperature > 0
    assert np.isfinite(list(checkpoint.static_defaults.values())).all()


@pytest.mark.parametrize('representation', ['gravity', 'axes'])
def test_checkpoint_stores_and_restores_the_representation(tmp_path, representation):
    """The node and the evaluate CLI rebuild the features from the checkpoint, so a model
    trained on another representation gets exactly its own features back."""
    from muse_encoder.features import AccelToRGBMel
    params = FeatureParams(representation=representation, stride_s=1.0)
    path = EncoderCheckpoint(ActivityCNN().eval(), params, DEFAULTS).save(tmp_path / 'r.pt')
    loaded = load_checkpoint(path)
    assert loaded.feature_params == params
    window = np.random.default_rng(0).normal(0, 0.2, (400, 3)).astype(np.float32) + [0, 0, 1]
    np.testing.assert_array_equal(AccelToRGBMel(loaded.feature_params)(window, 50),
                                  AccelToRGBMel(params)(window, 50))
