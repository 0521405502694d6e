"""QoS profiles by role (ARCHITECTURE.md, "Messages").

Use them with ``QoSOverridingOptions.with_default_policies()`` so a parameter YAML can
override depth/reliability per topic without code changes.
"""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

# Sensor streams: a late sample is worthless, so best effort, keep last. Depth covers one
# second of 32 Hz IMU so a busy subscriber loses nothing on loopback.
SENSOR = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=64,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability)

# State that a late joiner must still get (profile, current prompt): reliable, latched.
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Discrete events that must all arrive (activity estimates, overrides, playback events).
EVENTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=50,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

# Audio: every fragment matters and bursts happen at prompt switches, so reliable and deep
# (200 fragments is ~100 s of audio at 0.5 s fragments).
AUDIO = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=200,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
