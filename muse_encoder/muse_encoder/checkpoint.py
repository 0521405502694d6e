"""Encoder checkpoints: the CNN's weights plus everything needed to use them correctly.

A checkpoint is one ``torch.save`` file holding plain data only (loaded with
``weights_only=True``, so opening a checkpoint cannot run code):

- ``format``: ``CHECKPOINT_FORMAT`` (bumped when the layout changes),
- ``model_config``: ``ModelConfig.as_dict()`` (class names included),
- ``state_dict``: weights and the normalisation buffers,
- ``feature_params``: ``FeatureParams.as_dict()`` of the AccelToRGBMel that made the inputs,
- ``normalisation``: the same statistics in readable form, plus ``static_defaults`` (the
  training means, used where an input such as heart rate is unknown),
- ``temperature``: divides the logits before the softmax (temperature scaling fitted on
  held-out calibration subjects; 1.0 = uncalibrated),
- ``training``: how it was made (arguments, data, metrics summary), informational.

Format 1 (before the device-invariant features) still loads: its features are the raw axes.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from muse_encoder.features import FeatureParams
from muse_encoder.model import ActivityCNN, ModelConfig
from muse_encoder.onnx_model import DEFAULT_CHECKPOINT
from muse_encoder.statics import STATIC_INPUTS

CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not an encoder checkpoint."""


@dataclass
class EncoderCheckpoint:
    model: ActivityCNN
    feature_params: FeatureParams
    static_defaults: dict                      # STATIC_INPUTS name -> value used when unknown
    training: dict = field(default_factory=dict)
    temperature: float = 1.0                   # logits / temperature before the softmax

    @property
    def class_names(self):
        return self.model.config.class_names

    def to_dict(self):
        model = self.model
        return {
            'format': CHECKPOINT_FORMAT,
            'model_config': model.config.as_dict(),
            'state_dict': {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            'feature_params': self.feature_params.as_dict(),
            'normalisation': {
                'mel_mean': model.mel_mean.tolist(), 'mel_std': model.mel_std.tolist(),
                'static_inputs': list(STATIC_INPUTS),
                'static_mean': model.static_mean.tolist(), 'static_std': model.static_std.tolist(),
                'static_defaults': {k: float(self.static_defaults[k]) for k in STATIC_INPUTS},
            },
            'temperature': float(self.temperature),
            'training': self.training,
        }

    def save(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_dict(), path)
        return path


def load_checkpoint(path=None):
    """Load an EncoderCheckpoint (the packaged default when ``path`` is None or empty)."""
    path = Path(path) if path else DEFAULT_CHECKPOINT
    if not path.is_file():
        hint = (' (the packaged default is made by the command in muse_encoder/README.md)'
                if path == DEFAULT_CHECKPOINT else '')
        raise CheckpointError(f'encoder checkpoint {path} does not exist{hint}')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise CheckpointError(f'cannot read encoder checkpoint {path}: {exc}') from exc
    if not isinstance(data, dict) or data.get('format') not in READABLE_FORMATS:
        found = data.get('format') if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f'{path} is not a muse_encoder checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})')
    try:
        model = ActivityCNN(ModelConfig.from_dict(data['model_config']))
        model.load_state_dict(data['state_dict'])
        stored = dict(data['feature_params'])
        if data['format'] == 1:
            stored.setdefault('representation', 'axes')   # format 1 fed the raw axes
        feature_params = FeatureParams(**stored)
        temperature = float(data.get('temperature', 1.0))
        defaults = data['normalisation']['static_defaults']
        static_defaults = {name: float(defaults[name]) for name in STATIC_INPUTS}
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f'encoder checkpoint {path} is incomplete or inconsistent: {exc}') from exc
    model.eval()
    return EncoderCheckpoint(model, feature_params, static_defaults, data.get('training', {}),
                             temperature)
