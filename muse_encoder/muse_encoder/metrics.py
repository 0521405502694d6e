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


def softmax(logits, temperature=1.0):
    """Row-wise softmax of ``logits / temperature`` (float64 inside, float32 out)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def expected_calibration_error(probabilities, true, bins=15):
    """ECE: the window-weighted mean |accuracy - mean confidence| over equal-width
    confidence bins of the top probability (Guo et al. 2017)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return float('nan')
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def fit_temperature(logits, true, bounds=(0.05, 20.0)):
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)
    on held-out windows (temperature scaling, Guo et al. 2017); 1.0 without windows."""
    from scipy.optimize import minimize_scalar
    logits = np.asarray(logits, dtype=np.float64)
    true = np.asarray(true, dtype=int)
    if not len(true):
        return 1.0

    def nll(log_t):
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(true)), true]))

    found = minimize_scalar(nll, bounds=tuple(np.log(bounds)), method='bounded')
    return float(np.exp(found.x))


def calibration_summary(logits, true, temperature):
    """Mean top probability and ECE before (T = 1) and after temperature scaling."""
    before, after = softmax(logits), softmax(logits, temperature)
    return {'temperature': float(temperature),
            'mean_confidence_before': float(before.max(axis=1).mean()) if len(before) else float('nan'),
            'mean_confidence_after': float(after.max(axis=1).mean()) if len(after) else float('nan'),
            'ece_before': expected_calibration_error(before, true),
            'ece_after': expected_calibration_error(after, true)}
