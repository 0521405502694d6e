"""Export the activity CNN for edge deployment (ONNX), and check that the export is faithful.

The graph takes the raw log-mel image ``mel`` (B, 3, 64, 64) and the raw static inputs
``statics`` (B, 5) and returns ``logits`` (B, 9) and ``embedding`` (B, E); normalisation is
inside the graph. Features (AccelToRGBMel, numpy) stay outside: they are cheap, and an edge
device can reproduce them from the parameters stored in the file's metadata
(``muse_encoder.feature_params``, ``class_names``, ``static_inputs``, ``static_defaults``,
``temperature``, all JSON); muse_encoder.onnx_model reads them without torch.

Console script ``muse_export_encoder``::

    muse_export_encoder [--checkpoint PATH] [--output PATH.onnx] [--opset 17]

Uses torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based one needs
the ``onnxscript`` package, which is not part of the pinned environment.
"""

import argparse
import json
from pathlib import Path
import sys
import warnings

import numpy as np
import torch

from muse_encoder.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from muse_encoder.onnx_model import open_onnx_session
from muse_encoder.statics import STATIC_INPUTS

INPUT_NAMES = ('mel', 'statics')
OUTPUT_NAMES = ('logits', 'embedding')


class ExportMismatchError(RuntimeError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(checkpoint_path, output_path, opset=17):
    """Write the checkpoint's CNN as ONNX with metadata; returns the output path."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.model.eval()
    shape = (1, model.config.in_channels, model.config.image_size, model.config.image_size)
    example = (torch.zeros(shape), torch.zeros(1, len(STATIC_INPUTS)))
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    batch = {0: 'batch'}
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of one that needs onnxscript.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            model, example, str(output_path), dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch for name in INPUT_NAMES + OUTPUT_NAMES})
    import onnx
    graph = onnx.load(str(output_path))
    metadata = {
        'muse_encoder.class_names': json.dumps(list(checkpoint.class_names)),
        'muse_encoder.feature_params': json.dumps(checkpoint.feature_params.as_dict()),
        'muse_encoder.static_inputs': json.dumps(list(STATIC_INPUTS)),
        'muse_encoder.static_defaults': json.dumps(checkpoint.static_defaults),
        'muse_encoder.temperature': json.dumps(float(checkpoint.temperature)),
    }
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(output_path))
    return output_path


def compare_with_torch(checkpoint_path, onnx_path, batch=16, seed=0, atol=1e-4, rtol=1e-4):
    """Run torch and onnxruntime on the same random log-mel images and statics.

    Returns the largest absolute differences {output name: float}; raises
    ExportMismatchError if any exceeds ``atol + rtol * |torch value|``.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.model.eval()
    rng = np.random.default_rng(seed)
    size = model.config.image_size
    mel_mean = model.mel_mean.numpy()[None, :, None, None]
    mel_std = model.mel_std.numpy()[None, :, None, None]
    mel = (mel_mean + mel_std * rng.standard_normal((batch, model.config.in_channels, size, size))).astype(np.float32)
    statics = (model.static_mean.numpy() + model.static_std.numpy()
               * rng.standard_normal((batch, len(STATIC_INPUTS)))).astype(np.float32)
    with torch.inference_mode():
        expected = [t.numpy() for t in model(torch.from_numpy(mel), torch.from_numpy(statics))]
    got = open_onnx_session(onnx_path).run(list(OUTPUT_NAMES), {'mel': mel, 'statics': statics})
    differences = {}
    for name, want, have in zip(OUTPUT_NAMES, expected, got):
        if want.shape != have.shape:
            raise ExportMismatchError(f'{name}: ONNX shape {have.shape} != torch shape {want.shape}')
        differences[name] = float(np.max(np.abs(want - have)))
        if not np.allclose(have, want, atol=atol, rtol=rtol):
            raise ExportMismatchError(
                f'{name}: ONNX differs from torch by up to {differences[name]:.3g} '
                f'(tolerance {atol:g} + {rtol:g} * |value|)')
    return differences


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='muse_export_encoder', description='Export the activity CNN to ONNX and verify it '
        'against PyTorch on random inputs.')
    parser.add_argument('--checkpoint', type=Path, default=DEFAULT_CHECKPOINT,
                        help='encoder checkpoint (default: the packaged one)')
    parser.add_argument('--output', type=Path, default=None,
                        help='ONNX file to write (default: the checkpoint path with .onnx)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    args = parser.parse_args(argv)
    output = args.output or args.checkpoint.with_suffix('.onnx')
    try:
        export_onnx(args.checkpoint, output, opset=args.opset)
        differences = compare_with_torch(args.checkpoint, output)
    except (ValueError, FileNotFoundError, ExportMismatchError) as exc:
        print(f'muse_export_encoder: error: {exc}', file=sys.stderr)
        return 1
    size_kb = output.stat().st_size / 1024
    print(f'wrote {output} ({size_kb:.0f} KiB); onnxruntime vs torch max |diff|: '
          + ', '.join(f'{k} {v:.2g}' for k, v in differences.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
