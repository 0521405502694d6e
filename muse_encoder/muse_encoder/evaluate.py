"""Evaluate a trained encoder on labelled data: ``python -m muse_encoder.evaluate``.

    python -m muse_encoder.evaluate CHECKPOINT DATA [DATA ...] --output-dir DIR

CHECKPOINT is a .pt (run in PyTorch) or an exported .onnx (run in onnxruntime, as the node
does). DATA are PPG-DaLiA subject folders or pickles, or labelled-window .npz files (layout in
muse_encoder.dataset; their label names are matched to the model's class names). Writes
``DIR/metrics.json`` (accuracy, macro-F1, per-class F1, confusion matrix, mean confidence and
expected calibration error with the model's temperature and without it) and
``DIR/confusion_matrix.png``, and prints the headline.

Errors are coded (``error [CODE]``) and exit non-zero: ``E_CHECKPOINT`` (exit 3: the model
cannot be opened), ``E_DATA`` (exit 2: missing or malformed data), ``E_LABELS`` (exit 4: the
data's classes are not the model's).
"""

import argparse
import json
from pathlib import Path
import sys

import numpy as np

from muse_encoder import metrics as metric_fns
from muse_encoder.dataset import DatasetError, apply_transient_policy, load_windows, TRANSIENT_POLICIES
from muse_encoder.features import FeatureInputError
from muse_encoder.statics import STATIC_INPUTS

EXIT_CODES = {'E_DATA': 2, 'E_CHECKPOINT': 3, 'E_LABELS': 4}


class EvaluationError(Exception):
    """Evaluation cannot run; ``code`` is one of EXIT_CODES."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def open_encoder(path, threads=1):
    """ActivityEncoder for a .pt (torch) or .onnx (onnxruntime) file."""
    from muse_encoder.inference import ActivityEncoder
    path = Path(path)
    if not path.is_file():
        raise EvaluationError('E_CHECKPOINT', f'{path}: no such model file (.pt or .onnx)')
    try:
        if path.suffix == '.onnx':
            return ActivityEncoder(backend='onnx', onnx_path=path, threads=threads)
        return ActivityEncoder(path, backend='torch', threads=threads)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise EvaluationError('E_CHECKPOINT', f'{path}: cannot open the model: {exc}') from exc


def map_labels(windows, class_names, source):
    """The windows' label ids as ids of the model's classes (matched by name)."""
    index = {name: i for i, name in enumerate(class_names)}
    present = sorted(set(windows.labels.tolist()))
    unknown = [windows.class_names[c] for c in present if windows.class_names[c] not in index]
    if unknown:
        raise EvaluationError('E_LABELS', f'{source}: classes {unknown} are not classes of the model '
                              f'({list(class_names)})')
    lookup = np.array([index.get(name, -1) for name in windows.class_names])
    return lookup[windows.labels]


def collect_logits(encoder, paths, transient='auto', batch_size=256):
    """(logits before the temperature (N, C), label ids of the model's classes (N,), one
    description per path) of the encoder on every window of ``paths``."""
    all_logits, all_labels, sources = [], [], []
    for path in paths:
        try:
            windows = load_windows(path, encoder.features, progress=False)
        except DatasetError as exc:
            raise EvaluationError('E_DATA', str(exc)) from exc
        windows = apply_transient_policy(windows, transient)
        if not len(windows):
            raise EvaluationError('E_DATA', f'{path}: no labelled windows to evaluate')
        labels = map_labels(windows, encoder.class_names, path)
        statics = windows.statics.copy()
        for i, name in enumerate(STATIC_INPUTS):
            statics[~np.isfinite(statics[:, i]), i] = encoder.static_defaults[name]
        for first in range(0, len(windows), batch_size):
            try:
                logits, _ = encoder.logits_batch(windows.acc_g[first:first + batch_size],
                                                 windows.sample_rate, statics[first:first + batch_size])
            except FeatureInputError as exc:
                raise EvaluationError('E_DATA', f'{path}: {exc}') from exc
            all_logits.append(logits)
        all_labels.append(labels)
        sources.append({'path': str(path), 'windows': int(len(windows)),
                        'subjects': sorted(set(windows.subjects.tolist())),
                        'sample_rate_hz': float(windows.sample_rate)})
    return np.concatenate(all_logits), np.concatenate(all_labels), sources


def evaluate(encoder, paths, transient='auto', batch_size=256):
    """(metrics dict, evaluated class ids) of the encoder on every window of ``paths``."""
    logits, labels, sources = collect_logits(encoder, paths, transient, batch_size)
    probabilities = metric_fns.softmax(logits, encoder.temperature)
    evaluated = sorted(set(labels.tolist()))
    result = metric_fns.summarise(labels, probabilities.argmax(axis=1), encoder.class_names, evaluated)
    uncalibrated = metric_fns.softmax(logits)
    result.update({
        'mean_confidence': float(probabilities.max(axis=1).mean()),
        'expected_calibration_error': metric_fns.expected_calibration_error(probabilities, labels),
        'temperature': float(encoder.temperature),
        'uncalibrated': {'mean_confidence': float(uncalibrated.max(axis=1).mean()),
                         'expected_calibration_error': metric_fns.expected_calibration_error(uncalibrated, labels)},
        'data': sources, 'transient': transient, 'backend': encoder.backend,
    })
    return result, evaluated


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m muse_encoder.evaluate',
        description='Score an encoder (.pt or .onnx) on PPG-DaLiA subjects or labelled-window .npz files.')
    parser.add_argument('checkpoint', type=Path, help='model: a .pt checkpoint or an exported .onnx')
    parser.add_argument('data', type=Path, nargs='+',
                        help='PPG-DaLiA subject folders or .pkl files, or .npz files of windows')
    parser.add_argument('--output-dir', type=Path, required=True, help='where metrics.json and the PNG go')
    parser.add_argument('--transient', choices=TRANSIENT_POLICIES, default='auto',
                        help="class id 0: 'auto' drops PPG-DaLiA's transient, keeps other data's class 0")
    parser.add_argument('--threads', type=int, default=1, help='inference threads (default 1)')
    args = parser.parse_args(argv)
    try:
        encoder = open_encoder(args.checkpoint, args.threads)
        result, evaluated = evaluate(encoder, args.data, args.transient)
    except EvaluationError as exc:
        print(f'muse_evaluate_encoder: error [{exc.code}]: {exc}', file=sys.stderr)
        return EXIT_CODES[exc.code]
    result['checkpoint'] = str(args.checkpoint)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
    from muse_encoder import plots
    plots.confusion(result['confusion_matrix'], encoder.class_names, evaluated,
                    args.output_dir / 'confusion_matrix.png',
                    f'{args.checkpoint.name} on {result["windows"]} windows: accuracy '
                    f'{result["accuracy"]:.3f}, macro-F1 {result["macro_f1"]:.3f}')
    print(f'{result["windows"]} windows: accuracy {result["accuracy"]:.3f}, macro-F1 '
          f'{result["macro_f1"]:.3f}, mean confidence {result["mean_confidence"]:.3f}, ECE '
          f'{result["expected_calibration_error"]:.3f} (temperature {result["temperature"]:.2f}; '
          f'uncalibrated ECE {result["uncalibrated"]["expected_calibration_error"]:.3f}); wrote '
          f'{args.output_dir / "metrics.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
