"""Running a trained encoder on one window, and smoothing its estimates over time.

``ActivityEncoder`` = AccelToRGBMel + the CNN, in onnxruntime (the default: an exported
.onnx file carries everything needed, and torch is never imported) or PyTorch (a .pt
checkpoint), with the model's feature parameters, class names, static defaults and
temperature. ``ProbabilitySmoother`` keeps the published label from flapping between
neighbouring windows. No rclpy here: the node is a thin adapter around these two classes.
"""

from collections import deque
from dataclasses import dataclass
from pathlib import Path
import time

import numpy as np

from muse_encoder.features import AccelToRGBMel
from muse_encoder.metrics import softmax as temperature_softmax
from muse_encoder.onnx_model import DEFAULT_CHECKPOINT, open_onnx_session, read_metadata
from muse_encoder.statics import Statics

BACKENDS = ('onnx', 'torch')
DEFAULT_BACKEND = 'onnx'


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

    ``checkpoint``: path of the .pt (None = the packaged default). ``backend``: 'onnx' runs
    ``onnx_path`` (made by ``muse_export_encoder`` from the checkpoint; None = the
    checkpoint's path with the suffix .onnx) and reads its settings from the file's metadata,
    without torch; 'torch' loads the checkpoint. ``threads`` limits the intra-op threads
    (None leaves torch's global setting; onnxruntime then uses 1).
    """

    def __init__(self, checkpoint=None, backend=DEFAULT_BACKEND, onnx_path=None, threads=None):
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        self.backend = backend
        self._session = self.model = None
        if backend == 'onnx':
            if onnx_path is None and checkpoint and not Path(checkpoint).exists():
                raise FileNotFoundError(f'encoder checkpoint {checkpoint} does not exist (nor its .onnx)')
            onnx_path = Path(onnx_path or Path(checkpoint or DEFAULT_CHECKPOINT).with_suffix('.onnx'))
            self._session = open_onnx_session(onnx_path, threads=threads or 1)
            meta = read_metadata(self._session, onnx_path)
            feature_params, self.class_names = meta.feature_params, meta.class_names
            self.static_defaults, self.temperature = dict(meta.static_defaults), meta.temperature
            self._embedding_dim = meta.embedding_dim
        else:
            import torch
            from muse_encoder.checkpoint import load_checkpoint
            loaded = load_checkpoint(checkpoint)
            self.model = loaded.model.eval()
            feature_params, self.class_names = loaded.feature_params, tuple(loaded.class_names)
            self.static_defaults, self.temperature = dict(loaded.static_defaults), loaded.temperature
            self._embedding_dim = self.model.config.embedding_dim
            if threads is not None:
                torch.set_num_threads(int(threads))
        self.features = AccelToRGBMel(feature_params)

    @property
    def embedding_dim(self):
        return self._embedding_dim

    def _run_model(self, images, statics):
        if self._session is not None:
            logits, embedding = self._session.run(None, {'mel': images, 'statics': statics})
            return logits, embedding
        import torch
        with torch.inference_mode():
            logits, embedding = self.model(torch.from_numpy(images), torch.from_numpy(statics))
        return logits.numpy(), embedding.numpy()

    def logits_batch(self, acc_g, sample_rate, statics):
        """Windows (B, T, 3) in g and a (B, 5) static matrix (defaults already filled in)
        -> (logits (B, C), embeddings (B, E)), before the temperature."""
        images = self.features(acc_g, sample_rate)
        return self._run_model(images, np.ascontiguousarray(statics, dtype=np.float32))

    def predict_batch(self, acc_g, sample_rate, statics):
        """Like logits_batch, but calibrated probabilities (B, C) instead of logits."""
        logits, embedding = self.logits_batch(acc_g, sample_rate, statics)
        return softmax(logits, self.temperature), embedding

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
        probabilities = softmax(logits, self.temperature)[0]
        class_id = int(np.argmax(probabilities))
        return Prediction(
            probabilities=probabilities, embedding=embedding[0].astype(np.float32, copy=False),
            class_id=class_id, label=self.class_names[class_id],
            confidence=float(probabilities[class_id]), statics_used=vector,
            defaulted=statics.unknown(),
            feature_ms=(featured - start) * 1e3, model_ms=(done - featured) * 1e3)


def softmax(logits, temperature=1.0):
    return temperature_softmax(logits, temperature)


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
