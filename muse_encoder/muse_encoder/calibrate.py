"""Fit an encoder's temperature on held-out data: ``python -m muse_encoder.calibrate``.

    python -m muse_encoder.calibrate CHECKPOINT.pt DATA [DATA ...] [--transient keep] [--write]

Temperature scaling (Guo et al. 2017) on the windows of DATA (PPG-DaLiA subjects or
labelled-window .npz files, as for ``muse_encoder.evaluate``): the temperature T minimising
the negative log-likelihood of ``softmax(logits / T)``. Prints T and the mean confidence and
ECE on DATA at the checkpoint's current temperature, at T = 1 and at the fitted T. With
``--write`` the fitted T replaces the checkpoint's (the weights are untouched) and, where the
exported ``.onnx`` sits next to it, the same value replaces its ``muse_encoder.temperature``
metadata, so the torch and onnxruntime paths stay consistent. Whether the new temperature is
better must be judged on *other* held-out data (``muse_encoder.evaluate``), not on DATA.

Exit codes as ``muse_encoder.evaluate`` (2 data, 3 checkpoint, 4 labels).
"""

import argparse
import json
from pathlib import Path
import sys

from muse_encoder import metrics as metric_fns
from muse_encoder.checkpoint import CheckpointError, load_checkpoint
from muse_encoder.dataset import TRANSIENT_POLICIES
from muse_encoder.evaluate import EXIT_CODES, EvaluationError, collect_logits, open_encoder

ONNX_TEMPERATURE_KEY = 'muse_encoder.temperature'


def fit(checkpoint_path, paths, transient='keep', threads=1):
    """(fitted temperature, summary dict) of the checkpoint on the windows of ``paths``."""
    encoder = open_encoder(checkpoint_path, threads)
    logits, labels, sources = collect_logits(encoder, paths, transient)
    temperature = metric_fns.fit_temperature(logits, labels)
    current = metric_fns.softmax(logits, encoder.temperature)
    summary = metric_fns.calibration_summary(logits, labels, temperature)
    summary.update({
        'windows': int(len(labels)), 'data': sources, 'transient': transient,
        'previous_temperature': float(encoder.temperature),
        'mean_confidence_previous': float(current.max(axis=1).mean()),
        'ece_previous': metric_fns.expected_calibration_error(current, labels),
    })
    return temperature, summary


def write_temperature(checkpoint_path, temperature, note):
    """Set the temperature of the .pt (and of the .onnx next to it, if any); returns the
    paths written."""
    checkpoint_path = Path(checkpoint_path)
    try:
        checkpoint = load_checkpoint(checkpoint_path)
    except CheckpointError as exc:
        raise EvaluationError('E_CHECKPOINT', str(exc)) from exc
    checkpoint.temperature = float(temperature)
    checkpoint.training = {**checkpoint.training, 'temperature_refit': note}
    written = [checkpoint.save(checkpoint_path)]
    onnx_path = checkpoint_path.with_suffix('.onnx')
    if onnx_path.is_file():
        import onnx
        graph = onnx.load(str(onnx_path))
        entries = [e for e in graph.metadata_props if e.key == ONNX_TEMPERATURE_KEY]
        if len(entries) != 1:
            raise EvaluationError('E_CHECKPOINT', f'{onnx_path}: expected one {ONNX_TEMPERATURE_KEY} entry, '
                                  f'found {len(entries)}; export it again with muse_encoder.export')
        entries[0].value = json.dumps(float(temperature))
        onnx.save(graph, str(onnx_path))
        written.append(onnx_path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m muse_encoder.calibrate', description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', type=Path, help='a .pt checkpoint (its .onnx next to it is updated too)')
    parser.add_argument('data', type=Path, nargs='+',
                        help='held-out PPG-DaLiA subject folders or .pkl files, or .npz files of windows')
    parser.add_argument('--transient', choices=TRANSIENT_POLICIES, default='keep',
                        help="class id 0: 'keep' (default: the node publishes it too), 'auto' or 'drop'")
    parser.add_argument('--write', action='store_true',
                        help='store the fitted temperature in the checkpoint and its .onnx')
    parser.add_argument('--threads', type=int, default=1, help='inference threads (default 1)')
    args = parser.parse_args(argv)
    if args.checkpoint.suffix != '.pt':
        parser.error('CHECKPOINT must be a .pt (its .onnx is updated with it)')
    try:
        temperature, summary = fit(args.checkpoint, args.data, args.transient, args.threads)
        print(f'{summary["windows"]} windows: temperature {summary["previous_temperature"]:.3f} -> '
              f'{temperature:.3f}; on these windows mean confidence / ECE: current '
              f'{summary["mean_confidence_previous"]:.3f} / {summary["ece_previous"]:.3f}, T=1 '
              f'{summary["mean_confidence_before"]:.3f} / {summary["ece_before"]:.3f}, fitted '
              f'{summary["mean_confidence_after"]:.3f} / {summary["ece_after"]:.3f}')
        if args.write:
            note = {'temperature': temperature, 'windows': summary['windows'], 'transient': args.transient,
                    'data': [s['path'] for s in summary['data']],
                    'subjects': sorted({n for s in summary['data'] for n in s['subjects']})}
            for path in write_temperature(args.checkpoint, temperature, note):
                print(f'wrote temperature {temperature:.3f} into {path}')
    except EvaluationError as exc:
        print(f'muse_calibrate_encoder: error [{exc.code}]: {exc}', file=sys.stderr)
        return EXIT_CODES[exc.code]
    return 0


if __name__ == '__main__':
    sys.exit(main())
