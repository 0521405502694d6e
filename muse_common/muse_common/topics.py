"""Topic names of the MUSE graph.

Names are relative, so the launch file's namespace (``muse`` by default) prefixes them:
``imu`` becomes ``/muse/imu``. ``/diagnostics`` and ``/clock`` are absolute by ROS convention.
"""

IMU = 'imu'                                 # sensor_msgs/Imu, m/s^2, 32 Hz
HEART_RATE = 'heart_rate'                   # muse_msgs/HeartRate, every 2 s
USER_PROFILE = 'user_profile'               # muse_msgs/UserProfile, latched
GROUND_TRUTH_ACTIVITY = 'activity/ground_truth'  # muse_msgs/ActivityEstimate, one-hot, on change
ACTIVITY = 'activity'                       # muse_msgs/ActivityEstimate, every stride (2 s)
PROMPT = 'prompt'                           # muse_msgs/MusicPrompt, latched, on change
AUDIO = 'audio'                             # muse_msgs/AudioFragment
PLAYBACK = 'playback'                       # muse_msgs/PlaybackEvent
DIAGNOSTICS = '/diagnostics'                # diagnostic_msgs/DiagnosticArray
CLOCK = '/clock'                            # rosgraph_msgs/Clock (replay with publish_clock)

# Services (private to their node: /muse/prompt_builder/override_prompt).
OVERRIDE_PROMPT = '~/override_prompt'       # muse_msgs/srv/OverridePrompt
