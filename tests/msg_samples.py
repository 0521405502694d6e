"""One fully populated sample of every muse_msgs type, used by the DDS round-trip test.

Run as a script it publishes the samples (reliable, transient-local) until interrupted, so a
subscriber in another process can compare what it receives field by field.
"""

import math
import sys

from builtin_interfaces.msg import Time
from muse_msgs.msg import ActivityEstimate, AudioFragment, HeartRate, MusicPrompt, UserProfile
from std_msgs.msg import Header

TOPIC_PREFIX = '/muse_test/samples/'


def _header(sec, frame='wrist'):
    return Header(stamp=Time(sec=sec, nanosec=123_456_789), frame_id=frame)


def sample_messages():
    """Return {type name: message} with every field set to a non-default value."""
    hr = HeartRate(header=_header(10), bpm=72.5, confidence=0.8,
                   source=HeartRate.SOURCE_ECG_REFERENCE)
    profile = UserProfile(header=_header(11, ''), user_id='S7', age=34,
                          sex=UserProfile.SEX_FEMALE, height_cm=182.0, weight_kg=78.0,
                          skin_type=3, sport=5)
    activity = ActivityEstimate(
        header=_header(12), class_id=ActivityEstimate.WALKING, label='walking', confidence=0.9,
        raw_class_id=ActivityEstimate.STAIRS,
        probabilities=[0.01, 0.01, 0.05, 0.0, 0.01, 0.0, 0.01, 0.9, 0.01],
        embedding=[float(i) / 7 for i in range(64)],
        window_start=Time(sec=4, nanosec=5), heart_rate_bpm=101.0)
    prompt = MusicPrompt(
        header=_header(13, ''), prompt_id=42,
        text='Chill techno music. Current activity: Walking. Héart rate is 64 bpm.',
        activity='walking', activity_class_id=ActivityEstimate.WALKING, heart_rate_bpm=64.0,
        target_bpm=118.0, energy=0.6, style='chill_techno',
        reason=MusicPrompt.REASON_ACTIVITY_CHANGE, trigger_stamp=Time(sec=12, nanosec=6))
    fragment = AudioFragment(
        header=_header(15, ''), prompt_id=42, seq=3, sample_rate=32000, channels=1,
        encoding=AudioFragment.ENCODING_PCM_S16LE, data=bytes(range(256)) * 250,
        is_first=False, is_last=True, prompt_stamp=Time(sec=13, nanosec=1),
        generation_started=Time(sec=14, nanosec=2), generation_finished=Time(sec=14, nanosec=900))
    return {type(m).__name__: m for m in (hr, profile, activity, prompt, fragment)}


def assert_same(expected, received, path=''):
    """Compare two ROS messages field by field (floats to float32 precision)."""
    for field in expected.get_fields_and_field_types():
        a, b = getattr(expected, field), getattr(received, field)
        where = f'{path}{field}'
        if hasattr(a, 'get_fields_and_field_types'):
            assert_same(a, b, where + '.')
        elif isinstance(a, float):
            assert math.isclose(a, b, rel_tol=1e-6), f'{where}: {a} != {b}'
        elif hasattr(a, '__len__') and not isinstance(a, str):
            assert len(a) == len(b), f'{where}: length {len(a)} != {len(b)}'
            for i, (x, y) in enumerate(zip(a, b)):
                assert math.isclose(x, y, rel_tol=1e-6), f'{where}[{i}]: {x} != {y}'
        else:
            assert a == b, f'{where}: {a!r} != {b!r}'


def latched_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def main():
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init()
    node = rclpy.create_node('muse_msg_sample_publisher')
    publishers = []
    for name, msg in sample_messages().items():
        pub = node.create_publisher(type(msg), TOPIC_PREFIX + name, latched_qos())
        pub.publish(msg)
        publishers.append(pub)
    print('published', ', '.join(sample_messages()), flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
