"""ROS adapter of the replay: a PPG-DaLiA subject (or a bag of one) as live sensor topics.

The timeline and its pacing live in :mod:`muse_sensors.replay`; this node turns replay
events into messages. Publishing happens on the player's own thread, never in an executor
callback, so a slow subscriber or a busy executor cannot delay the schedule.

Stamps: ``header.stamp`` is the node clock at the moment a message was due (the schedule's
monotonic due time mapped onto the node clock; publication follows within the lateness the
diagnostics report), so samples are evenly spaced however the OS schedules the thread. HeartRate carries the centre of its 8 s window
(``muse_msgs/HeartRate.msg``), i.e. 4 s of data before it is published. With
``use_sim_time`` and ``publish_clock`` the stamps are the /clock values this node publishes.
"""

import math
import time
from pathlib import Path

from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock as RosClock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu

from muse_common import activities, diagnostics, params, qos, stamps, topics
from muse_common.node_main import run_node
from muse_msgs.msg import ActivityEstimate, HeartRate, UserProfile
from muse_sensors import bag, dalia
from muse_sensors.replay import (ActivityLabel, HeartRateSample, ImuSample, TimelinePlayer,
                                 ProfileRecord, replay_span, subject_events)

# Let the last messages reach subscribers before the process goes (DDS sends asynchronously).
END_GRACE_S = 0.5
# How often to check whether the replay may start (wait_for_subscribers, start_delay_s).
START_POLL_S = 0.05
# A publication later than this behind its schedule is worth a warning in diagnostics.
LATE_WARN_S = 0.05
# rclcpp's ClockQoS: only the newest time matters.
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


class MonotonicToRos:
    """Converts monotonic due times to the node clock's nanoseconds.

    Reading the two clocks one after the other in Python can be split by a thread switch
    (milliseconds), so the offset between them is measured in a tight bracket, kept, and
    measured again every ``resync_s`` to follow adjustments of the system clock.
    """

    def __init__(self, clock, resync_s=5.0):
        self._clock = clock
        self._resync_s = resync_s
        self._synced_at = -math.inf
        self._offset_ns = 0

    def _sync(self):
        best = None
        for _ in range(7):
            before = time.monotonic_ns()
            ros_ns = self._clock.now().nanoseconds
            after = time.monotonic_ns()
            if best is None or after - before < best[0]:
                best = (after - before, ros_ns - (before + after) // 2)
        self._offset_ns = best[1]
        self._synced_at = time.monotonic()

    def to_ros_ns(self, monotonic_s):
        if time.monotonic() - self._synced_at > self._resync_s:
            self._sync()
        return int(monotonic_s * 1e9) + self._offset_ns


class SourceError(Exception):
    """The replay source cannot be opened; the message says which and why."""


def open_source(source, start_offset_s, duration_s):
    """``(name, timeline_factory, t_start, t_end, clock_base_s)`` for a .pkl or a bag folder.

    ``clock_base_s`` is the /clock value of data time 0: the bag's recorded time (as
    ``ros2 bag play --clock`` does), or None for a pickle (then: wall time at start).
    """
    path = Path(source)
    if not source:
        raise SourceError("parameter 'source' is empty; expected a PPG-DaLiA .pkl file or a "
                          'rosbag2 folder written by muse_dalia_to_bag')
    try:
        if path.is_dir():
            info = bag.bag_info(path)
            t_start, t_end = replay_span(info.span_s, start_offset_s, duration_s, path)
            return (f'bag {path.name}', lambda: bag.bag_events(info, start_offset_s, duration_s),
                    t_start, t_end, info.start_ns * 1e-9)
        subject = dalia.load_subject(path)
        t_start, t_end = replay_span(subject.duration_s, start_offset_s, duration_s, path)
        return (subject.name, lambda: subject_events(subject, start_offset_s, duration_s),
                t_start, t_end, None)
    except (FileNotFoundError, dalia.DaliaFormatError, bag.BagFormatError) as exc:
        raise SourceError(str(exc)) from exc
    except ValueError as exc:   # a span outside the data
        raise SourceError(f'{path}: {exc}') from exc


class SensorReplayNode(Node):
    """Publishes imu, heart_rate, user_profile, activity/ground_truth (and /clock)."""

    def __init__(self):
        super().__init__('sensor_replay')
        source = params.declare(
            self, 'source', '', 'PPG-DaLiA subject pickle (S<i>.pkl) or rosbag2 folder written '
            'by muse_dalia_to_bag.', read_only=True)
        rate = params.declare(self, 'rate', 1.0, 'Replay speed: 1.0 = real time, 10.0 = ten '
                              'times faster. May be changed while playing.',
                              min_value=0.01, max_value=1000.0)
        loop = params.declare(self, 'loop', False, 'Start again from start_offset_s when the '
                              'data ends (data and stamps keep running forward).')
        start_offset_s = params.declare(self, 'start_offset_s', 0.0, 'Skip this much data at '
                                        'the start [s].', read_only=True, min_value=0.0,
                                        max_value=1e6)
        duration_s = params.declare(self, 'duration_s', 0.0, 'Replay only this much data [s]; '
                                    '0 = all.', read_only=True, min_value=0.0, max_value=1e6)
        self._publish_clock = params.declare(
            self, 'publish_clock', False, 'Publish /clock (rosgraph_msgs/Clock) following the '
            'data, for nodes run with use_sim_time.', read_only=True)
        self._frame_id = params.declare(self, 'frame_id', 'wrist', 'header.frame_id of the '
                                        'sensor messages.', read_only=True)
        self._wait_for_subscribers = params.declare(
            self, 'wait_for_subscribers', 0, 'Before the first message, wait until the imu topic '
            'has at least this many subscribers (0 = do not wait).', read_only=True,
            min_value=0, max_value=1000)
        self._start_delay_s = params.declare(
            self, 'start_delay_s', 0.0, 'Then wait this long [s, wall time] before the first '
            'message, so that every subscriber has discovered every topic.',
            read_only=True, min_value=0.0, max_value=3600.0)
        self._shutdown_on_end = params.declare(
            self, 'shutdown_on_end', True, 'When the data ends (and loop is false): true = log a '
            'summary and exit with code 0; false = stay alive, publishing nothing.')
        try:
            name, timeline, t_start, t_end, clock_base = open_source(source, start_offset_s,
                                                                    duration_s)
        except SourceError as exc:
            self.get_logger().fatal(f'cannot replay: {exc}')
            raise SystemExit(2) from None
        self._name = name
        self._source = source
        # Sim time starts at the bag's recorded time, or at 'now' for a pickle, so that
        # stamps look like real dates either way.
        self._clock_base_s = clock_base if clock_base is not None else time.time()
        self._sim_time = self.get_parameter('use_sim_time').value

        overrides = QoSOverridingOptions.with_default_policies()
        self._imu_pub = self.create_publisher(Imu, topics.IMU, qos.SENSOR,
                                              qos_overriding_options=overrides)
        self._hr_pub = self.create_publisher(HeartRate, topics.HEART_RATE, qos.SENSOR,
                                             qos_overriding_options=overrides)
        self._profile_pub = self.create_publisher(UserProfile, topics.USER_PROFILE, qos.LATCHED,
                                                  qos_overriding_options=overrides)
        self._truth_pub = self.create_publisher(ActivityEstimate, topics.GROUND_TRUTH_ACTIVITY,
                                                qos.EVENTS, qos_overriding_options=overrides)
        self._clock_pub = (self.create_publisher(Clock, topics.CLOCK, CLOCK_QOS)
                           if self._publish_clock else None)
        self.counts = {'imu': 0, 'heart_rate': 0, 'user_profile': 0, 'ground_truth': 0}
        self._imu = self._imu_template()
        self._clock_map = MonotonicToRos(self.get_clock())
        self._began = None

        self._player = TimelinePlayer(timeline, t_start, t_end, self._emit, rate=rate, loop=loop,
                              on_end=self._on_end)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics = diagnostics.DiagnosticsReporter(self, hardware_id=f'replay {name}')
        self._diagnostics.add('replay', self._check)
        self.get_logger().info(
            f'replaying {name} from {source}: data {t_start:.1f}-{t_end:.1f} s at {rate:g}x'
            f'{", looping" if loop else ""}{", publishing /clock" if self._publish_clock else ""}')
        self._ready_since = None
        self._start_timer = None
        if self._wait_for_subscribers > 0 or self._start_delay_s > 0:
            # Steady time: with use_sim_time the ROS clock stands still until we publish /clock.
            self._start_timer = self.create_timer(START_POLL_S, self._maybe_start,
                                                  clock=RosClock(clock_type=ClockType.STEADY_TIME))
        else:
            self._start()

    def _maybe_start(self):
        """Timer: start once enough subscribers are there and the delay has passed."""
        now = time.monotonic()
        if self._imu_pub.get_subscription_count() < self._wait_for_subscribers:
            return
        if self._ready_since is None:
            self._ready_since = now
        if now - self._ready_since >= self._start_delay_s:
            self._start_timer.cancel()
            self._start()

    def _start(self):
        if self._began is None:
            self._began = time.monotonic()
            self._player.start()

    # ------------------------------------------------------------------ publishing

    def _imu_template(self):
        msg = Imu()
        msg.header.frame_id = self._frame_id
        msg.orientation_covariance[0] = -1.0        # no orientation estimate
        msg.angular_velocity_covariance[0] = -1.0   # no gyroscope
        return msg                                  # acceleration covariance: 0 = unknown

    def _stamp(self, play_t):
        """The node clock when a message at play time ``play_t`` was due."""
        if self._sim_time:
            if self._publish_clock:
                return stamps.from_sec(self._clock_base_s + self._data_time(play_t))
            return self.get_clock().now().to_msg()
        return Time(nanoseconds=self._clock_map.to_ros_ns(self._player.pacer.due(play_t)),
                    clock_type=self.get_clock().clock_type).to_msg()

    def _data_time(self, play_t):
        return self._player.t_start + play_t

    def _emit(self, event, play_t, lateness_s):
        stamp = self._stamp(play_t)
        if self._clock_pub is not None:
            # With use_sim_time the stamp is already this /clock value.
            clock = stamp if self._sim_time else stamps.from_sec(
                self._clock_base_s + self._data_time(play_t))
            self._clock_pub.publish(Clock(clock=clock))
        if isinstance(event, ImuSample):
            msg = self._imu
            msg.header.stamp = stamp
            msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = \
                event.accel_mps2
            self._imu_pub.publish(msg)
            self.counts['imu'] += 1
        elif isinstance(event, HeartRateSample):
            msg = HeartRate(bpm=float(event.bpm), confidence=float(event.confidence),
                            source=event.source)
            msg.header.frame_id = self._frame_id
            # The window centre's own due time on the same schedule.
            msg.header.stamp = self._stamp(play_t - (event.t - event.window_centre_t))
            self._hr_pub.publish(msg)
            self.counts['heart_rate'] += 1
        elif isinstance(event, ActivityLabel):
            self._truth_pub.publish(self._ground_truth(event, stamp))
            self.counts['ground_truth'] += 1
        elif isinstance(event, ProfileRecord):
            self._profile_pub.publish(self._profile(event, stamp))
            self.counts['user_profile'] += 1

    def _ground_truth(self, event, stamp):
        probabilities = [0.0] * activities.NUM_ACTIVITIES
        probabilities[event.class_id] = 1.0
        msg = ActivityEstimate(class_id=event.class_id, label=activities.ACTIVITY_NAMES[event.class_id],
                               confidence=1.0, raw_class_id=event.class_id,
                               probabilities=probabilities, heart_rate_bpm=event.heart_rate_bpm,
                               inference_ms=0.0)
        msg.header.stamp = stamp
        msg.header.frame_id = self._frame_id
        msg.window_start = stamp     # a label at an instant, not a window
        msg.window_end = stamp
        return msg

    def _profile(self, event, stamp):
        p = event.profile
        msg = UserProfile(user_id=event.user_id, age=min(p.age, 255), sex=p.sex_code,
                          height_cm=p.height_cm, weight_kg=p.weight_kg,
                          skin_type=p.skin_type, sport=p.sport)
        msg.header.stamp = stamp
        msg.header.frame_id = self._frame_id
        return msg

    # --------------------------------------------------------------- end of data

    def _on_end(self):
        """TimelinePlayer thread: the data ended (or playback failed)."""
        ended_at = time.monotonic()
        player = self._player
        summary = (f'{self._name}: published {self.counts} over {ended_at - self._began:.1f} s wall '
                   f'(data {player.data_t:.1f} s, {player.loops_done} loops); lateness mean '
                   f'{player.lateness.mean * 1e3:.2f} ms, p95 {player.lateness.percentile(95) * 1e3:.2f} ms, '
                   f'max {player.lateness.max * 1e3:.2f} ms')
        if player.error is not None:
            self.get_logger().error(f'replay failed: {player.error!r}; {summary}')
            self.exit_code = 1   # run_node's exit code: the session must end as a failure
        else:
            self.get_logger().info(f'end of data; {summary}')
        # Announce the final counts, so that consumers can tell foreign traffic (more
        # messages than this replay sent) from their own.
        self._diagnostics.publish()
        if self._shutdown_on_end or player.error is not None:
            time.sleep(END_GRACE_S)
            self.context.try_shutdown()

    def _check(self):
        player = self._player
        values = {
            'source': self._source, 'data_time_s': player.data_t, 'rate': player.pacer.rate,
            'loop': player.loop, 'loops_done': player.loops_done,
            'lateness_mean_ms': player.lateness.mean * 1e3,
            'lateness_p95_ms': player.lateness.percentile(95) * 1e3,
            'lateness_max_ms': player.lateness.max * 1e3,
            'published_total': player.published,
            **{f'published_{k}': v for k, v in self.counts.items()},
            'end_of_data': player.finished,
        }
        if player.error is not None:
            return diagnostics.ERROR, f'replay failed: {player.error}', values
        if player.finished:
            return diagnostics.OK, 'end of data', values
        if player.lateness.percentile(95) > LATE_WARN_S:
            return diagnostics.WARN, 'publishing behind schedule', values
        return diagnostics.OK, 'playing', values

    # ----------------------------------------------------------------- parameters

    def _on_set_parameters(self, changes):
        # rclpy has already refused wrong types and values outside the declared ranges (the
        # descriptors), so every change that gets here can be applied.
        for change in changes:
            if change.name == 'rate':
                self._player.set_rate(change.value)
            elif change.name == 'loop':
                self._player.loop = change.value
            elif change.name == 'shutdown_on_end':
                self._shutdown_on_end = change.value
        return SetParametersResult(successful=True)

    def destroy_node(self):
        player = getattr(self, '_player', None)   # absent if the source failed to open
        if player is not None:
            player.stop()
        super().destroy_node()


def main(args=None):
    return run_node(SensorReplayNode, args=args)


if __name__ == '__main__':
    raise SystemExit(main())
