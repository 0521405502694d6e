"""PNG figures of a training run: curves, confusion matrix, example inputs per class."""

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def training_curves(history, path, title=''):
    """history: list of per-epoch dicts with train_loss, train_accuracy, test_loss,
    test_accuracy, test_macro_f1."""
    plt = _pyplot()
    epochs = [h['epoch'] for h in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h['train_loss'] for h in history], label='train')
    ax_loss.plot(epochs, [h['test_loss'] for h in history], label='held-out subjects')
    ax_loss.set(xlabel='epoch', ylabel='cross-entropy', title='loss')
    ax_score.plot(epochs, [h['train_accuracy'] for h in history], label='train accuracy')
    ax_score.plot(epochs, [h['test_accuracy'] for h in history], label='held-out accuracy')
    ax_score.plot(epochs, [h['test_macro_f1'] for h in history], label='held-out macro-F1')
    ax_score.set(xlabel='epoch', ylim=(0, 1.02), title='scores')
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or 'activity CNN training')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion(matrix, class_names, evaluated, path, title=''):
    """Row-normalised confusion matrix of the evaluated classes, counts written in cells."""
    plt = _pyplot()
    matrix = np.asarray(matrix)[np.ix_(evaluated, evaluated)]
    names = [class_names[c] for c in evaluated]
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 3, 0.8 * len(names) + 2.5))
    image = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha='center', va='center', fontsize=8,
                        color='white' if share[i, j] > 0.5 else 'black')
    ax.set_xticks(range(len(names)), names, rotation=40, ha='right')
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel='predicted', ylabel='true', title=title or 'held-out confusion matrix')
    fig.colorbar(image, ax=ax, label='share of the true class')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mel_examples(images, labels, class_names, path, params, rng=None):
    """One random example window per class present: the x, y, z log-mel channels side by side."""
    plt = _pyplot()
    rng = rng or np.random.default_rng(0)
    present = [c for c in range(len(class_names)) if np.any(labels == c)]
    fig, axes = plt.subplots(len(present), 3, figsize=(8, 2.2 * len(present) + 0.6), squeeze=False)
    extent = (0, params.window_s, params.fmin_hz, params.fmax_hz)
    vmin, vmax = np.percentile(images, [1, 99.5])
    for row, c in enumerate(present):
        index = rng.choice(np.flatnonzero(labels == c))
        for axis in range(3):
            ax = axes[row, axis]
            # Mel bands are evenly spaced below 1 kHz, so a linear frequency axis is exact here.
            ax.imshow(images[index, axis], origin='lower', aspect='auto', extent=extent,
                      vmin=vmin, vmax=vmax, cmap='magma')
            if row == 0:
                ax.set_title(f'{"xyz"[axis]} axis')
            if axis == 0:
                ax.set_ylabel(f'{class_names[c]}\nHz')
            if row == len(present) - 1:
                ax.set_xlabel('s')
    fig.suptitle('example log-mel inputs (log10 g^2) per class')
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)
