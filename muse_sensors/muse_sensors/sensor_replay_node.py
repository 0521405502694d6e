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
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu

from muse_common import activities, diagnostics, params, qos, stamps, topics
from muse_common.lifecycle import ManagedNode
from muse_common.node_main import run_node
from muse_msgs.msg import ActivityEstimate, HeartRate, UserProfile
from muse_sensors import bag, dalia
from muse_sensors.replay import (ActivityLabel, HeartRateSample, ImuSample, TimelinePlayer,
                                 ProfileRecord, replay_span, subject_events)

# After a failure, let the last messages reach subscribers before the process goes (DDS
# sends asynchronously).
FAILURE_GRACE_S = 0.5
# Longest wait at activation for known subscribers to match the publishers [s].
MATCH_TIMEOUT_S = 10.0
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


class SourceError(ValueError):
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


class SensorReplayNode(ManagedNode):
    """Publishes imu, heart_rate, user_profile, activity/ground_truth (and /clock).

    Lifecycle: configure opens the source and makes the publishers; activate starts the
    replay (from ``start_offset_s`` again after a deactivate); at the end of the data (loop
    false) or on a failure the node deactivates itself, which is how the lifecycle manager
    learns that the session's data is over (``transition_event``, and ``end_of_data`` in
    diagnostics).
    """

    def __init__(self):
        super().__init__('sensor_replay')
        self._source = params.declare(
            self, 'source', '', 'PPG-DaLiA subject pickle (S<i>.pkl) or rosbag2 folder written '
            'by muse_dalia_to_bag.', read_only=True)
        params.declare(self, 'rate', 1.0, 'Replay speed: 1.0 = real time, 10.0 = ten times '
                       'faster. May be changed while playing.', min_value=0.01, max_value=1000.0)
        params.declare(self, 'loop', False, 'Start again from start_offset_s when the data ends '
                       '(data and stamps keep running forward).')
        self._start_offset_s = params.declare(
            self, 'start_offset_s', 0.0, 'Skip this much data at the start [s].', read_only=True,
            min_value=0.0, max_value=1e6)
        self._duration_s = params.declare(
            self, 'duration_s', 0.0, 'Replay only this much data [s]; 0 = all.', read_only=True,
            min_value=0.0, max_value=1e6)
        self._publish_clock = params.declare(
            self, 'publish_clock', False, 'Publish /clock (rosgraph_msgs/Clock) following the '
            'data, for nodes run with use_sim_time.', read_only=True)
        self._frame_id = params.declare(self, 'frame_id', 'wrist', 'header.frame_id of the '
                                        'sensor messages.', read_only=True)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._player = None
        self._end_signal = None
        self._diagnostics = None

    # ------------------------------------------------------------------ lifecycle

    def configure(self):
        try:
            name, timeline, t_start, t_end, clock_base = open_source(
                self._source, self._start_offset_s, self._duration_s)
        except SourceError as exc:
            raise ValueError(f'cannot replay: {exc}') from None
        self._name = name
        self._timeline, self._t_start, self._t_end = timeline, t_start, t_end
        # Sim time starts at the bag's recorded time, or at 'now' for a pickle, so that
        # stamps look like real dates either way.
        self._clock_base_s = clock_base if clock_base is not None else time.time()
        self._sim_time = self.get_parameter('use_sim_time').value

        self._imu_pub = self.publisher(Imu, topics.IMU, qos.SENSOR)
        self._hr_pub = self.publisher(HeartRate, topics.HEART_RATE, qos.SENSOR)
        self._profile_pub = self.publisher(UserProfile, topics.USER_PROFILE, qos.LATCHED)
        self._truth_pub = self.publisher(ActivityEstimate, topics.GROUND_TRUTH_ACTIVITY,
                                         qos.EVENTS)
        self._clock_pub = (self.publisher(Clock, topics.CLOCK, CLOCK_QOS)
                           if self._publish_clock else None)
        self.counts = {'imu': 0, 'heart_rate': 0, 'user_profile': 0, 'ground_truth': 0}
        self._imu = self._imu_template()
        self._clock_map = MonotonicToRos(self.get_clock())
        self._began = None
        self._player = self._new_player()
        # The player thread reports the end of the data through a guard condition, so that the
        # node deactivates itself on the executor, not on the player's thread.
        self._end_signal = self.create_guard_condition(self._on_end)
        self._diagnostics = diagnostics.DiagnosticsReporter(self, hardware_id=f'replay {name}')
        self._diagnostics.add('replay', self._check)
        self.get_logger().info(
            f'ready to replay {name} from {self._source}: data {t_start:.1f}-{t_end:.1f} s at '
            f'{self._player.pacer.rate:g}x{", looping" if self._player.loop else ""}'
            f'{", publishing /clock" if self._publish_clock else ""}')

    def _new_player(self):
        return TimelinePlayer(self._timeline, self._t_start, self._t_end, self._emit,
                              rate=self.get_parameter('rate').value,
                              loop=self.get_parameter('loop').value,
                              on_end=lambda: self._end_signal.trigger())

    def activate(self):
        # The lifecycle manager activates the replay after every consumer; here it also waits
        # until those consumers' subscriptions (as this process's graph shows them) have
        # matched the publishers, so the first samples are not lost to discovery.
        unmatched = self.wait_for_matches(
            [self._imu_pub, self._hr_pub, self._profile_pub, self._truth_pub],
            MATCH_TIMEOUT_S)
        if unmatched:
            self.get_logger().warning(f'starting before every subscriber matched: {unmatched}')
        if self._player.finished or self._began is not None:
            self._player = self._new_player()      # a second activation replays from the start
        self._began = time.monotonic()
        self._player.start()
        self.get_logger().info('replay started')

    def deactivate(self):
        self._player.stop()

    def cleanup(self):
        if self._player is not None:
            self._player.stop()
            self._player = None
        for publisher in ('_imu_pub', '_hr_pub', '_profile_pub', '_truth_pub', '_clock_pub'):
            if getattr(self, publisher, None) is not None:
                self.destroy_lifecycle_publisher(getattr(self, publisher))
                setattr(self, publisher, None)
        if self._end_signal is not None:
            self.destroy_guard_condition(self._end_signal)
            self._end_signal = None
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None

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
                               probabilities=probabilities, heart_rate_bpm=event.heart_rate_bpm)
        msg.header.stamp = stamp
        msg.header.frame_id = self._frame_id
        msg.window_start = stamp     # a label at an instant, not a window
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
        """Executor (guard condition from the player thread): the data ended or playback
        failed. Log a summary and deactivate: the lifecycle manager ends the session on it."""
        player = self._player
        if player is None or not player.finished or not self.is_active():
            return
        summary = (f'{self._name}: published {self.counts} over {time.monotonic() - self._began:.1f} s '
                   f'wall (data {player.data_t:.1f} s, {player.loops_done} loops); lateness mean '
                   f'{player.lateness.mean * 1e3:.2f} ms, p95 {player.lateness.percentile(95) * 1e3:.2f} ms, '
                   f'max {player.lateness.max * 1e3:.2f} ms')
        if player.error is not None:
            self.get_logger().error(f'replay failed: {player.error!r}; {summary}')
            # A failed replay ends its process (exit code 1) instead of deactivating: the runner
            # and the launch file then end the session at once, as a failure.
            self.exit_code = 1
        else:
            self.get_logger().info(f'end of data; {summary}')
        # Announce the final counts, so that consumers can tell foreign traffic (more
        # messages than this replay sent) from their own.
        self._diagnostics.publish()
        if player.error is not None:
            time.sleep(FAILURE_GRACE_S)   # let the last messages and the diagnostics go out
            self.context.try_shutdown()
        else:
            self.trigger_deactivate()

    def _check(self):
        player = self._player
        values = {
            'state': self.state_label, 'source': self._source, 'data_time_s': player.data_t, 'rate': player.pacer.rate,
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
        if self._began is None:
            return diagnostics.OK, 'configured, waiting for activation', values
        if player.lateness.percentile(95) > LATE_WARN_S:
            return diagnostics.WARN, 'publishing behind schedule', values
        return diagnostics.OK, 'playing', values

    # ----------------------------------------------------------------- parameters

    def _on_set_parameters(self, changes):
        # rclpy has already refused wrong types and values outside the declared ranges (the
        # descriptors), so every change that gets here can be applied; a player made later
        # reads the parameters afresh.
        for change in changes:
            if self._player is None:
                break
            if change.name == 'rate':
                self._player.set_rate(change.value)
            elif change.name == 'loop':
                self._player.loop = change.value
        return SetParametersResult(successful=True)


def main(args=None):
    return run_node(SensorReplayNode, args=args)


if __name__ == '__main__':
    raise SystemExit(main())
