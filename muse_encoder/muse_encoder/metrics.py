"""Classification metrics on held-out windows (plain numpy)."""

import numpy as np


def confusion_matrix(true, predicted, num_classes):
    """(C, C) counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    return matrix


def f1_per_class(matrix):
    """F1 of every class from a confusion matrix (0 where a class has no true or predicted windows)."""
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    denominator = predicted + actual
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def summarise(true, predicted, class_names, evaluated):
    """accuracy, macro-F1 over the ``evaluated`` class ids, per-class F1 and the matrix."""
    matrix = confusion_matrix(true, predicted, len(class_names))
    f1 = f1_per_class(matrix)
    evaluated = sorted(int(c) for c in evaluated)
    true = np.asarray(true)
    return {
        'windows': int(len(true)),
        'accuracy': float(np.mean(np.asarray(predicted) == true)) if len(true) else float('nan'),
        'macro_f1': float(np.mean(f1[evaluated])) if evaluated else float('nan'),
        'per_class_f1': {class_names[c]: float(f1[c]) for c in evaluated},
        'evaluated_classes': [class_names[c] for c in evaluated],
        'class_names': list(class_names),
        'confusion_matrix': matrix.tolist(),
    }
