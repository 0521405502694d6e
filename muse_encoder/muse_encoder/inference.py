"""Running a trained encoder on one window, and smoothing its estimates over time.

``ActivityEncoder`` = AccelToRGBMel + the CNN (PyTorch, or an exported ONNX graph through
onnxruntime), with the checkpoint's feature parameters, class names and static defaults.
``ProbabilitySmoother`` keeps the published label from flapping between neighbouring windows.
No rclpy here: the node is a thin adapter around these two classes.
"""

from collections import deque
from dataclasses import dataclass
from pathlib import Path
import time

import numpy as np
import torch

from muse_encoder.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from muse_encoder.features import AccelToRGBMel
from muse_encoder.statics import Statics

BACKENDS = ('torch', 'onnx')


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray        # (num_classes,) float32, sums to 1
    embedding: np.ndarray            # (embedding_dim,) float32, the CNN's penultimate layer
    class_id: int                    # arg-max of probabilities
    label: str
    confidence: float                # probabilities[class_id]
    statics_used: np.ndarray         # (5,) the static inputs after defaults were filled in
    defaulted: tuple                 # names of the static inputs that were unknown
    feature_ms: float
    model_ms: float

    @property
    def total_ms(self):
        return self.feature_ms + self.model_ms


class ActivityEncoder:
    """Features + CNN for single windows or batches.

    ``checkpoint``: path (None = the packaged default). ``backend``: 'torch', or 'onnx' with
    ``onnx_path`` (made by ``muse_export_encoder`` from the same checkpoint; None = the
    checkpoint's path with the suffix .onnx, where the exporter writes by default). ``threads``
    limits torch's / onnxruntime's intra-op threads (None leaves torch's global setting).
    """

    def __init__(self, checkpoint=None, backend='torch', onnx_path=None, threads=None):
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        self.checkpoint = load_checkpoint(checkpoint)
        self.features = AccelToRGBMel(self.checkpoint.feature_params)
        self.class_names = tuple(self.checkpoint.class_names)
        self.static_defaults = dict(self.checkpoint.static_defaults)
        self.model = self.checkpoint.model.eval()
        self.backend = backend
        if threads is not None and backend == 'torch':
            torch.set_num_threads(int(threads))
        self._session = None
        if backend == 'onnx':
            from muse_encoder.export import open_onnx_session
            onnx_path = onnx_path or Path(checkpoint or DEFAULT_CHECKPOINT).with_suffix('.onnx')
            self._session = open_onnx_session(onnx_path, threads=threads or 1)

    @property
    def embedding_dim(self):
        return self.model.config.embedding_dim

    def _run_model(self, images, statics):
        if self._session is not None:
            logits, embedding = self._session.run(None, {'mel': images, 'statics': statics})
            return logits, embedding
        with torch.inference_mode():
            logits, embedding = self.model(torch.from_numpy(images), torch.from_numpy(statics))
        return logits.numpy(), embedding.numpy()

    def predict_batch(self, acc_g, sample_rate, statics):
        """Windows (B, T, 3) in g and a (B, 5) static matrix (defaults already filled in)
        -> (probabilities (B, C), embeddings (B, E)). Used for evaluation and export checks."""
        images = self.features(acc_g, sample_rate)
        statics = np.ascontiguousarray(statics, dtype=np.float32)
        logits, embedding = self._run_model(images, statics)
        return softmax(logits), embedding

    def predict(self, acc_g, sample_rate, statics=None):
        """One window (T, 3) in g at ``sample_rate`` -> Prediction. ``statics``: a Statics
        (unknown fields are filled with the checkpoint's defaults) or None (all unknown)."""
        statics = statics if statics is not None else Statics()
        start = time.perf_counter()
        image = self.features(acc_g, sample_rate)[np.newaxis]
        vector = statics.vector(self.static_defaults)
        featured = time.perf_counter()
        logits, embedding = self._run_model(image, vector[np.newaxis])
        done = time.perf_counter()
        probabilities = softmax(logits)[0]
        class_id = int(np.argmax(probabilities))
        return Prediction(
            probabilities=probabilities, embedding=embedding[0].astype(np.float32, copy=False),
            class_id=class_id, label=self.class_names[class_id],
            confidence=float(probabilities[class_id]), statics_used=vector,
            defaulted=statics.unknown(),
            feature_ms=(featured - start) * 1e3, model_ms=(done - featured) * 1e3)


def softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


SMOOTHING_METHODS = ('none', 'ema', 'majority')


class ProbabilitySmoother:
    """Temporal smoothing of per-window class probabilities.

    - ``'none'``: each window's own arg-max.
    - ``'ema'``: exponential moving average of the probabilities, ``s = a p + (1 - a) s``;
      ``alpha`` = 1 is no smoothing; with 2 s windows, alpha 0.5 forgets in ~4 s.
    - ``'majority'``: the most frequent arg-max among the last ``window`` estimates (ties go
      to the class seen most recently); confidence is that class's mean probability there.

    ``update(p)`` returns ``(class_id, confidence, smoothed_probabilities)``.
    """

    def __init__(self, method='ema', alpha=0.5, window=5):
        self.configure(method, alpha, window)

    @staticmethod
    def validate(method, alpha, window):
        """A message naming what is wrong with these settings, or None if they are usable."""
        if method not in SMOOTHING_METHODS:
            return f'smoothing method must be one of {SMOOTHING_METHODS}, got {method!r}'
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            return f'smoothing alpha must be in (0, 1], got {alpha!r}'
        if not (isinstance(window, int) and window >= 1):
            return f'smoothing window must be an integer >= 1, got {window!r}'
        return None

    def configure(self, method, alpha, window):
        problem = self.validate(method, alpha, window)
        if problem:
            raise ValueError(problem)
        self.method, self.alpha, self.window = method, float(alpha), int(window)
        self.reset()

    def reset(self):
        self._ema = None
        self._recent = deque(maxlen=self.window)

    def update(self, probabilities):
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)):
            raise ValueError(f'probabilities must be a finite 1-D vector, got shape {p.shape}')
        if self.method == 'ema':
            self._ema = p if self._ema is None or self._ema.shape != p.shape else (
                self.alpha * p + (1 - self.alpha) * self._ema)
            smoothed = self._ema
            class_id = int(np.argmax(smoothed))
            return class_id, float(smoothed[class_id]), smoothed.astype(np.float32)
        if self.method == 'majority':
            self._recent.append(p)
            recent = np.stack(self._recent)
            votes = np.bincount(recent.argmax(axis=1), minlength=p.size)
            tied = np.flatnonzero(votes == votes.max())
            latest_vote = {int(c): i for i, c in enumerate(recent.argmax(axis=1))}
            class_id = int(max(tied, key=lambda c: latest_vote.get(int(c), -1)))
            smoothed = recent.mean(axis=0)
            return class_id, float(smoothed[class_id]), smoothed.astype(np.float32)
        class_id = int(np.argmax(p))
        return class_id, float(p[class_id]), p.astype(np.float32)
