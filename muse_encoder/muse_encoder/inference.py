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


SMOOTHING_METHODS = ('none', 'ema', 'majority', 'hmm', 'evidence')
DEFAULT_SMOOTHING = 'evidence'
_LOG_FLOOR = 1e-6              # probabilities are floored here before logs: one window cannot veto


@dataclass(frozen=True)
class SmoothingSettings:
    """How the published class follows the per-window probabilities (ProbabilitySmoother).

    ``hmm`` and ``evidence`` work in data time: every window brings ``dt_s`` seconds of new
    data (the stride), so their behaviour per second of data does not depend on the stride.
    ``ema`` and ``majority`` work per window.
    """

    method: str = DEFAULT_SMOOTHING
    alpha: float = 0.5                 # ema: weight of the newest window
    window: int = 5                    # majority: windows voting
    # evidence: 2 nats and 0.5 nat*s chosen at temperature 0.833, re-expressed for the refitted
    # 1.153 (leads scale with 1 / T): the same decisions on the same logits.
    margin: float = 1.44               # evidence: log-probability lead [nats] that counts
    threshold: float = 0.36            # evidence: lead beyond the margin, summed [nat s], to switch
    switch_rate: float = 1.0 / 300     # hmm: prior rate of activity changes [1/s of data]
    evidence_weight: float = 1.0       # hmm: exponent of a window's likelihood per second of data

    def problem(self):
        """A message naming what is wrong with these settings, or None if they are usable."""
        if self.method not in SMOOTHING_METHODS:
            return f'smoothing method must be one of {SMOOTHING_METHODS}, got {self.method!r}'
        if not (_is_number(self.alpha) and 0 < self.alpha <= 1):
            return f'smoothing alpha must be in (0, 1], got {self.alpha!r}'
        if not (isinstance(self.window, int) and not isinstance(self.window, bool) and self.window >= 1):
            return f'smoothing window must be an integer >= 1, got {self.window!r}'
        for name in ('margin', 'threshold', 'switch_rate', 'evidence_weight'):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value < float('inf')):
                return f'smoothing {name} must be a finite number >= 0, got {value!r}'
        if not self.evidence_weight > 0:
            return f'smoothing evidence_weight must be > 0, got {self.evidence_weight!r}'
        return None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class ProbabilitySmoother:
    """Turns per-window class probabilities into the published class, without flicker.

    - ``'none'``: each window's own arg-max.
    - ``'ema'``: exponential moving average of the probabilities, ``s = a p + (1 - a) s``;
      ``alpha`` = 1 is no smoothing.
    - ``'majority'``: the most frequent arg-max among the last ``window`` estimates (ties go
      to the class seen most recently); confidence is that class's mean probability there.
    - ``'hmm'``: forward filter of a hidden Markov model whose state is the activity: between
      windows the state stays with probability ``exp(-switch_rate dt)`` (else it moves to any
      other class alike), and each window's probabilities, raised to ``evidence_weight dt``
      (overlapping windows are not independent observations: evidence counts per second of
      data, not per window), weigh the states. Publishes the posterior's arg-max.
    - ``'evidence'`` (the node's default): a change detector, one CUSUM (Page 1954) per class.
      A class's lead in a window is its log-probability minus the best other class's; beyond
      ``margin`` nats it is evidence, below it counter-evidence, and evidence is summed over
      data time (``dt`` seconds per window, floored at 0). The published class switches when
      another class's sum reaches ``threshold`` [nat s]; then all sums restart. A confident
      new activity (lead 4 nats) switches after ``threshold / (4 - margin)`` s of data; a
      window or two of a moderately confident wrong class (lead < margin) never does. The
      confidence is the newest window's probability of the published class, so moments when
      the windows disagree with it read as uncertain.

    ``update(p, dt_s)`` takes one window's probabilities and the data time since the previous
    window [s] and returns ``(class_id, confidence, smoothed_probabilities)``.
    """

    def __init__(self, method=DEFAULT_SMOOTHING, alpha=0.5, window=5, **settings):
        self.configure(SmoothingSettings(method, alpha, window, **settings))

    def configure(self, settings):
        problem = settings.problem()
        if problem:
            raise ValueError(problem)
        self.settings = settings
        self.method, self.alpha, self.window = settings.method, float(settings.alpha), int(settings.window)
        self.reset()

    def reset(self):
        self._state = None                       # ema average / hmm posterior / evidence sums
        self._current = None                     # evidence: the published class
        self._recent = deque(maxlen=self.window)

    def update(self, probabilities, dt_s=1.0):
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)):
            raise ValueError(f'probabilities must be a finite 1-D vector, got shape {p.shape}')
        if not (_is_number(dt_s) and dt_s > 0):
            raise ValueError(f'dt_s must be a positive number of seconds, got {dt_s!r}')
        if self._state is not None and self._state.shape != p.shape:
            self.reset()                         # another model: start afresh
        update = getattr(self, f'_update_{self.method}')
        class_id, smoothed = update(p, float(dt_s))
        if self.method == 'evidence':
            return class_id, float(p[class_id]), p.astype(np.float32)
        return class_id, float(smoothed[class_id]), smoothed.astype(np.float32)

    def _update_none(self, p, dt_s):
        return int(np.argmax(p)), p

    def _update_ema(self, p, dt_s):
        self._state = p if self._state is None else self.alpha * p + (1 - self.alpha) * self._state
        return int(np.argmax(self._state)), self._state

    def _update_majority(self, p, dt_s):
        self._recent.append(p)
        recent = np.stack(self._recent)
        votes = np.bincount(recent.argmax(axis=1), minlength=p.size)
        tied = np.flatnonzero(votes == votes.max())
        latest_vote = {int(c): i for i, c in enumerate(recent.argmax(axis=1))}
        class_id = int(max(tied, key=lambda c: latest_vote.get(int(c), -1)))
        return class_id, recent.mean(axis=0)

    def _update_hmm(self, p, dt_s):
        classes = p.size
        if self._state is None:
            self._state = np.full(classes, 1.0 / classes)
        stay = np.exp(-self.settings.switch_rate * dt_s)
        predicted = stay * self._state + (1 - stay) * (1 - self._state) / max(classes - 1, 1)
        log_posterior = np.log(predicted) + self.settings.evidence_weight * dt_s * np.log(np.maximum(p, _LOG_FLOOR))
        posterior = np.exp(log_posterior - log_posterior.max())
        self._state = posterior / posterior.sum()
        return int(np.argmax(self._state)), self._state

    def _update_evidence(self, p, dt_s):
        if self._current is None or self._state is None:
            self._current, self._state = int(np.argmax(p)), np.zeros(p.size)
        log_p = np.log(np.maximum(p, _LOG_FLOOR))
        order = np.argsort(log_p)
        best_other = np.full(p.size, log_p[order[-1]])
        best_other[order[-1]] = log_p[order[-2]] if p.size > 1 else log_p[order[-1]]
        lead = log_p - best_other
        sums = np.maximum(0.0, self._state + dt_s * (lead - self.settings.margin))
        sums[self._current] = 0.0
        challenger = int(np.argmax(sums))
        if sums[challenger] >= self.settings.threshold and sums[challenger] > 0:
            self._current = challenger
            sums[:] = 0.0
        self._state = sums
        return self._current, p
