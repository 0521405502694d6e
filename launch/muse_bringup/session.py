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
