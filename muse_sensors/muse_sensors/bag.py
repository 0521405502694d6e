"""PPG-DaLiA subjects as standard rosbag2 bags, and bags back as replay timelines.

Written and read with the pure-Python ``rosbags`` library and the muse typestore
(``muse_common.rosbag_types.muse_typestore``: ROS2_KILTED plus muse_msgs parsed from the
installed .msg files), so a real ROS 2 install plays the bags with ``ros2 bag play``.

A bag holds exactly what the live replay publishes, under ``<namespace>/``:

====================== ============================= ===================================
topic                  type                          per message
====================== ============================= ===================================
imu                    sensor_msgs/msg/Imu           every 32 Hz sample, m/s^2
heart_rate             muse_msgs/msg/HeartRate       every 2 s (window close)
user_profile           muse_msgs/msg/UserProfile     once, offered transient-local
activity/ground_truth  muse_msgs/msg/ActivityEstimate on change and every 2 s, one-hot
====================== ============================= ===================================

Each message's log time is ``start_time + t`` (the data time it is published at in a live
replay); header stamps follow the same rules as the live node (HeartRate: window centre).
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_common import activities
from muse_common.profile import Profile
from muse_sensors import dalia
from muse_sensors.replay import (ActivityLabel, HeartRateSample, ImuSample, ProfileRecord,
                                 event_key, replay_span, subject_events)

IMU_TYPE = 'sensor_msgs/msg/Imu'
HEART_RATE_TYPE = 'muse_msgs/msg/HeartRate'
PROFILE_TYPE = 'muse_msgs/msg/UserProfile'
ACTIVITY_TYPE = 'muse_msgs/msg/ActivityEstimate'
DEFAULT_NAMESPACE = '/muse'
STORAGES = ('mcap', 'sqlite3')


class BagFormatError(ValueError):
    """A folder is not a bag this package can replay; the message names the bag and the
    problem."""


# Message type of every topic a bag holds, by role (the keys of topic_names()).
_ROLE_TYPES = {'imu': IMU_TYPE, 'heart_rate': HEART_RATE_TYPE, 'user_profile': PROFILE_TYPE,
               'ground_truth': ACTIVITY_TYPE}


def topic_names(namespace=DEFAULT_NAMESPACE):
    """Absolute topic names under ``namespace``, keyed by role (relative names as in
    muse_common.topics); ``''`` gives each relative name with a leading slash."""
    from muse_common import topics

    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return {'imu': f'{ns}/{topics.IMU}', 'heart_rate': f'{ns}/{topics.HEART_RATE}',
            'user_profile': f'{ns}/{topics.USER_PROFILE}',
            'ground_truth': f'{ns}/{topics.GROUND_TRUTH_ACTIVITY}'}


def _bag_qos(profile):
    """A rosbags Qos offered profile equal to an rclpy QoSProfile (muse_common.qos)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    infinite = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
    return Qos(history=QosHistory(int(profile.history)), depth=int(profile.depth),
               reliability=QosReliability(int(profile.reliability)),
               durability=QosDurability(int(profile.durability)), deadline=infinite,
               lifespan=infinite, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=infinite, avoid_ros_namespace_conventions=False)


def _time(store, seconds):
    ns = int(round(seconds * 1e9))
    return store.types['builtin_interfaces/msg/Time'](sec=ns // 1_000_000_000,
                                                      nanosec=ns % 1_000_000_000)


class _MessageFactory:
    """rosbags message objects for replay events (the bag twin of the node's messages)."""

    def __init__(self, store, start_time_s, frame_id):
        self.store = store
        self.start = start_time_s
        self.frame_id = frame_id
        t = store.types
        self.Header, self.Imu = t['std_msgs/msg/Header'], t[IMU_TYPE]
        self.Quaternion, self.Vector3 = t['geometry_msgs/msg/Quaternion'], t['geometry_msgs/msg/Vector3']
        self.HeartRate, self.UserProfile = t[HEART_RATE_TYPE], t[PROFILE_TYPE]
        self.ActivityEstimate = t[ACTIVITY_TYPE]
        unknown = np.zeros(9)
        unknown[0] = -1.0
        self.unknown_cov, self.zero_cov = unknown, np.zeros(9)
        self.identity = self.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)
        self.zero_vec = self.Vector3(x=0.0, y=0.0, z=0.0)

    def header(self, t):
        return self.Header(stamp=_time(self.store, self.start + t), frame_id=self.frame_id)

    def imu(self, e):
        x, y, z = e.accel_mps2
        return self.Imu(header=self.header(e.t), orientation=self.identity,
                        orientation_covariance=self.unknown_cov, angular_velocity=self.zero_vec,
                        angular_velocity_covariance=self.unknown_cov,
                        linear_acceleration=self.Vector3(x=x, y=y, z=z),
                        linear_acceleration_covariance=self.zero_cov)

    def heart_rate(self, e):
        return self.HeartRate(header=self.header(e.window_centre_t), bpm=e.bpm,
                              confidence=e.confidence, source=e.source)

    def profile(self, e):
        p = e.profile
        return self.UserProfile(header=self.header(e.t), user_id=e.user_id, age=p.age,
                                sex=p.sex_code, height_cm=p.height_cm, weight_kg=p.weight_kg,
                                skin_type=p.skin_type, sport=p.sport)

    def ground_truth(self, e):
        probabilities = np.zeros(activities.NUM_ACTIVITIES, dtype=np.float32)
        probabilities[e.class_id] = 1.0
        stamp = _time(self.store, self.start + e.t)
        return self.ActivityEstimate(
            header=self.Header(stamp=stamp, frame_id=self.frame_id), class_id=e.class_id,
            label=activities.ACTIVITY_NAMES[e.class_id], confidence=1.0, raw_class_id=e.class_id,
            probabilities=probabilities, embedding=np.zeros(0, dtype=np.float32),
            window_start=stamp, heart_rate_bpm=e.heart_rate_bpm)


@dataclass
class ConversionResult:
    path: Path
    counts: dict          # topic -> messages written
    data_s: float         # seconds of data converted
    wall_s: float         # time the conversion took


def write_bag(subject, out_dir, storage='mcap', namespace=DEFAULT_NAMESPACE, start_time_s=None,
              frame_id='wrist', progress=False):
    """Write the replay timeline of ``subject`` (a :class:`dalia.Subject`) as a rosbag2."""
    from muse_common import qos
    from muse_common.rosbag_types import muse_typestore
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    if storage not in STORAGES:
        raise ValueError(f'storage {storage!r} is not one of {STORAGES}')
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f'{out_dir} exists already; rosbag2 writes a new folder')
    start_time_s = time.time() if start_time_s is None else float(start_time_s)
    if not (math.isfinite(start_time_s) and 0 <= start_time_s < 2**31):
        raise ValueError(f'start time {start_time_s} is not an epoch time in seconds')
    store = muse_typestore()
    make = _MessageFactory(store, start_time_s, frame_id)
    names = topic_names(namespace)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    # role: (offered QoS, as the live node publishes; replay event; message builder)
    roles = {'imu': (qos.SENSOR, ImuSample, make.imu),
             'heart_rate': (qos.SENSOR, HeartRateSample, make.heart_rate),
             'user_profile': (qos.LATCHED, ProfileRecord, make.profile),
             'ground_truth': (qos.EVENTS, ActivityLabel, make.ground_truth)}
    events = subject_events(subject)   # a lazy timeline; its span is checked here
    counts = {names[role]: 0 for role in roles}
    began = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        # Counted in seconds of data, so the timeline is written as it is generated.
        bar = tqdm(total=math.ceil(subject.duration_s), unit='s', file=sys.stderr,
                   desc=f'{subject.name} -> {out_dir.name}')
    try:
        with Writer(out_dir, version=9, storage_plugin=plugin) as writer:
            by_kind = {}
            for role, (profile, kind, build) in roles.items():
                connection = writer.add_connection(names[role], _ROLE_TYPES[role], typestore=store,
                                                   offered_qos_profiles=[_bag_qos(profile)])
                by_kind[kind] = (connection, build, names[role])
            for event in events:
                connection, build, topic = by_kind[type(event)]
                stamp_ns = int(round((start_time_s + event.t) * 1e9))
                writer.write(connection, stamp_ns, store.serialize_cdr(build(event), connection.msgtype))
                counts[topic] += 1
                if bar is not None and event.t - bar.n >= 60:
                    bar.update(int(event.t) - bar.n)
    except WriterError as exc:
        raise OSError(f'{out_dir}: could not write the bag: {exc}') from exc
    finally:
        if bar is not None:
            bar.update(bar.total - bar.n)
            bar.close()
    return ConversionResult(out_dir, counts, subject.duration_s, time.perf_counter() - began)


# ------------------------------------------------------------------------ reading back

@dataclass
class BagInfo:
    path: Path
    start_ns: int             # log time of data time 0
    duration_s: float         # data time of the last message
    connections: dict         # role -> topic
    counts: dict              # topic -> message count

    @property
    def span_s(self):
        """Replayable data span: up to and including the last message."""
        return self.duration_s + 1e-9


def is_bag(path):
    path = Path(path)
    return path.is_dir() and (path / 'metadata.yaml').is_file()


def _reader(path):
    from muse_common.rosbag_types import muse_typestore
    from rosbags.highlevel import AnyReader, AnyReaderError

    try:
        reader = AnyReader([Path(path)], default_typestore=muse_typestore())
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise BagFormatError(f'{path}: not a readable rosbag2 ({exc})') from exc
    return reader


def _roles(path, connections):
    """role -> connection, found by type and the relative topic name (any namespace)."""
    from muse_common import topics

    suffixes = topic_names('')   # '/imu' ...: the name itself, or under any namespace
    found = {}
    for role, msgtype in _ROLE_TYPES.items():
        matches = [c for c in connections
                   if c.msgtype == msgtype and c.topic.endswith(suffixes[role])]
        if len(matches) > 1:
            raise BagFormatError(f'{path}: several {role} topics '
                                 f'({", ".join(c.topic for c in matches)}); expected one')
        if matches:
            found[role] = matches[0]
    if 'imu' not in found:
        have = ', '.join(f'{c.topic} [{c.msgtype}]' for c in connections) or 'none'
        raise BagFormatError(f"{path}: no '{topics.IMU}' topic of type {IMU_TYPE} (topics: {have}); "
                             'expected a bag written by muse_dalia_to_bag')
    return found


def bag_info(path):
    """Check that ``path`` is a replayable bag and describe it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{path}: no such bag folder')
    if not is_bag(path):
        raise BagFormatError(f'{path}: not a rosbag2 folder (no metadata.yaml)')
    reader = _reader(path)
    try:
        roles = _roles(path, reader.connections)
        counts = {c.topic: c.msgcount for c in roles.values()}
        if not counts[roles['imu'].topic]:
            raise BagFormatError(f'{path}: topic {roles["imu"].topic} holds no messages')
        start_ns, end_ns = reader.start_time, reader.end_time
    finally:
        reader.close()
    return BagInfo(path, start_ns, (end_ns - start_ns) * 1e-9,
                   {role: c.topic for role, c in roles.items()}, counts)


def bag_events(info, start_offset_s=0.0, duration_s=0.0):
    """The replay timeline stored in a bag (see :func:`bag_info`), over the same span rules
    as :func:`muse_sensors.replay.subject_events`; data time 0 is the bag's first message."""
    t_start, t_end = replay_span(info.span_s, start_offset_s, duration_s, info.path)
    reader = _reader(info.path)
    try:
        roles = _roles(info.path, reader.connections)
        profile = roles.get('user_profile')
        if profile is not None and t_start > 0:
            # The latched profile belongs to every replay, wherever it starts.
            for connection, timestamp, raw in reader.messages(connections=[profile]):
                yield _to_event(reader, connection, raw, t_start, info.start_ns)
                break
        wanted = [c for role, c in roles.items() if not (role == 'user_profile' and t_start > 0)]
        start_ns = info.start_ns + int(round(t_start * 1e9))
        stop_ns = info.start_ns + int(round(t_end * 1e9)) + 1
        # As in a subject's timeline, accelerometer samples end before an explicit end time,
        # while a heart-rate window or label falling exactly on it still counts.
        imu_stop_ns = stop_ns - 1 if duration_s > 0 else stop_ns
        events = (_to_event(reader, connection, raw, (timestamp - info.start_ns) * 1e-9,
                            info.start_ns)
                  for connection, timestamp, raw in reader.messages(
                      connections=wanted, start=start_ns, stop=stop_ns)
                  if timestamp < imu_stop_ns or connection.msgtype != IMU_TYPE)
        # Storage order is log-time order; re-sort equal times into the replay order.
        yield from _sorted_runs(events)
    finally:
        reader.close()


def _sorted_runs(events):
    """Re-order only within equal timestamps (the storage already sorts by time)."""
    batch = []
    for event in events:
        if batch and event.t != batch[0].t:
            yield from sorted(batch, key=event_key)
            batch = []
        batch.append(event)
    yield from sorted(batch, key=event_key)


def _to_event(reader, connection, raw, t, start_ns):
    msg = reader.deserialize(raw, connection.msgtype)
    base = start_ns * 1e-9
    if connection.msgtype == IMU_TYPE:
        a = msg.linear_acceleration
        return ImuSample(t, (a.x, a.y, a.z))
    if connection.msgtype == HEART_RATE_TYPE:
        from muse_common.stamps import to_sec

        return HeartRateSample(t, float(msg.bpm), float(msg.confidence), msg.source,
                               to_sec(msg.header.stamp) - base)
    if connection.msgtype == PROFILE_TYPE:
        return ProfileRecord(t, msg.user_id, Profile.from_msg(msg))
    return ActivityLabel(t, int(msg.class_id), float(msg.heart_rate_bpm))


# ------------------------------------------------------------------------------- CLI

def main(argv=None):
    """CLI ``muse_dalia_to_bag SUBJECT.pkl OUT_DIR --storage mcap|sqlite3``."""
    parser = argparse.ArgumentParser(
        prog='muse_dalia_to_bag',
        description='Convert a PPG-DaLiA subject pickle into a rosbag2 with the topics and '
                    'types of the live sensor_replay node (play it with `ros2 bag play`).')
    parser.add_argument('subject', type=Path, help='PPG-DaLiA subject pickle (S<i>.pkl)')
    parser.add_argument('out_dir', type=Path, help='bag folder to create (must not exist)')
    parser.add_argument('--storage', choices=STORAGES, default='mcap',
                        help='rosbag2 storage plugin (default mcap)')
    parser.add_argument('--namespace', default=DEFAULT_NAMESPACE,
                        help=f'topic namespace (default {DEFAULT_NAMESPACE})')
    parser.add_argument('--start-time', type=float, default=None, metavar='EPOCH_S',
                        help='wall time of data time 0 [s since the epoch] (default: now)')
    parser.add_argument('--frame-id', default='wrist', help="header frame_id (default 'wrist')")
    args = parser.parse_args(argv)
    try:
        subject = dalia.load_subject(args.subject)
        result = write_bag(subject, args.out_dir, args.storage, args.namespace, args.start_time,
                           args.frame_id, progress=True)
    except (OSError, ValueError) as exc:   # DaliaFormatError is a ValueError
        print(f'muse_dalia_to_bag: error: {exc}', file=sys.stderr)
        return 1
    total = sum(result.counts.values())
    print(f'{result.path}: {total} messages ({", ".join(f"{t} {n}" for t, n in result.counts.items())}); '
          f'{result.data_s:.0f} s of data in {result.wall_s:.1f} s '
          f'({result.data_s / result.wall_s:.0f}x real time)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
