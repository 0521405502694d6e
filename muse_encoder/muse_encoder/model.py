"""The activity CNN: log-mel images plus pseudo-static inputs -> 9 PPG-DaLiA activity classes.

Three convolutional blocks (conv 3x3, batch norm, ReLU, 2x2 max-pool) turn the (3, 64, 64)
log-mel image into a (C, 8, 8) map, which is averaged over time only, to (C, 8 bands, 2 time
steps): where in frequency the energy sits (cadence, its harmonics) is what tells activities
apart, while when within the 8 s it happened is not. Its flattened features are concatenated with the
pseudo-static inputs (heart rate of the window, age, sex, height, weight) and go through two
fully connected layers: the first gives the activity embedding (the penultimate layer the
encoder node publishes), the second the class logits.

Normalisation statistics (per-channel log-mel mean/std, static-input mean/std from the
training set) are buffers of the model, so a checkpoint or an exported ONNX/TorchScript
graph takes raw features and raw statics and cannot be fed with mismatched statistics.
"""

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from muse_encoder.statics import STATIC_INPUTS



def default_class_names():
    from muse_common.activities import ACTIVITY_NAMES
    return tuple(ACTIVITY_NAMES)


@dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 3
    image_size: int = 64                     # mel bands = frames
    conv_channels: tuple = (16, 32, 64)
    pooled_bands: int = 8                    # mel rows of the map fed to the FC layers
    pooled_steps: int = 2                    # time columns of the map fed to the FC layers
    embedding_dim: int = 448
    dropout: float = 0.3
    class_names: tuple = field(default_factory=default_class_names)

    @property
    def num_classes(self):
        return len(self.class_names)

    def as_dict(self):
        values = asdict(self)
        values['conv_channels'] = list(self.conv_channels)
        values['class_names'] = list(self.class_names)
        return values

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        values['conv_channels'] = tuple(values['conv_channels'])
        values['class_names'] = tuple(values['class_names'])
        return cls(**values)


def _conv_block(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2))


class ActivityCNN(nn.Module):
    """forward(mel (B, 3, 64, 64), statics (B, 5)) -> (logits (B, 9), embedding (B, E))."""

    def __init__(self, config=None):
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        channels = (cfg.in_channels,) + tuple(cfg.conv_channels)
        self.blocks = nn.Sequential(*(_conv_block(a, b) for a, b in zip(channels, channels[1:])))
        reduced = cfg.image_size // 2 ** len(cfg.conv_channels)
        if reduced % cfg.pooled_bands or reduced % cfg.pooled_steps:
            raise ValueError(f'pooled map {cfg.pooled_bands}x{cfg.pooled_steps} does not divide '
                             f'the {reduced}x{reduced} map of the last conv block')
        # Fixed-size pooling (not adaptive) keeps the exported graph static and simple.
        self.pool = nn.AvgPool2d((reduced // cfg.pooled_bands, reduced // cfg.pooled_steps))
        n_image = channels[-1] * cfg.pooled_bands * cfg.pooled_steps
        n_static = len(STATIC_INPUTS)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc_embedding = nn.Linear(n_image + n_static, cfg.embedding_dim)
        self.fc_classes = nn.Linear(cfg.embedding_dim, cfg.num_classes)
        self.register_buffer('mel_mean', torch.zeros(cfg.in_channels))
        self.register_buffer('mel_std', torch.ones(cfg.in_channels))
        self.register_buffer('static_mean', torch.zeros(n_static))
        self.register_buffer('static_std', torch.ones(n_static))

    def set_normalisation(self, mel_mean, mel_std, static_mean, static_std):
        for name, value in (('mel_mean', mel_mean), ('mel_std', mel_std),
                            ('static_mean', static_mean), ('static_std', static_std)):
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype).reshape(buffer.shape))

    def forward(self, mel, statics):
        mel = (mel - self.mel_mean[:, None, None]) / self.mel_std[:, None, None]
        statics = (statics - self.static_mean) / self.static_std
        image = self.pool(self.blocks(mel)).flatten(1)
        joined = self.dropout(torch.cat([image, statics], dim=1))
        embedding = torch.relu(self.fc_embedding(joined))
        logits = self.fc_classes(self.dropout(embedding))
        return logits, embedding


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
