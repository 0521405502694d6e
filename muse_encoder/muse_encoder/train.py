"""Train the activity CNN: ``muse_train_encoder``.

Reads a folder of PPG-DaLiA subjects (real or synthetic) or a generic labelled-window .npz
(see muse_encoder.dataset), or first generates ``--synthetic N`` subjects with
muse_sensors.synthetic. Holds out 20 % of the subjects (whole subjects, seeded), trains with
class-balanced cross-entropy and Adam, and writes into ``--output-dir``:

- ``<name>.pt``: the checkpoint (weights, config, class names, normalisation, feature params),
- ``metrics.json``: accuracy, macro-F1, per-class F1 and the confusion matrix on the held-out
  subjects, the per-epoch history, the split and the arguments,
- ``training_curves.png``, ``confusion_matrix.png``, ``mel_examples.png``.

The held-out subjects are only monitored (curves), never used to pick epochs or settings:
the reported scores are those of the last epoch.

The packaged default checkpoint is made by (see README.md)::

    muse_train_encoder --synthetic 15 --minutes 16 --seed 7 --onnx \\
        --output-dir muse_encoder/muse_encoder/models --name default
"""

import argparse
import json
from pathlib import Path
import platform
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from muse_encoder import metrics as metric_fns
from muse_encoder import plots
from muse_encoder.checkpoint import EncoderCheckpoint
from muse_encoder.dataset import (TRANSIENT_ID, TRANSIENT_POLICIES, DatasetError, load_windows,
                                  split_subjects)
from muse_encoder.features import AccelToRGBMel, FeatureParams
from muse_encoder.model import ActivityCNN, ModelConfig, count_parameters
from muse_encoder.statics import STATIC_INPUTS

# Used for a static input that no training window knows (e.g. an .npz without heart rate).
FALLBACK_STATIC_DEFAULTS = {'heart_rate_bpm': 80.0, 'age_years': 30.0, 'sex_female': 0.5,
                            'height_cm': 172.0, 'weight_kg': 70.0}


def compute_images(features, windows, batch_size=256, progress=True):
    with tqdm(total=len(windows), desc='log-mel features', unit='win', disable=not progress) as bar:
        return features.batched_features(windows.acc_g, windows.sample_rate, batch_size,
                                         progress=bar.update)


def static_defaults_from(statics):
    """Training mean of every static input (a fallback where no window knows it)."""
    defaults = {}
    for i, name in enumerate(STATIC_INPUTS):
        column = statics[:, i]
        known = column[np.isfinite(column)]
        defaults[name] = float(known.mean()) if known.size else FALLBACK_STATIC_DEFAULTS[name]
    return defaults


def fill_unknown(statics, defaults):
    filled = statics.copy()
    for i, name in enumerate(STATIC_INPUTS):
        filled[~np.isfinite(filled[:, i]), i] = defaults[name]
    return filled


def evaluate(model, images, statics, labels, class_weights, batch_size=512):
    """(mean loss, predicted ids) of the model in eval mode."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(weight=class_weights, reduction='sum')
    total, predictions = 0.0, []
    with torch.inference_mode():
        for first in range(0, len(labels), batch_size):
            logits, _ = model(images[first:first + batch_size], statics[first:first + batch_size])
            total += float(loss_fn(logits, labels[first:first + batch_size]))
            predictions.append(logits.argmax(dim=1))
    weight_sum = float(class_weights[labels].sum()) if len(labels) else 1.0
    return total / max(weight_sum, 1e-12), torch.cat(predictions).numpy()


def train(args):
    """Run one training from parsed arguments; returns the metrics dict."""
    started = time.monotonic()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    progress = not args.quiet
    features = AccelToRGBMel(FeatureParams())
    config = ModelConfig()
    class_names = config.class_names

    windows = load_windows(args.data, features, len(class_names), progress=progress)
    all_subjects = sorted(set(windows.subjects))
    windows = windows.apply_transient_policy(args.transient)
    if len(windows) == 0:
        raise DatasetError(f'{args.data}: no windows left after the transient policy {args.transient!r}')
    train_names, test_names = split_subjects(windows.subjects, args.test_fraction, args.seed)
    is_test = np.isin(windows.subjects, test_names)
    train_set, test_set = windows.subset(~is_test), windows.subset(is_test)
    evaluated = sorted(set(test_set.labels.tolist()))
    if args.transient == 'drop':
        evaluated = [c for c in evaluated if c != TRANSIENT_ID]

    images_train = compute_images(features, train_set, progress=progress)
    images_test = compute_images(features, test_set, progress=progress)
    defaults = static_defaults_from(train_set.statics)
    statics_train = fill_unknown(train_set.statics, defaults)
    statics_test = fill_unknown(test_set.statics, defaults)

    model = ActivityCNN(config)
    model.set_normalisation(
        mel_mean=images_train.mean(axis=(0, 2, 3)), mel_std=images_train.std(axis=(0, 2, 3)) + 1e-6,
        static_mean=statics_train.mean(axis=0),
        # A constant input (e.g. one subject's age in a tiny set) must not divide by zero.
        static_std=np.maximum(statics_train.std(axis=0), 1e-3))

    counts = np.bincount(train_set.labels, minlength=len(class_names)).astype(float)
    weights = np.divide(counts.sum(), len(np.flatnonzero(counts)) * counts,
                        out=np.zeros_like(counts), where=counts > 0)
    class_weights = torch.tensor(weights if args.class_weights == 'balanced' else (counts > 0) * 1.0,
                                 dtype=torch.float32)

    x_train, s_train = torch.from_numpy(images_train), torch.from_numpy(statics_train)
    y_train = torch.from_numpy(train_set.labels)
    x_test, s_test = torch.from_numpy(images_test), torch.from_numpy(statics_test)
    y_test = torch.from_numpy(test_set.labels)
    default_vector = torch.tensor([defaults[n] for n in STATIC_INPUTS])

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(y_train) / args.batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights)
    shuffler = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=shuffler)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch}/{args.epochs}', unit='batch',
                   disable=not progress, leave=False)
        for step in bar:
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            statics = s_train[batch].clone()
            # Static dropout: the node meets unknown heart rate / profile and then feeds the
            # training means, so the model learns to cope with exactly that input.
            dropped = torch.rand(statics.shape, generator=shuffler) < args.static_dropout
            statics[dropped] = default_vector.expand_as(statics)[dropped]
            logits, _ = model(x_train[batch], statics)
            loss = loss_fn(logits, y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(batch)
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(dim=1) == y_train[batch]).sum())
            bar.set_postfix(loss=f'{loss_sum / seen:.3f}', acc=f'{correct / seen:.3f}')
        test_loss, predicted = evaluate(model, x_test, s_test, y_test, class_weights)
        scores = metric_fns.summarise(test_set.labels, predicted, class_names, evaluated)
        history.append({'epoch': epoch, 'train_loss': loss_sum / seen, 'train_accuracy': correct / seen,
                        'test_loss': test_loss, 'test_accuracy': scores['accuracy'],
                        'test_macro_f1': scores['macro_f1']})
        if progress:
            tqdm.write(f'epoch {epoch:2d}: train loss {loss_sum / seen:.3f} acc {correct / seen:.3f} | '
                       f'held-out loss {test_loss:.3f} acc {scores["accuracy"]:.3f} '
                       f'macro-F1 {scores["macro_f1"]:.3f}')

    _, predicted = evaluate(model, x_test, s_test, y_test, class_weights)
    result = metric_fns.summarise(test_set.labels, predicted, class_names, evaluated)
    elapsed = time.monotonic() - started
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = output_dir / f'{args.name}.pt'
    result.update({
        'checkpoint': checkpoint_path.name,
        'data': str(args.data_description),
        'transient': args.transient,
        'subjects': {'all': all_subjects, 'train': train_names, 'test': test_names},
        'windows': {'train': int(len(train_set)), 'test': int(len(test_set))},
        'parameters': count_parameters(model),
        'history': history,
        'arguments': {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                      if k != 'data_description'},
        'training_seconds': round(elapsed, 1),
        'environment': {'torch': torch.__version__, 'python': platform.python_version(),
                        'threads': args.threads},
    })
    training_info = {k: result[k] for k in ('data', 'transient', 'subjects', 'windows',
                                            'arguments', 'training_seconds')}
    training_info.update(accuracy=result['accuracy'], macro_f1=result['macro_f1'])
    EncoderCheckpoint(model.eval(), features.params, defaults, training_info).save(checkpoint_path)
    (output_dir / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
    title = f'{args.name}: held-out subjects {", ".join(test_names)}'
    plots.training_curves(history, output_dir / 'training_curves.png', title)
    plots.confusion(result['confusion_matrix'], class_names, evaluated,
                    output_dir / 'confusion_matrix.png',
                    f'held-out subjects ({", ".join(test_names)}): macro-F1 {result["macro_f1"]:.3f}')
    plots.mel_examples(images_train, train_set.labels, class_names, output_dir / 'mel_examples.png',
                       features.params, np.random.default_rng(args.seed))
    return result


def build_parser():
    parser = argparse.ArgumentParser(
        prog='muse_train_encoder', description='Train the MUSE activity CNN on PPG-DaLiA-format '
        'subjects (real or synthetic) or a labelled-window .npz.')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('data', nargs='?', type=Path,
                        help='folder of PPG-DaLiA subjects (S<i>/S<i>.pkl or *.pkl) or a .npz of windows')
    source.add_argument('--synthetic', type=int, metavar='N',
                        help='generate N synthetic subjects with muse_sensors.synthetic first')
    parser.add_argument('--minutes', type=float, default=16.0,
                        help='minutes of recording per synthetic subject (default 16)')
    parser.add_argument('--schedule', choices=('balanced', 'protocol'), default='balanced',
                        help='synthetic activity schedule: equal time per activity in random order '
                        "(default), or PPG-DaLiA's protocol durations")
    parser.add_argument('--data-dir', type=Path, default=None,
                        help='where --synthetic writes its subjects (default: a temporary folder)')
    parser.add_argument('--output-dir', type=Path, default=Path('encoder_run'),
                        help='folder for the checkpoint, metrics.json and PNGs (default encoder_run)')
    parser.add_argument('--name', default='encoder', help='checkpoint file name without .pt')
    parser.add_argument('--epochs', type=int, default=25)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=2e-3, help='peak learning rate (one-cycle)')
    parser.add_argument('--weight-decay', type=float, default=1e-4)
    parser.add_argument('--seed', type=int, default=0,
                        help='seeds the subject split, initialisation, shuffling and synthetic data')
    parser.add_argument('--test-fraction', type=float, default=0.2,
                        help='share of whole subjects held out for evaluation (default 0.2)')
    parser.add_argument('--transient', choices=TRANSIENT_POLICIES, default='drop',
                        help='drop transient (id 0) windows from training and evaluation (default), '
                        'or keep them as class 0')
    parser.add_argument('--class-weights', choices=('balanced', 'none'), default='balanced',
                        help='weight the loss by inverse class frequency (default) or not')
    parser.add_argument('--static-dropout', type=float, default=0.2,
                        help='chance that a static input is replaced by its default while training')
    parser.add_argument('--onnx', action='store_true',
                        help='also export <name>.onnx next to the checkpoint (muse_export_encoder) and verify it')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    return parser


def _check(parser, args):
    problems = []
    if args.synthetic is not None and args.synthetic < 2:
        problems.append('--synthetic needs at least 2 subjects (whole subjects are held out)')
    if args.minutes <= 0:
        problems.append('--minutes must be > 0')
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1:
        problems.append('--epochs, --batch-size and --threads must be >= 1')
    if not 0 < args.test_fraction < 1:
        problems.append('--test-fraction must be between 0 and 1')
    if not 0 <= args.static_dropout < 1:
        problems.append('--static-dropout must be in [0, 1)')
    if args.lr <= 0:
        problems.append('--lr must be > 0')
    if problems:
        parser.error('; '.join(problems))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    with tempfile.TemporaryDirectory(prefix='muse_subjects_') as scratch:
        if args.synthetic is not None:
            from muse_sensors.synthetic import write_subject
            folder = args.data_dir or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            for index in tqdm(range(1, args.synthetic + 1), desc='synthetic subjects',
                              unit='subject', disable=args.quiet):
                write_subject(folder, index, args.minutes, args.seed,
                              balanced=args.schedule == 'balanced')
            args.data = folder
            args.data_description = (f'synthetic: {args.synthetic} subjects x {args.minutes:g} min, '
                                     f'{args.schedule} schedule, seed {args.seed} (muse_sensors.synthetic)')
        else:
            args.data_description = str(args.data)
        try:
            result = train(args)
        except DatasetError as exc:
            print(f'muse_train_encoder: error: {exc}', file=sys.stderr)
            return 2
    print(f'held-out subjects {", ".join(result["subjects"]["test"])}: '
          f'macro-F1 {result["macro_f1"]:.4f}, accuracy {result["accuracy"]:.4f} '
          f'({result["windows"]["test"]} windows; {result["training_seconds"]:.0f} s)')
    for name, f1 in result['per_class_f1'].items():
        print(f'  {name:>14s}  F1 {f1:.3f}')
    checkpoint_path = Path(args.output_dir) / result['checkpoint']
    print(f'wrote {checkpoint_path}, metrics.json and PNGs in {args.output_dir}')
    if args.onnx:
        from muse_encoder.export import compare_with_torch, export_onnx
        onnx_path = export_onnx(checkpoint_path, checkpoint_path.with_suffix('.onnx'))
        differences = compare_with_torch(checkpoint_path, onnx_path)
        print(f'wrote {onnx_path}; onnxruntime vs torch max |diff| '
              + ', '.join(f'{k} {v:.2g}' for k, v in differences.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
