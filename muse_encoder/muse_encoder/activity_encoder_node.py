"""ROS 2 node ``activity_encoder``: wrist IMU + heart rate + profile -> ActivityEstimate.

Subscribes ``imu`` (sensor_msgs/Imu, m/s^2), ``heart_rate`` (muse_msgs/HeartRate) and
``user_profile`` (muse_msgs/UserProfile, latched); keeps the last 8 s of acceleration in a
ring buffer and, every ``stride_s`` of data (counted in IMU samples, so accelerated or
slowed replay works), hands the window to a worker thread that runs AccelToRGBMel + the CNN
(muse_encoder.inference) and publishes an ``ActivityEstimate`` on ``activity``.

Missing inputs degrade, never fail: without a heart rate (none yet, or none for
``heart_rate_timeout_s`` of data) or a profile, the ``default_*`` parameters are used, and
where those are 0 the checkpoint's training means (logged once; counted in diagnostics).
"""

import os
import queue
import sys
import threading

from muse_msgs.msg import ActivityEstimate, HeartRate, UserProfile
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Imu

from muse_common import diagnostics, qos, stamps, topics
from muse_common.node_main import run_node
from muse_common.params import declare
from muse_common.stats import RollingStats
from muse_encoder.inference import BACKENDS, SMOOTHING_METHODS, ActivityEncoder, ProbabilitySmoother
from muse_encoder.statics import Statics, sex_female_from_code
from muse_sensors import dalia

WINDOW_QUEUE_DEPTH = 4        # windows waiting for the worker before the oldest is dropped
TIMING_HISTORY = 200          # windows over which diagnostics report inference time percentiles
STAMP_RESET_S = 1.0           # a stamp this far behind the last one restarts the window


class ActivityEncoderNode(Node):

    def __init__(self):
        super().__init__('activity_encoder')
        checkpoint = declare(self, 'checkpoint', '', 'Encoder checkpoint (.pt) made by '
                             'muse_train_encoder; empty = the packaged default.', read_only=True)
        backend = declare(self, 'backend', 'torch', 'Inference engine for the CNN.',
                          choices=BACKENDS, read_only=True)
        onnx_model = declare(self, 'onnx_model', '', "ONNX file from muse_export_encoder for "
                             "backend 'onnx' (empty = the checkpoint path with .onnx).", read_only=True)
        threads = declare(self, 'inference_threads', 1, 'CPU threads for the CNN.',
                          min_value=1, max_value=64, read_only=True)
        self._imu_rate = declare(self, 'imu_rate_hz', 32.0, 'Nominal IMU sample rate [Hz]: '
                                 'sizes the 8 s window and the stride in samples.',
                                 min_value=16.0, max_value=2000.0, read_only=True)
        declare(self, 'stride_s', 2.0, 'Data time between estimates [s], counted in IMU samples.',
                min_value=0.25, max_value=8.0)
        declare(self, 'smoothing', 'ema', 'Temporal smoothing of the published class.',
                choices=SMOOTHING_METHODS)
        declare(self, 'smoothing_alpha', 0.5, "Weight of the newest window for 'ema' (1 = none).",
                min_value=0.01, max_value=1.0)
        declare(self, 'smoothing_window', 5, "Windows voting for 'majority'.", min_value=1, max_value=60)
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

        # A bad checkpoint raises ValueError or FileNotFoundError, which run_node reports
        # as one 'cannot start' line.
        self._encoder = ActivityEncoder(checkpoint or None, backend=backend,
                                        onnx_path=onnx_model or None, threads=threads)
        self._window = self._encoder.features.window_samples(self._imu_rate)

        self._lock = threading.Lock()           # guards everything below shared with the worker
        self._acc = np.zeros((self._window, 3), np.float32)
        self._stamps = np.zeros(self._window, np.float64)
        self._head = 0                           # next write position in the ring
        self._filled = 0
        self._samples = 0                        # IMU samples received since (re)start
        self._since_window = 0
        self._last_stamp = None
        self._heart_rate = None                  # (bpm, confidence, sample count at arrival)
        self._profile = None
        self._apply_parameters()
        self._stats = {'published': 0, 'dropped': 0, 'errors': 0, 'hr_defaulted': 0,
                       'profile_defaulted': 0, 'resets': 0, 'stamp_regressions': 0}
        self._timings = RollingStats(window=TIMING_HISTORY)

        overrides = QoSOverridingOptions.with_default_policies()
        self._publisher = self.create_publisher(ActivityEstimate, topics.ACTIVITY, qos.EVENTS,
                                                qos_overriding_options=overrides)
        self.create_subscription(Imu, topics.IMU, self._on_imu, qos.SENSOR,
                                 qos_overriding_options=overrides)
        self.create_subscription(HeartRate, topics.HEART_RATE, self._on_heart_rate, qos.SENSOR,
                                 qos_overriding_options=overrides)
        self.create_subscription(UserProfile, topics.USER_PROFILE, self._on_profile, qos.LATCHED,
                                 qos_overriding_options=overrides)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(lambda _: self._apply_parameters())

        self._queue = queue.Queue(maxsize=WINDOW_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name='activity_encoder_inference', daemon=True)
        self._worker.start()

        self._diagnostics = diagnostics.DiagnosticsReporter(self)
        self._diagnostics.add('inference', self._inference_status)
        self._diagnostics.add('inputs', self._input_status)
        self.get_logger().info(
            f'encoder ready: {len(self._encoder.class_names)} classes, embedding '
            f'{self._encoder.embedding_dim}, backend {backend}, window {self._window} samples at '
            f'{self._imu_rate:g} Hz, stride {self._stride_s:g} s, smoothing {self._smoother.method}')

    # ------------------------------------------------------------------ parameters

    def _validate_parameters(self, parameters):
        values = {p.name: p.value for p in parameters}
        method = values.get('smoothing', self.get_parameter('smoothing').value)
        alpha = values.get('smoothing_alpha', self.get_parameter('smoothing_alpha').value)
        window = values.get('smoothing_window', self.get_parameter('smoothing_window').value)
        # stride_s needs no check: its range (>= 0.25 s) and imu_rate_hz's (>= 16 Hz, read-only)
        # make every stride at least 4 samples.
        problem = ProbabilitySmoother.validate(method, alpha, window)
        return SetParametersResult(successful=problem is None, reason=problem or '')

    def _apply_parameters(self):
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        with self._lock:
            self._stride_s = get('stride_s')
            self._stride = int(round(self._stride_s * self._imu_rate))
            self._hr_timeout = int(round(get('heart_rate_timeout_s') * self._imu_rate))
            self._defaults = Statics(get('default_heart_rate_bpm'), get('default_age_years'),
                                     sex_female_from_code(get('default_sex')),
                                     get('default_height_cm'), get('default_weight_kg'))
            smoother = getattr(self, '_smoother', None)
            settings = (get('smoothing'), get('smoothing_alpha'), get('smoothing_window'))
            if smoother is None:
                self._smoother = ProbabilitySmoother(*settings)
            elif (smoother.method, smoother.alpha, smoother.window) != settings:
                smoother.configure(*settings)

    # ------------------------------------------------------------------ inputs

    def _on_heart_rate(self, msg):
        bpm = float(msg.bpm)
        if not np.isfinite(bpm) or bpm <= 0:
            return  # "unknown" readings leave the last good one ageing out
        with self._lock:
            self._heart_rate = (bpm, self._samples)

    def _on_profile(self, msg):
        with self._lock:
            self._profile = Statics(age_years=msg.age, sex_female=sex_female_from_code(msg.sex),
                                    height_cm=msg.height_cm, weight_kg=msg.weight_kg)
        self.get_logger().info(f'profile {msg.user_id!r}: age {msg.age}, sex code {msg.sex}, '
                               f'{msg.height_cm:g} cm, {msg.weight_kg:g} kg')

    def _on_imu(self, msg):
        a = msg.linear_acceleration
        sample = np.array([a.x, a.y, a.z], np.float64) / dalia.G   # the features take g
        stamp = stamps.to_sec(msg.header.stamp)
        if not np.all(np.isfinite(sample)):
            self.get_logger().warning('IMU sample with NaN/inf acceleration dropped',
                                   throttle_duration_sec=5.0)
            return
        with self._lock:
            if self._last_stamp is not None and stamp < self._last_stamp:
                if self._last_stamp - stamp > STAMP_RESET_S:
                    # Time jumped back (clock or sim time reset, a bag played again): the
                    # buffer no longer holds one stretch of motion.
                    self._reset_locked()
                    self._stats['resets'] += 1
                    self.get_logger().warning(
                        f'IMU stamps jumped back by {self._last_stamp - stamp:.3f} s: window '
                        'buffer and smoothing reset', throttle_duration_sec=5.0)
                else:
                    # A sample delivered out of order, or a clock correction: keep it, the
                    # window is still the last 8 s of data in arrival order.
                    self._stats['stamp_regressions'] += 1
            self._last_stamp = stamp
            self._acc[self._head] = sample
            self._stamps[self._head] = stamp
            self._head = (self._head + 1) % self._window
            self._filled = min(self._filled + 1, self._window)
            self._samples += 1
            self._since_window += 1
            if self._filled < self._window or self._since_window < self._stride:
                return
            self._since_window = 0
            order = np.r_[self._head:self._window, 0:self._head]
            job = (self._acc[order], self._stamps[order[0]], self._stamps[order[-1]],
                   msg.header.frame_id, *self._statics_locked())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            # The worker cannot keep up: the newest window matters most, drop the oldest.
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(job)
            with self._lock:
                self._stats['dropped'] += 1
            self.get_logger().warning('inference is slower than the stride: dropped a window',
                                   throttle_duration_sec=5.0)

    def _reset_locked(self):
        self._filled = 0
        self._since_window = 0
        self._samples = 0
        self._heart_rate = None
        self._smoother.reset()

    def _statics_locked(self):
        """(Statics for the model, heart rate used or NaN, hr defaulted, profile defaulted)."""
        hr_known = (self._heart_rate is not None
                    and self._samples - self._heart_rate[1] <= self._hr_timeout)
        profile = (self._profile or Statics()).filled(self._defaults)
        statics = profile.with_heart_rate(self._heart_rate[0] if hr_known
                                          else self._defaults.heart_rate_bpm)
        hr_used = self._heart_rate[0] if hr_known else float('nan')
        return statics, hr_used, not hr_known, self._profile is None

    # ------------------------------------------------------------------ inference

    def _work(self):
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._estimate(*job)
            except Exception as exc:  # one bad window must not stop the encoder
                with self._lock:
                    self._stats['errors'] += 1
                self.get_logger().error(f'inference failed: {exc!r}', throttle_duration_sec=5.0)

    def _estimate(self, window_g, start_s, end_s, frame_id, statics, hr_used, hr_defaulted,
                  profile_defaulted):
        if hr_defaulted:
            self.get_logger().warning('no current heart rate: using the default '
                                   '(default_heart_rate_bpm, else the training mean)', once=True)
        if profile_defaulted:
            self.get_logger().warning('no user profile yet: using the default_* parameters, '
                                   'else the training means', once=True)
        prediction = self._encoder.predict(window_g, self._imu_rate, statics)
        with self._lock:
            class_id, confidence, _ = self._smoother.update(prediction.probabilities)
        msg = ActivityEstimate()
        msg.header.stamp = stamps.from_sec(end_s)
        msg.header.frame_id = frame_id
        msg.class_id = class_id
        msg.label = self._encoder.class_names[class_id]
        msg.confidence = confidence
        msg.raw_class_id = prediction.class_id
        msg.probabilities = prediction.probabilities.tolist()
        msg.embedding = prediction.embedding.tolist()
        msg.window_start = stamps.from_sec(start_s)
        msg.window_end = stamps.from_sec(end_s)
        msg.heart_rate_bpm = hr_used
        msg.inference_ms = prediction.total_ms
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
            values = {'buffer_fill': f'{self._filled}/{self._window}',
                      'buffer_fill_ratio': self._filled / self._window,
                      'imu_samples': self._samples, 'heart_rate_bpm': hr_used,
                      'heart_rate': 'default' if hr_defaulted else 'live',
                      'profile': 'default' if profile_defaulted else 'received',
                      'windows_heart_rate_defaulted': self._stats['hr_defaulted'],
                      'windows_profile_defaulted': self._stats['profile_defaulted'],
                      'buffer_resets': self._stats['resets'],
                      'stamp_regressions': self._stats['stamp_regressions']}
        degraded = [name for name, flag in (('heart rate', hr_defaulted), ('profile', profile_defaulted)) if flag]
        if degraded:
            return diagnostics.WARN, f'using defaults for: {", ".join(degraded)}', values
        return diagnostics.OK, 'all inputs live', values

    def destroy_node(self):
        worker = getattr(self, '_worker', None)   # absent if the checkpoint failed to load
        if worker is not None:
            self._stop.set()
            if worker.is_alive():
                worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    code = run_node(ActivityEncoderNode, args=args)
    # Everything of ours is closed by now; what is left is torch's own teardown at interpreter
    # exit, which took 3 of the node's 3.6 s to stop after SIGINT (measured on 2 busy cores).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == '__main__':
    main()
