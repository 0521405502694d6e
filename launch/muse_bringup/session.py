"""Where a session's outputs live, and which nodes make up the graph.

Shared by the runner, the launch file, the session recorder and the report, so that all of
them agree on names without repeating them.
"""

import datetime
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = 'muse'

# (package, executable = node name), in lifecycle order (muse_bringup.lifecycle_plan): the
# recorder is configured first so it hears everything, the replay activated last so no sensor
# data is published before its consumers are active; coming down, the reverse.
GRAPH_NODES = (
    ('muse_bringup', 'session_recorder'),
    ('muse_player', 'audio_player'),
    ('muse_cloud_bridge', 'cloud_bridge'),
    ('muse_prompt', 'prompt_builder'),
    ('muse_encoder', 'activity_encoder'),
    ('muse_sensors', 'sensor_replay'),
)

SERVER_EXECUTABLE = ('muse_server', 'muse_music_server')

# Nodes started again (after RESPAWN_DELAY_S, at most MAX_RESPAWNS times) when they crash, by
# the launch file (respawn) and the runner alike; the lifecycle manager configures and
# activates the new process. Only those whose restart the rest of the graph absorbs: a new
# player records a second segment (session_1.wav) and plays on from the next fragment; a new
# encoder refills its 8 s window. Not the prompt builder or the bridge: a new one numbers
# prompts / fragments from the start again, which the player drops as already played (a crash
# of those ends the session with its exit code), nor the replay (the data clock) or the
# recorder (the bag).
RESPAWNED_NODES = ('audio_player', 'activity_encoder')
RESPAWN_DELAY_S = 2.0
MAX_RESPAWNS = 3

# Seconds a node may take to exit after SIGINT before it is terminated; the recorder may still
# have to close its bag then (when the lifecycle manager could not clean it up first).
STOP_TIMEOUT_S = {'session_recorder': 60}


@dataclass(frozen=True)
class SessionPaths:
    """The files of one session folder."""

    root: Path

    @property
    def wav(self):
        return self.root / 'session.wav'

    @property
    def bag(self):
        return self.root / 'session_bag'

    @property
    def timeline_png(self):
        return self.root / 'timeline.png'

    @property
    def metrics_json(self):
        return self.root / 'metrics.json'

    @property
    def logs(self):
        return self.root / 'logs'

    @property
    def subject_dir(self):
        return self.root / 'subject'


def new_session_dir(output_dir, now=None):
    """A fresh, timestamped folder under ``output_dir`` (never reuses an existing one)."""
    now = now or datetime.datetime.now()
    base = Path(output_dir).expanduser().resolve() / now.strftime('session-%Y%m%d-%H%M%S')
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f'{base.name}-{n}')
    candidate.mkdir(parents=True)
    return SessionPaths(candidate)
