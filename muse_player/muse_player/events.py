"""What the player reports (the plain-Python twin of muse_msgs/PlaybackEvent)."""

import enum
from dataclasses import dataclass


class EventKind(enum.IntEnum):
    """Values equal PlaybackEvent's constants (a test checks), so the node maps them 1:1."""

    PROMPT_AUDIBLE = 0      # the first sample of prompt_id reached the sink
    UNDERRUN = 1            # the buffer ran dry; duration_s of fill were played
    FRAGMENT_LATE = 2       # arrived after its play-out point (or for a superseded prompt)
    FRAGMENT_DUPLICATE = 3  # arrived twice; the copy was dropped
    FRAGMENT_MISSING = 4    # a gap in seq was skipped after waiting for it
    PROMPT_SUPERSEDED = 5   # prompt_id was faded out (or dropped unplayed) for a newer prompt


@dataclass
class PlayerEvent:
    kind: EventKind
    prompt_id: int
    seq: int = 0
    # Position in the output (= recorded) audio, in output frames. For events about arrivals
    # (late, duplicate) it is the play position when the fragment arrived.
    frame: int = 0
    duration_s: float = 0.0
    # PROMPT_AUDIBLE only: MusicPrompt stamp of the prompt [s, the stamp's clock]; None = unknown.
    prompt_stamp: float | None = None
    # Filled in by the Player once the block holding `frame` was handed to the sink.
    wall_time: float | None = None          # when `frame` reached the sink [s, time_fn's clock]
    stream_time_s: float | None = None      # frame / output rate
    latency_s: float | None = None          # PROMPT_AUDIBLE: audible time - prompt_stamp
