"""ROS 2 node ``activity_encoder``: wrist IMU + heart rate + profile -> ActivityEstimate.

Subscribes ``imu`` (sensor_msgs/Imu, m/s^2), ``heart_rate`` (muse_msgs/HeartRate) and
``user_profile`` (muse_msgs/UserProfile, latched); keeps the last 8 s of acceleration and,
every ``stride_s`` of data (counted in IMU samples, so accelerated or slowed replay works;
:mod:`muse_encoder.stream`), hands the window to a worker thread that runs AccelToRGBMel + the
CNN (muse_encoder.inference) and publishes an ``ActivityEstimate`` on ``activity``.

Lifecycle: configure loads the model and starts the worker; estimates are published only while
active; cleanup stops the worker and lets the model go.

Missing inputs degrade, never fail: without a heart rate (none yet, or none for
``heart_rate_timeout_s`` of data) or a profile, the ``default_*`` parameters are used, and
where those are 0 the checkpoint's training means (logged once; counted in diagnostics).
"""

import os
import sys
import threading

from muse_msgs.msg import ActivityEstimate, HeartRate, UserProfile
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import Imu

from muse_common import diagnostics, qos, stamps, topics
from muse_common.lifecycle import ManagedNode
from muse_common.node_main import run_node
from muse_common.params import declare
from muse_common.stats import RollingStats
from muse_encoder.features import STANDARD_GRAVITY
from muse_encoder.inference import (BACKENDS, DEFAULT_BACKEND, SMOOTHING_METHODS, ActivityEncoder,
                                    ProbabilitySmoother, SmoothingSettings)
from muse_encoder.statics import Statics, sex_female_from_code
from muse_encoder.stream import LatestQueue, WindowStream

WINDOW_QUEUE_DEPTH = 4        # windows waiting for the worker before the oldest is dropped
TIMING_HISTORY = 200          # windows over which diagnostics report inference time percentiles


class ActivityEncoderNode(ManagedNode):

    def __init__(self):
        super().__init__('activity_encoder')
        self._checkpoint = declare(self, 'checkpoint', '', 'Encoder checkpoint (.pt) made by '
                             'muse_train_encoder; empty = the packaged default.', read_only=True)
        self._backend = declare(self, 'backend', DEFAULT_BACKEND, "Inference engine for the CNN: "
                                "'onnx' (onnxruntime, torch never imported) or torch.",
                                choices=BACKENDS, read_only=True)
        self._onnx_model = declare(self, 'onnx_model', '', "ONNX file from muse_export_encoder for "
                             "backend 'onnx' (empty = the checkpoint path with .onnx).", read_only=True)
        self._threads = declare(self, 'inference_threads', 1, 'CPU threads for the CNN.',
                          min_value=1, max_value=64, read_only=True)
        self._imu_rate = declare(self, 'imu_rate_hz', 32.0, 'Nominal IMU sample rate [Hz]: '
                                 'sizes the 8 s window and the stride in samples.',
                                 min_value=16.0, max_value=2000.0, read_only=True)
        declare(self, 'stride_s', 1.0, 'Data time between estimates [s], counted in IMU samples.',
                min_value=0.25, max_value=8.0)
        defaults = SmoothingSettings()
        declare(self, 'smoothing', defaults.method, "How the published class follows the windows: "
                "'evidence' (change detector in data time: switch once another class has led by "
                "more than smoothing_margin for smoothing_threshold nat*s of data), 'hmm' (sticky "
                "HMM forward filter), 'ema', 'majority' (per window) or 'none'.",
                choices=SMOOTHING_METHODS)
        declare(self, 'smoothing_alpha', defaults.alpha, "Weight of the newest window for 'ema' (1 = none).",
                min_value=0.01, max_value=1.0)
        declare(self, 'smoothing_window', defaults.window, "Windows voting for 'majority'.",
                min_value=1, max_value=60)
        declare(self, 'smoothing_margin', defaults.margin, "'evidence': log-probability lead [nats] "
                'over every other class beyond which a window counts for a class (2 = 7.4x as likely).',
                min_value=0.0, max_value=10.0)
        declare(self, 'smoothing_threshold', defaults.threshold, "'evidence': lead beyond the margin, "
                'summed over data time [nat*s], at which the published class switches.',
                min_value=0.0, max_value=100.0)
        declare(self, 'smoothing_switch_rate', defaults.switch_rate, "'hmm': prior rate of activity "
                'changes [1/s of data].', min_value=1e-6, max_value=1.0)
        declare(self, 'smoothing_evidence_weight', defaults.evidence_weight, "'hmm': exponent of a "
                "window's probabilities per second of data.", min_value=0.01, max_value=10.0)
        declare(self, 'heart_rate_timeout_s', 10.0, 'Data time [s] after the last heart rate '
                'message at which it counts as missing.', min_value=1.0, max_value=600.0)
        declare(self, 'default_heart_rate_bpm', 0.0, 'Heart rate [beats/min] used while none is '
                'known; 0 = the training mean stored in the checkpoint.', min_value=0.0, max_value=250.0)
        declare(self, 'default_age_years', 0, 'Age [years] used without a profile; 0 = training mean.',
                min_value=0, max_value=120)
        declare(self, 'default_sex', 0, 'Sex used without a profile, UserProfile code '
                '(0 = training mean, 1 male, 2 female).', min_value=0, max_value=2)
        declare(self, 'default_height_cm', 0.0, 'Height [cm] used without a profile; 0 = training mean.',
                min_value=0.0, max_value=250.0)
        declare(self, 'default_weight_kg', 0.0, 'Weight [kg] used without a profile; 0 = training mean.',
                min_value=0.0, max_value=400.0)

        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(lambda _: self._apply_parameters())
        self._lock = threading.Lock()           # guards the state shared with the worker
        self._encoder = None
        self._stream = None
        self._worker = None
        self._diagnostics = None

    # ------------------------------------------------------------------ lifecycle

    def configure(self):
        # A bad checkpoint raises ValueError or FileNotFoundError: one 'cannot configure' line.
        self._encoder = ActivityEncoder(self._checkpoint or None, backend=self._backend,
                                        onnx_path=self._onnx_model or None, threads=self._threads)
        self._window = self._encoder.features.window_samples(self._imu_rate)
        self._stream = None
        self._smoother = None
        self._profile = None
        self._apply_parameters()
        self._stats = {'published': 0, 'dropped': 0, 'errors': 0, 'hr_defaulted': 0,
                       'profile_defaulted': 0}
        self._timings = RollingStats(window=TIMING_HISTORY)

        self._publisher = self.publisher(ActivityEstimate, topics.ACTIVITY, qos.EVENTS)
        self._input_subscriptions = [
            self.subscription(Imu, topics.IMU, self._on_imu, qos.SENSOR),
            self.subscription(HeartRate, topics.HEART_RATE, self._on_heart_rate, qos.SENSOR),
            self.subscription(UserProfile, topics.USER_PROFILE, self._on_profile, qos.LATCHED)]

        self._queue = LatestQueue(WINDOW_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name='activity_encoder_inference',
                                        daemon=True)
        self._worker.start()

        self._diagnostics = diagnostics.DiagnosticsReporter(self)
        self._diagnostics.add('inference', self._inference_status)
        self._diagnostics.add('inputs', self._input_status)
        self.get_logger().info(
            f'encoder ready: {len(self._encoder.class_names)} classes, embedding '
            f'{self._encoder.embedding_dim}, backend {self._backend}, window {self._window} '
            f'samples at {self._imu_rate:g} Hz, stride {self._stride_s:g} s, smoothing '
            f'{self._smoother.method}')

    def cleanup(self):
        if self._worker is not None:
            self._stop.set()
            if self._worker.is_alive():
                self._worker.join(timeout=5.0)
            self._worker = None
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        for subscription in getattr(self, '_input_subscriptions', ()):
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if getattr(self, '_publisher', None) is not None:
            self.destroy_lifecycle_publisher(self._publisher)
            self._publisher = None
        with self._lock:
            self._encoder = None
            self._stream = None

    # ------------------------------------------------------------------ parameters

    def _smoothing_settings(self, values=None):
        """SmoothingSettings from the parameters, ``values`` (name -> new value) taking precedence."""
        values = values or {}
        get = lambda name: values.get(name, self.get_parameter(name).value)  # noqa: E731
        return SmoothingSettings(get('smoothing'), get('smoothing_alpha'), get('smoothing_window'),
                                 margin=get('smoothing_margin'), threshold=get('smoothing_threshold'),
                                 switch_rate=get('smoothing_switch_rate'),
                                 evidence_weight=get('smoothing_evidence_weight'))

    def _validate_parameters(self, parameters):
        # stride_s needs no check: its range (>= 0.25 s) and imu_rate_hz's (>= 16 Hz, read-only)
        # make every stride at least 4 samples.
        problem = self._smoothing_settings({p.name: p.value for p in parameters}).problem()
        return SetParametersResult(successful=problem is None, reason=problem or '')

    def _apply_parameters(self):
        if self._encoder is None:
            return  # not configured: configure() applies them
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        with self._lock:
            self._stride_s = get('stride_s')
            stride = int(round(self._stride_s * self._imu_rate))
            hr_timeout = int(round(get('heart_rate_timeout_s') * self._imu_rate))
            if self._stream is None:
                self._stream = WindowStream(self._window, stride, hr_timeout)
            else:
                self._stream.configure(stride, hr_timeout)
            self._defaults = Statics(get('default_heart_rate_bpm'), get('default_age_years'),
                                     sex_female_from_code(get('default_sex')),
                                     get('default_height_cm'), get('default_weight_kg'))
            settings = self._smoothing_settings()
            if self._smoother is None or self._smoother.settings != settings:
                self._smoother = self._smoother or ProbabilitySmoother()
                self._smoother.configure(settings)      # restarts the smoothing

    # ------------------------------------------------------------------ inputs

    def _on_heart_rate(self, msg):
        bpm = float(msg.bpm)
        if not np.isfinite(bpm) or bpm <= 0:
            return  # "unknown" readings leave the last good one ageing out
        with self._lock:
            self._stream.set_heart_rate(bpm)

    def _on_profile(self, msg):
        with self._lock:
            self._profile = Statics(age_years=msg.age, sex_female=sex_female_from_code(msg.sex),
                                    height_cm=msg.height_cm, weight_kg=msg.weight_kg)
        self.get_logger().info(f'profile {msg.user_id!r}: age {msg.age}, sex code {msg.sex}, '
                               f'{msg.height_cm:g} cm, {msg.weight_kg:g} kg')

    def _on_imu(self, msg):
        a = msg.linear_acceleration
        sample = np.array([a.x, a.y, a.z], np.float64) / STANDARD_GRAVITY   # the features take g
        stamp = stamps.to_sec(msg.header.stamp)
        if not np.all(np.isfinite(sample)):
            self.get_logger().warning('IMU sample with NaN/inf acceleration dropped',
                                      throttle_duration_sec=5.0)
            return
        with self._lock:
            window, event = self._stream.push(sample, stamp)
            if event == WindowStream.RESET:
                self._smoother.reset()
                self.get_logger().warning(
                    'IMU stamps jumped back: window buffer and smoothing reset',
                    throttle_duration_sec=5.0)
            if window is None:
                return
            job = (window, msg.header.frame_id, *self._statics_locked())
        if self._queue.put(job):
            with self._lock:
                self._stats['dropped'] += 1
            self.get_logger().warning('inference is slower than the stride: dropped a window',
                                      throttle_duration_sec=5.0)

    def _statics_locked(self):
        """(Statics for the model, heart rate used or NaN, hr defaulted, profile defaulted)."""
        heart_rate = self._stream.heart_rate()
        hr_known = heart_rate is not None
        profile = (self._profile or Statics()).filled(self._defaults)
        statics = profile.with_heart_rate(heart_rate if hr_known
                                          else self._defaults.heart_rate_bpm)
        hr_used = heart_rate if hr_known else float('nan')
        return statics, hr_used, not hr_known, self._profile is None

    # ------------------------------------------------------------------ inference

    def _work(self):
        while not self._stop.is_set():
            job = self._queue.get(timeout=0.1)
            if job is None:
                continue
            try:
                self._estimate(*job)
            except Exception as exc:  # one bad window must not stop the encoder
                with self._lock:
                    self._stats['errors'] += 1
                self.get_logger().error(f'inference failed: {exc!r}', throttle_duration_sec=5.0)

    def _estimate(self, window, frame_id, statics, hr_used, hr_defaulted, profile_defaulted):
        if hr_defaulted:
            self.get_logger().warning('no current heart rate: using the default '
                                   '(default_heart_rate_bpm, else the training mean)', once=True)
        if profile_defaulted:
            self.get_logger().warning('no user profile yet: using the default_* parameters, '
                                   'else the training means', once=True)
        prediction = self._encoder.predict(window.samples_g, self._imu_rate, statics)
        with self._lock:
            # Data time since the previous window, for the smoothers that work in data time.
            dt_s = self._stream.stride / self._imu_rate
            class_id, confidence, _ = self._smoother.update(prediction.probabilities, dt_s)
        msg = ActivityEstimate()
        msg.header.stamp = stamps.from_sec(window.end_s)
        msg.header.frame_id = frame_id
        msg.class_id = class_id
        msg.label = self._encoder.class_names[class_id]
        msg.confidence = confidence
        msg.raw_class_id = prediction.class_id
        msg.probabilities = prediction.probabilities.tolist()
        msg.embedding = prediction.embedding.tolist()
        msg.window_start = stamps.from_sec(window.start_s)
        msg.heart_rate_bpm = hr_used
        self._publisher.publish(msg)
        with self._lock:
            self._timings.add(prediction.total_ms)
            self._stats['published'] += 1
            self._stats['hr_defaulted'] += int(hr_defaulted)
            self._stats['profile_defaulted'] += int(profile_defaulted)

    # ------------------------------------------------------------------ health

    def _inference_status(self):
        with self._lock:
            stats = dict(self._stats)
        timings = self._timings
        values = {'windows_published': stats['published'], 'windows_dropped': stats['dropped'],
                  'errors': stats['errors'], 'queue_depth': self._queue.qsize(),
                  'queue_capacity': WINDOW_QUEUE_DEPTH}
        if not timings.count:
            return diagnostics.OK, 'waiting for a full window', values
        values.update(inference_ms_last=timings.last, inference_ms_mean=timings.mean,
                      inference_ms_p95=timings.percentile(95), inference_ms_max=timings.max)
        if stats['errors'] or stats['dropped']:
            return diagnostics.WARN, f'{stats["errors"]} failed and {stats["dropped"]} dropped windows', values
        return diagnostics.OK, f'p95 {values["inference_ms_p95"]:.2f} ms per window', values

    def _input_status(self):
        with self._lock:
            _, hr_used, hr_defaulted, profile_defaulted = self._statics_locked()
            stream = self._stream
            values = {'buffer_fill': f'{stream.filled}/{self._window}',
                      'buffer_fill_ratio': stream.filled / self._window,
                      'imu_samples': stream.samples, 'heart_rate_bpm': hr_used,
                      'heart_rate': 'default' if hr_defaulted else 'live',
                      'profile': 'default' if profile_defaulted else 'received',
                      'windows_heart_rate_defaulted': self._stats['hr_defaulted'],
                      'windows_profile_defaulted': self._stats['profile_defaulted'],
                      'buffer_resets': stream.resets,
                      'stamp_regressions': stream.stamp_regressions}
        degraded = [name for name, flag in (('heart rate', hr_defaulted), ('profile', profile_defaulted)) if flag]
        if degraded:
            return diagnostics.WARN, f'using defaults for: {", ".join(degraded)}', values
        return diagnostics.OK, 'all inputs live', values

def main(args=None):
    code = run_node(ActivityEncoderNode, args=args)
    # Everything of ours is closed by now; what is left is torch's own teardown at interpreter
    # exit, which took 3 of the node's 3.6 s to stop after SIGINT (measured on 2 busy cores).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == '__main__':
    main()
