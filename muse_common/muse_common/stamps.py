"""Conversions between builtin_interfaces/Time and float seconds.

``to_sec`` reads any message with ``sec``/``nanosec`` (rclpy's or a rosbags one), so plain
modules such as the session report use it without ROS; only ``from_sec`` makes an rclpy Time.
"""


def to_sec(stamp):
    return stamp.sec + stamp.nanosec * 1e-9


def from_sec(seconds):
    from builtin_interfaces.msg import Time   # here, so that to_sec needs no ROS message
    sec = int(seconds // 1)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)
