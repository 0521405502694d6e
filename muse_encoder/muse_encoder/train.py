"""Train the activity CNN: ``muse_train_encoder``.

Data: a folder of PPG-DaLiA subjects (real or synthetic), one subject .pkl or a generic
labelled-window .npz (see muse_encoder.dataset); or ``--synthetic N`` domain-randomised
synthetic subjects (muse_sensors.synthetic.generate_wrist_stream: any orientation, either
wrist, gravity present or removed, g / m/s^2 / E4 counts, 20-100 Hz with rate error, noise,
quantisation, gaps, scaled cadences and amplitudes); or ``--watch``, the seglearn smartwatch
exercise set, evaluated by leave-subjects-out cross-validation.

Holds out 20 % of the subjects (whole subjects, seeded; or the .npz's own ``split``), and of
the remaining subjects ``--calibration-fraction`` more for temperature scaling; trains with
class-balanced cross-entropy and Adam, fits the temperature on the calibration subjects, and
writes into ``--output-dir``:

- ``<name>.pt``: the checkpoint (weights, config, class names, normalisation, feature params,
  temperature),
- ``metrics.json``: accuracy, macro-F1, per-class F1, the confusion matrix, mean confidence
  and ECE before/after temperature scaling on the held-out subjects, the per-epoch history,
  the split, the data description and the arguments,
- ``training_curves.png``, ``confusion_matrix.png``, ``mel_examples.png``.

The held-out subjects are only monitored (curves), never used to pick epochs or settings:
the reported scores are those of the last epoch.

The packaged default checkpoint is made by (see README.md)::

    nice -n 10 python -m muse_encoder.train --synthetic 24 --minutes 10 --seed 7 --epochs 20 \\
        --onnx --output-dir muse_encoder/muse_encoder/models --name default
"""

import argparse
from dataclasses import dataclass
import json
from pathlib import Path
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from muse_encoder import metrics as metric_fns
from muse_encoder import plots
from muse_encoder.checkpoint import CheckpointError, EncoderCheckpoint, load_checkpoint
from muse_encoder.dataset import (TRANSIENT_ID, TRANSIENT_POLICIES, DatasetError, apply_transient_policy,
                                  load_watch, load_windows, split_subjects, transient_dropped,
                                  windows_from_stream)
from muse_encoder.features import REPRESENTATIONS, AccelToRGBMel, FeatureParams
from muse_encoder.model import ActivityCNN, ModelConfig, count_parameters
from muse_encoder.statics import STATIC_INPUTS

# Used for a static input that no training window knows (e.g. an .npz without heart rate).
FALLBACK_STATIC_DEFAULTS = {'heart_rate_bpm': 80.0, 'age_years': 30.0, 'sex_female': 0.5,
                            'height_cm': 172.0, 'weight_kg': 70.0}


@dataclass
class FeatureSet:
    """Log-mel images of labelled windows, ready for the CNN (any mix of sample rates)."""

    images: np.ndarray         # (N, 3, M, F) float32
    labels: np.ndarray         # (N,) int64
    subjects: np.ndarray       # (N,) str
    statics: np.ndarray        # (N, 5) float32, NaN = unknown
    class_names: tuple
    split: np.ndarray = None   # (N,) 'train' / 'test' given by the data, or None
    augmented: np.ndarray = None   # (N,) bool: a rotated copy (--augment-rotations), training only

    def __post_init__(self):
        if self.augmented is None:
            self.augmented = np.zeros(len(self.labels), dtype=bool)

    def __len__(self):
        return len(self.labels)

    def subset(self, mask):
        return FeatureSet(self.images[mask], self.labels[mask], self.subjects[mask],
                          self.statics[mask], self.class_names,
                          None if self.split is None else self.split[mask], self.augmented[mask])


def rotated_copies(windows, copies, degrees, seed):
    """WindowSet -> (WindowSet with ``copies`` extra copies of every window, each turned by
    its own random rotation of up to ``degrees`` about a random axis; mask of the copies).

    Why: a wrist sensor never sits the same way twice (strap, wrist shape, how high a person
    raises the arm), and with few subjects the CNN otherwise learns each one's exact axes.
    """
    if copies <= 0:
        return windows, np.zeros(len(windows), dtype=bool)
    rng = np.random.default_rng(seed)
    n = len(windows)
    turned = []
    for _ in range(copies):
        axis = rng.standard_normal((n, 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        angle = np.radians(rng.uniform(-degrees, degrees, n))[:, None, None]
        cross = np.zeros((n, 3, 3))        # the cross-product matrix of each axis (Rodrigues)
        cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
        cross -= cross.transpose(0, 2, 1)
        rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
        turned.append((windows.acc_g @ rotation.transpose(0, 2, 1)).astype(np.float32))
    repeat = copies + 1
    extended = type(windows)(
        np.concatenate([windows.acc_g] + turned), windows.sample_rate, np.tile(windows.labels, repeat),
        np.tile(windows.subjects, repeat), np.tile(windows.statics, (repeat, 1)), windows.source,
        windows.class_names, None if windows.split is None else np.tile(windows.split, repeat))
    return extended, np.arange(n * repeat) >= n


def featurise(features, windows, batch_size=256, progress=True):
    """WindowSet -> FeatureSet."""
    with tqdm(total=len(windows), desc='log-mel features', unit='win', disable=not progress,
              leave=False) as bar:
        images = features.batched_features(windows.acc_g, windows.sample_rate, batch_size,
                                           progress=bar.update)
    return FeatureSet(images, windows.labels, windows.subjects, windows.statics,
                      tuple(windows.class_names), windows.split)


def concatenate(sets):
    return FeatureSet(np.concatenate([s.images for s in sets]), np.concatenate([s.labels for s in sets]),
                      np.concatenate([s.subjects for s in sets]), np.concatenate([s.statics for s in sets]),
                      sets[0].class_names)


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


def model_logits(model, images, statics, batch_size=512):
    """(logits, predicted ids) of the model in eval mode."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for first in range(0, len(images), batch_size):
            logits, _ = model(torch.as_tensor(images[first:first + batch_size]),
                              torch.as_tensor(statics[first:first + batch_size]))
            outputs.append(logits.numpy())
    logits = np.concatenate(outputs) if outputs else np.zeros((0, model.config.num_classes), np.float32)
    return logits, logits.argmax(axis=1)


def weighted_loss(logits, labels, class_weights):
    loss_fn = nn.CrossEntropyLoss(weight=class_weights, reduction='sum')
    labels = torch.as_tensor(labels)
    weight_sum = float(class_weights[labels].sum()) if len(labels) else 1.0
    return float(loss_fn(torch.as_tensor(logits), labels)) / max(weight_sum, 1e-12)


def load_training_data(args, features, progress):
    """(FeatureSet of every window, description of the data)."""
    if args.watch:
        windows, augmented = rotated_copies(load_watch(features, cache_dir=args.cache_dir),
                                            args.augment_rotations, args.augment_degrees, args.seed)
        data = featurise(features, windows, progress=progress)
        data.augmented = augmented
        return data, windows.source + augmentation_note(args)
    if args.synthetic is not None:
        from muse_sensors import synthetic
        domain = synthetic.DOMAIN_SHIFTED if args.domain == 'shifted' else synthetic.DOMAIN_RANDOMISED
        sets = []
        for index in tqdm(range(1, args.synthetic + 1), desc='synthetic subjects', unit='subject',
                          disable=not progress):
            stream = synthetic.generate_wrist_stream(index, args.minutes, args.seed,
                                                     balanced=args.schedule == 'balanced', domain=domain)
            windows = windows_from_stream(stream, features, recent_s=args.label_recent_s)
            sets.append(featurise(features, windows, progress=False))
        description = (f'synthetic, domain-randomised ({args.domain}): {args.synthetic} subjects x '
                       f'{args.minutes:g} min, {args.schedule} schedule, seed {args.seed}, window label = majority of '
                       f'the last {args.label_recent_s:g} s '
                       f'(muse_sensors.synthetic.generate_wrist_stream; ranges {domain.as_dict()})')
        return concatenate(sets), description
    windows, augmented = rotated_copies(load_windows(args.data, features, progress=progress),
                                        args.augment_rotations, args.augment_degrees, args.seed)
    data = featurise(features, windows, progress=progress)
    data.augmented = augmented
    return data, str(args.data) + augmentation_note(args)


def augmentation_note(args):
    if not args.augment_rotations:
        return ''
    return (f'; training windows plus {args.augment_rotations} copies rotated by up to '
            f'{args.augment_degrees:g} degrees (held-out windows are never rotated)')


def split_train_test(data, args):
    """(train names, test names, is_test mask): the data's own split, else whole subjects."""
    if data.split is not None:
        is_test = data.split == 'test'
        if not is_test.any() or is_test.all():
            raise DatasetError("the data's 'split' must name both 'train' and 'test' windows")
        return (sorted(set(data.subjects[~is_test])), sorted(set(data.subjects[is_test])), is_test)
    train_names, test_names = split_subjects(data.subjects, args.test_fraction, args.seed)
    return train_names, test_names, np.isin(data.subjects, test_names)


def calibration_subjects(train_names, fraction, seed):
    """Training subjects held back for temperature scaling (none with fewer than 3)."""
    if fraction <= 0 or len(train_names) < 3:
        return []
    _, held = split_subjects(train_names, fraction, seed + 1)
    return held


def fit_model(train_set, monitor_set, class_names, args, progress, init=None):
    """Train a fresh ActivityCNN on ``train_set``; ``monitor_set`` is only scored per epoch.
    Returns (model, static defaults, class weights, history)."""
    torch.manual_seed(args.seed)
    config = ModelConfig(class_names=tuple(class_names))
    defaults = static_defaults_from(train_set.statics)
    statics_train = fill_unknown(train_set.statics, defaults)
    statics_monitor = fill_unknown(monitor_set.statics, defaults)
    model = ActivityCNN(config)
    if init is not None:
        source = init.state_dict()
        own = model.state_dict()
        own.update({k: v for k, v in source.items() if k in own and own[k].shape == v.shape
                    and not k.startswith('fc_classes')})
        model.load_state_dict(own)
    model.set_normalisation(
        mel_mean=train_set.images.mean(axis=(0, 2, 3)), mel_std=train_set.images.std(axis=(0, 2, 3)) + 1e-6,
        static_mean=statics_train.mean(axis=0),
        # A constant input (e.g. one subject's age in a tiny set) must not divide by zero.
        static_std=np.maximum(statics_train.std(axis=0), 1e-3))

    counts = np.bincount(train_set.labels, minlength=len(class_names)).astype(float)
    weights = np.divide(counts.sum(), len(np.flatnonzero(counts)) * counts,
                        out=np.zeros_like(counts), where=counts > 0)
    class_weights = torch.tensor(weights if args.class_weights == 'balanced' else (counts > 0) * 1.0,
                                 dtype=torch.float32)
    x_train, s_train = torch.from_numpy(train_set.images), torch.from_numpy(statics_train)
    y_train = torch.from_numpy(train_set.labels)
    default_vector = torch.tensor([defaults[n] for n in STATIC_INPUTS])
    evaluated = evaluated_classes(monitor_set.labels, args.transient, class_names)

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
        logits, predicted = model_logits(model, monitor_set.images, statics_monitor)
        scores = metric_fns.summarise(monitor_set.labels, predicted, class_names, evaluated)
        history.append({'epoch': epoch, 'train_loss': loss_sum / seen, 'train_accuracy': correct / seen,
                        'test_loss': weighted_loss(logits, monitor_set.labels, class_weights),
                        'test_accuracy': scores['accuracy'], 'test_macro_f1': scores['macro_f1']})
        if progress:
            tqdm.write(f'epoch {epoch:2d}: train loss {loss_sum / seen:.3f} acc {correct / seen:.3f} | '
                       f'held-out loss {history[-1]["test_loss"]:.3f} acc {scores["accuracy"]:.3f} '
                       f'macro-F1 {scores["macro_f1"]:.3f}')
    return model.eval(), defaults, history


def evaluated_classes(labels, policy, class_names):
    evaluated = sorted(set(np.asarray(labels).tolist()))
    if transient_dropped(policy, class_names):
        evaluated = [c for c in evaluated if c != TRANSIENT_ID]
    return evaluated


def score(model, data, defaults, class_names, policy, temperature=1.0):
    """metrics.summarise plus mean confidence and ECE (at ``temperature``) of ``data``."""
    logits, predicted = model_logits(model, data.images, fill_unknown(data.statics, defaults))
    result = metric_fns.summarise(data.labels, predicted, class_names,
                                  evaluated_classes(data.labels, policy, class_names))
    result['calibration'] = metric_fns.calibration_summary(logits, data.labels, temperature)
    return result, logits


def train(args):
    """Run one training from parsed arguments; returns the metrics dict."""
    started = time.monotonic()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    progress = not args.quiet
    features = AccelToRGBMel(FeatureParams(representation=args.representation, stride_s=args.stride_s))
    data, description = load_training_data(args, features, progress)
    all_subjects = sorted(set(data.subjects))
    data = apply_transient_policy(data, args.transient)
    if len(data) == 0:
        raise DatasetError(f'{description}: no windows left after the transient policy {args.transient!r}')
    class_names = data.class_names
    init = load_checkpoint(args.init).model if args.init else None
    if args.watch or args.folds:
        return cross_validate(args, data, class_names, description, init, started, progress)

    train_names, test_names, is_test = split_train_test(data, args)
    calibration_names = calibration_subjects(train_names, args.calibration_fraction, args.seed)
    is_calibration = np.isin(data.subjects, calibration_names) & ~is_test
    train_set = data.subset(~is_test & ~is_calibration)
    test_set = data.subset(is_test & ~data.augmented)
    calibration_set = data.subset(is_calibration & ~data.augmented)
    fit_names = sorted(set(train_set.subjects))

    model, defaults, history = fit_model(train_set, test_set, class_names, args, progress, init)
    temperature, calibration_note = 1.0, 'no calibration subjects: temperature 1 (uncalibrated)'
    if len(calibration_set):
        logits, _ = model_logits(model, calibration_set.images, fill_unknown(calibration_set.statics, defaults))
        temperature = metric_fns.fit_temperature(logits, calibration_set.labels)
        calibration_note = (f'temperature fitted on {len(calibration_set)} windows of subjects '
                            f'{", ".join(calibration_names)}')
    result, _ = score(model, test_set, defaults, class_names, args.transient, temperature)
    result['calibration']['note'] = calibration_note
    elapsed = time.monotonic() - started
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = output_dir / f'{args.name}.pt'
    result.update({
        'checkpoint': checkpoint_path.name,
        'data': description,
        'evaluated_on': f'held-out subjects {", ".join(test_names)} of the same data (never trained on)',
        'transient': args.transient,
        'subjects': {'all': all_subjects, 'train': fit_names, 'calibration': calibration_names,
                     'test': test_names},
        'windows': {'train': int(len(train_set)), 'calibration': int(len(calibration_set)),
                    'test': int(len(test_set))},
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
    training_info.update(accuracy=result['accuracy'], macro_f1=result['macro_f1'],
                         calibration=result['calibration'])
    EncoderCheckpoint(model.eval(), features.params, defaults, training_info, temperature).save(checkpoint_path)
    (output_dir / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
    title = f'{args.name}: held-out subjects {", ".join(test_names)}'
    plots.training_curves(history, output_dir / 'training_curves.png', title)
    evaluated = evaluated_classes(test_set.labels, args.transient, class_names)
    plots.confusion(result['confusion_matrix'], class_names, evaluated,
                    output_dir / 'confusion_matrix.png',
                    f'held-out subjects ({", ".join(test_names)}): macro-F1 {result["macro_f1"]:.3f}')
    plots.mel_examples(train_set.images, train_set.labels, class_names, output_dir / 'mel_examples.png',
                       features.params, np.random.default_rng(args.seed))
    return result


def subject_folds(names, folds, seed):
    """Whole subjects in ``folds`` groups (seeded shuffle, sizes differing by at most one)."""
    names = sorted(set(names))
    if not 2 <= folds <= len(names):
        raise DatasetError(f'--folds must be between 2 and the number of subjects ({len(names)}), got {folds}')
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in order[k::folds]) for k in range(folds)]


def cross_validate(args, data, class_names, description, init, started, progress):
    """Leave-subjects-out cross-validation: per fold, train on the other subjects and score
    the held-out ones. Writes metrics.json (per fold and mean +- sd) and the pooled confusion
    matrix; no checkpoint (each fold's model saw different subjects)."""
    folds = subject_folds(data.subjects, args.folds or 5, args.seed)
    per_fold, pooled = [], np.zeros((len(class_names),) * 2, dtype=np.int64)
    for k, test_names in enumerate(folds, start=1):
        is_test = np.isin(data.subjects, test_names)
        train_set, test_set = data.subset(~is_test), data.subset(is_test & ~data.augmented)
        model, defaults, history = fit_model(train_set, test_set, class_names, args, progress, init)
        result, _ = score(model, test_set, defaults, class_names, args.transient)
        pooled += np.asarray(result['confusion_matrix'])
        per_fold.append({'fold': k, 'test_subjects': test_names, 'windows': int(len(test_set)),
                         'accuracy': result['accuracy'], 'macro_f1': result['macro_f1'],
                         'mean_confidence': result['calibration']['mean_confidence_before'],
                         'ece': result['calibration']['ece_before'],
                         'history': history})
        print(f'fold {k}/{len(folds)} (held out {", ".join(test_names)}): accuracy '
              f'{result["accuracy"]:.3f}, macro-F1 {result["macro_f1"]:.3f}', flush=True)
    accuracy = np.array([f['accuracy'] for f in per_fold])
    macro_f1 = np.array([f['macro_f1'] for f in per_fold])
    f1 = metric_fns.f1_per_class(pooled)
    evaluated = evaluated_classes(data.labels, args.transient, class_names)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = {
        'data': description, 'evaluation': f'leave-subjects-out cross-validation, {len(folds)} folds',
        'class_names': list(class_names), 'folds': per_fold,
        'accuracy_mean': float(accuracy.mean()), 'accuracy_sd': float(accuracy.std(ddof=1)),
        'macro_f1_mean': float(macro_f1.mean()), 'macro_f1_sd': float(macro_f1.std(ddof=1)),
        'pooled_per_class_f1': {class_names[c]: float(f1[c]) for c in evaluated},
        'pooled_confusion_matrix': pooled.tolist(),
        'windows': int((~data.augmented).sum()), 'rotated_copies': int(data.augmented.sum()),
        'subjects': sorted(set(data.subjects)),
        'arguments': {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        'training_seconds': round(time.monotonic() - started, 1),
    }
    (output_dir / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
    plots.confusion(pooled.tolist(), class_names, evaluated, output_dir / 'confusion_matrix.png',
                    f'{len(folds)}-fold leave-subjects-out: accuracy {accuracy.mean():.3f} '
                    f'+- {accuracy.std(ddof=1):.3f}')
    return result


def build_parser():
    parser = argparse.ArgumentParser(
        prog='muse_train_encoder', description='Train the MUSE activity CNN on PPG-DaLiA-format '
        'subjects (real or synthetic) or a labelled-window .npz.')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('data', nargs='?', type=Path,
                        help='folder of PPG-DaLiA subjects (S<i>/S<i>.pkl or *.pkl), a subject .pkl '
                        'or a .npz of windows')
    source.add_argument('--synthetic', type=int, metavar='N',
                        help='generate N domain-randomised synthetic subjects (muse_sensors.synthetic)')
    source.add_argument('--watch', action='store_true',
                        help='the seglearn smartwatch exercise set (downloaded once into --cache-dir), '
                        'evaluated by leave-subjects-out cross-validation')
    parser.add_argument('--domain', choices=('randomised', 'shifted'), default='randomised',
                        help='--synthetic: the randomisation ranges (shifted = the independent-check '
                        'ranges, not for training the default)')
    parser.add_argument('--stride-s', type=float, default=2.0,
                        help='data time between training windows (default 2 s; the node has its own stride)')
    parser.add_argument('--label-recent-s', type=float, default=4.0,
                        help='--synthetic: a window is labelled by the majority activity of its last '
                        'this many seconds (default 4: the model names what the wearer does now, so '
                        'the published activity follows a change sooner)')
    parser.add_argument('--cache-dir', type=Path, default=Path('.cache') / 'wheels',
                        help='--watch: where the seglearn wheel is kept (default .cache/wheels)')
    parser.add_argument('--folds', type=int, default=0,
                        help='leave-subjects-out cross-validation with this many folds instead of '
                        'one held-out split (default: 5 for --watch, else none)')
    parser.add_argument('--init', type=Path, default=None,
                        help='start from this checkpoint\'s weights (all but the class layer)')
    parser.add_argument('--representation', choices=REPRESENTATIONS, default='invariant',
                        help="features: 'invariant' (device-independent, default) or 'axes' (raw x, y, z; "
                        'only for data from one device convention)')
    parser.add_argument('--augment-rotations', type=int, default=0, metavar='K',
                        help='data or --watch: train on K extra copies of every training window, each '
                        'rotated at random by up to --augment-degrees (default 0: none)')
    parser.add_argument('--augment-degrees', type=float, default=20.0,
                        help='largest rotation of --augment-rotations, in degrees (default 20)')
    parser.add_argument('--calibration-fraction', type=float, default=0.15,
                        help='share of the training subjects held back to fit the temperature (default 0.15)')
    parser.add_argument('--minutes', type=float, default=16.0,
                        help='minutes of recording per synthetic subject (default 16)')
    parser.add_argument('--schedule', choices=('balanced', 'protocol'), default='balanced',
                        help='synthetic activity schedule: equal time per activity in random order '
                        "(default), or PPG-DaLiA's protocol durations")
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
    parser.add_argument('--transient', choices=TRANSIENT_POLICIES, default='auto',
                        help="class id 0: 'auto' (default) drops it where it is PPG-DaLiA's transient "
                        "and keeps it for data with its own label names; 'drop' or 'keep' say so")
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
    if not 0.25 <= args.stride_s <= 8:
        problems.append('--stride-s must be in [0.25, 8]')
    if not 0 < args.label_recent_s <= 8:
        problems.append('--label-recent-s must be in (0, 8]')
    if args.folds and args.folds < 2:
        problems.append('--folds must be >= 2')
    if not 0 <= args.calibration_fraction < 1:
        problems.append('--calibration-fraction must be in [0, 1)')
    if args.synthetic is not None and args.synthetic < 2:
        problems.append('--synthetic needs at least 2 subjects (whole subjects are held out)')
    if args.augment_rotations < 0 or not 0 < args.augment_degrees <= 180:
        problems.append('--augment-rotations must be >= 0 and --augment-degrees in (0, 180]')
    if args.augment_rotations and args.synthetic is not None:
        problems.append('--augment-rotations is for recorded data: --synthetic subjects are '
                        'already drawn in random orientations')
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
    try:
        result = train(args)
    except (DatasetError, CheckpointError) as exc:
        print(f'muse_train_encoder: error: {exc}', file=sys.stderr)
        return 2
    if 'folds' in result:
        print(f'{result["evaluation"]}: accuracy {result["accuracy_mean"]:.3f} +- {result["accuracy_sd"]:.3f}, '
              f'macro-F1 {result["macro_f1_mean"]:.3f} +- {result["macro_f1_sd"]:.3f} '
              f'({result["windows"]} windows; {result["training_seconds"]:.0f} s); wrote '
              f'{Path(args.output_dir) / "metrics.json"}')
        return 0
    calibration = result['calibration']
    print(f'held-out subjects {", ".join(result["subjects"]["test"])}: '
          f'macro-F1 {result["macro_f1"]:.4f}, accuracy {result["accuracy"]:.4f} '
          f'({result["windows"]["test"]} windows; {result["training_seconds"]:.0f} s); '
          f'temperature {calibration["temperature"]:.2f}: ECE {calibration["ece_before"]:.3f} -> '
          f'{calibration["ece_after"]:.3f}')
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
