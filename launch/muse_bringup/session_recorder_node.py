"""``session_recorder``: records every MUSE topic of a session to a rosbag2.

Messages are taken raw (already CDR-serialised) and written by a worker thread, so recording
never blocks the executor and costs no deserialisation. The bag opens in Foxglove, and
``ros2 bag play`` replays it on a real install.

Lifecycle: configure opens the bag and subscribes (it is configured first, so it hears
everything); cleanup (or shutdown) closes the bag. The session report is not this node's job:
the runner, or the launch file's ``muse_report`` step, writes it from the closed bag.
"""

import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from muse_common import diagnostics, params, qos, topics
from muse_common.lifecycle import ManagedNode
from muse_common.node_main import run_node
from muse_common.rosbag_types import muse_typestore
from muse_msgs.msg import (ActivityEstimate, AudioFragment, HeartRate, MusicPrompt,
                           PlaybackEvent, UserProfile)
from muse_sensors.bag import STORAGES
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Imu

from muse_bringup.recorder_queue import DropOldestQueue
from muse_bringup.session import SessionPaths

# Messages waiting for the bag writer before the oldest are dropped (counted, reported): ~20 s
# of the whole graph's traffic at 4x, far more than a healthy writer ever lags.
WRITE_QUEUE_DEPTH = 20000
# Topics with exactly one producer in a MUSE graph (the replay, which is never restarted): a
# second publisher there is another graph on this domain.
SINGLE_PRODUCER_TOPICS = (topics.IMU, topics.HEART_RATE, topics.GROUND_TRUTH_ACTIVITY)

RECORDED_TOPICS = (
    (topics.IMU, Imu, qos.SENSOR),
    (topics.HEART_RATE, HeartRate, qos.SENSOR),
    (topics.USER_PROFILE, UserProfile, qos.LATCHED),
    (topics.GROUND_TRUTH_ACTIVITY, ActivityEstimate, qos.EVENTS),
    (topics.ACTIVITY, ActivityEstimate, qos.EVENTS),
    (topics.PROMPT, MusicPrompt, qos.LATCHED),
    (topics.AUDIO, AudioFragment, qos.AUDIO),
    (topics.PLAYBACK, PlaybackEvent, qos.EVENTS),
    (topics.DIAGNOSTICS, DiagnosticArray, qos.EVENTS),
)


def ros_type_name(msg_class):
    return f'{msg_class.__module__.split(".")[0]}/msg/{msg_class.__name__}'


class SessionRecorder(ManagedNode):

    def __init__(self):
        super().__init__('session_recorder')
        self._output_dir = params.declare(
            self, 'output_dir', '', 'Session folder: the bag goes to <output_dir>/session_bag.',
            read_only=True)
        self._storage = params.declare(self, 'storage', 'mcap', 'rosbag2 storage plugin.',
                                       read_only=True, choices=STORAGES)
        self._writer = None
        self._worker = None
        self._diagnostics = None
        self._input_subscriptions = []

    def configure(self):
        if not self._output_dir:
            raise ValueError('parameter output_dir of session_recorder is empty; expected the '
                             'session folder to record into')
        self._session = SessionPaths(Path(self._output_dir).expanduser().resolve())
        self._session.root.mkdir(parents=True, exist_ok=True)

        from rosbags.rosbag2 import StoragePlugin, Writer
        plugin = StoragePlugin.MCAP if self._storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self._session.bag, version=9, storage_plugin=plugin)
        self._writer.open()
        typestore = muse_typestore()

        self._queue = DropOldestQueue(WRITE_QUEUE_DEPTH)
        self._max_publishers = {}
        self._counts = {}
        for topic, msg_class, profile in RECORDED_TOPICS:
            subscription = self.create_subscription(
                msg_class, topic, lambda raw, t=topic: self._queue.put((t, time.time_ns(), raw)),
                profile, raw=True,
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
            self._input_subscriptions.append(subscription)
            connection = self._writer.add_connection(
                subscription.topic_name, ros_type_name(msg_class), typestore=typestore)
            self._counts[topic] = [connection, 0]
        self._worker = threading.Thread(target=self._write_loop, name='bag_writer', daemon=True)
        self._worker.start()

        self._diagnostics = diagnostics.DiagnosticsReporter(self)
        self._diagnostics.add('recording', self._recording_status)
        self._diagnostics.add('foreign publishers', self._foreign_publishers)
        self.get_logger().info(f'recording {len(RECORDED_TOPICS)} topics to {self._session.bag}')

    def cleanup(self):
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        if self._worker is not None:
            self._queue.put_last(None)
            self._worker.join(timeout=30)
            self._worker = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            total = sum(entry[1] for entry in self._counts.values())
            # After Ctrl-C (shutdown from run_node) the node logger can no longer reach /rosout:
            # then log to the console only.
            logger = (self.get_logger() if self.context.ok()
                      else rclpy.logging.get_logger(f'{self.get_name()}.shutdown'))
            dropped = (f', {self._queue.dropped} dropped (writer behind)' if self._queue.dropped
                       else '')
            logger.info(f'bag closed: {total} messages in {self._session.bag}{dropped}')

    def _write_loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, stamp_ns, raw = item
            entry = self._counts[topic]
            self._writer.write(entry[0], stamp_ns, raw)
            entry[1] += 1

    def _recording_status(self):
        counts = {topic: entry[1] for topic, entry in self._counts.items()}
        backlog = self._queue.qsize()
        dropped = self._queue.dropped
        level = diagnostics.WARN if backlog > 1000 or dropped else diagnostics.OK
        message = f'{sum(counts.values())} messages recorded'
        if dropped:
            message += f', {dropped} dropped (the bag writer fell behind)'
        return level, message, {'bag': self._session.bag, 'write_backlog': backlog,
                                'write_queue_capacity': WRITE_QUEUE_DEPTH,
                                'dropped_writer_behind': dropped, **counts}

    def _foreign_publishers(self):
        """A second publisher on a single-producer topic means another graph on this domain."""
        values = {}
        for topic in SINGLE_PRODUCER_TOPICS:
            name = self.resolve_topic_name(topic)
            count = len(self.get_publishers_info_by_topic(name))
            self._max_publishers[name] = max(self._max_publishers.get(name, 0), count)
            values[f'publishers {name}'] = count
            values[f'publishers_max {name}'] = self._max_publishers[name]
        crowded = [name for name, most in self._max_publishers.items() if most > 1]
        if crowded:
            return diagnostics.ERROR, (f'more than one publisher on {", ".join(crowded)}: '
                                       'another graph shares this ROS domain'), values
        return diagnostics.OK, 'one producer per sensor topic', values

def main(args=None):
    return run_node(SessionRecorder, args)


if __name__ == '__main__':
    main()
