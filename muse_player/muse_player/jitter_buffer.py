"""Jitter buffer: puts fragments back in (prompt_id, seq) order and decides what is playable.

No ROS and no clock of its own: every call takes ``now`` (monotonic seconds), so tests drive
time by hand. The rules (README "Jitter buffer"):

* a *stream* starts at a fragment flagged ``is_first`` (or at seq 0 of a new prompt) and runs
  on in seq order; fragments of one stream are sample-continuous;
* the newest stream start that has arrived supersedes the stream being played: the mixer asks
  :meth:`candidate` every block and calls :meth:`start` once the candidate holds enough audio;
* fragments of prompts older than the current one, and seqs the play position has passed,
  are dropped on arrival and reported (late or duplicate);
* a missing seq is waited for while the audio before it lasts, and for at most
  ``max_wait_missing_s`` after the first fragment behind it arrived; then it is skipped;
* a newer prompt whose first fragment is not ``is_first`` *continues* the playing one (the
  server retargeted its stream, protocol flag CONTINUES): it is offered as a candidate like any
  start (``Candidate.continues``), and :meth:`continuation` finds it when the playing prompt's
  last fragment is taken, so the mixer can splice it on sample-continuously.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from muse_player.events import EventKind, PlayerEvent

# A missing range this long would flood the event topic; beyond it only the count grows.
MAX_MISSING_EVENTS_PER_GAP = 64


class FragmentError(ValueError):
    """A fragment's fields are not usable (names the field and what was expected)."""


@dataclass(eq=False)
class Fragment:
    """One decoded fragment: float32 audio ``(frames, channels)`` at ``sample_rate``."""

    prompt_id: int
    seq: int
    audio: np.ndarray
    sample_rate: int
    is_first: bool = False
    is_last: bool = False
    prompt_stamp: float | None = None  # MusicPrompt stamp [s]; None = unknown
    replaces: int = 0                  # a forked continuation's first fragment: it starts this
                                       # many frames before the previous prompt's end (Mixer)
    arrival: float = 0.0               # set by JitterBuffer.push [monotonic s]

    def __post_init__(self):
        for name in ('prompt_id', 'seq', 'sample_rate', 'replaces'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise FragmentError(f'{name} is {value!r}; expected a non-negative integer')
        if self.sample_rate == 0:
            raise FragmentError('sample_rate is 0; expected a rate in Hz > 0')
        audio = self.audio
        if not isinstance(audio, np.ndarray) or audio.ndim != 2 or audio.dtype != np.float32:
            raise FragmentError(
                f'audio of fragment ({self.prompt_id}, {self.seq}) is '
                f'{getattr(audio, "dtype", type(audio).__name__)} '
                f'{getattr(audio, "shape", "")}; expected float32 (frames, channels)')
        if audio.shape[1] < 1:
            raise FragmentError('audio has 0 channels; expected at least 1')

    @property
    def channels(self):
        return self.audio.shape[1]

    @property
    def duration_s(self):
        return self.audio.shape[0] / self.sample_rate


class StreamKey(NamedTuple):
    """Where a stream starts; ordering of keys is the ordering of streams."""

    prompt_id: int
    seq: int


@dataclass
class Candidate:
    """The newest stream start the buffer knows of, other than the one playing."""

    key: StreamKey
    ready_s: float = 0.0    # contiguous audio from key.seq on [s]
    complete: bool = False  # that contiguous run ends the stream (is_last)
    waiting: bool = False   # its first seq has not arrived yet and is still waited for
    continues: bool = False  # a new prompt continuing the playing one (not is_first)


class _PromptRecord:
    """How far a prompt has been released, and which seqs were skipped (never played)."""

    __slots__ = ('next_seq', 'skipped')

    def __init__(self):
        self.next_seq = 0
        self.skipped = []  # half-open ranges [a, b)

    def skip(self, first, end):
        if end > first:
            self.skipped.append((first, end))

    def was_skipped(self, seq):
        return any(a <= seq < b for a, b in self.skipped)


class JitterBuffer:
    """Holds fragments not yet played, ordered by (prompt_id, seq); see the module doc."""

    def __init__(self, max_wait_missing_s=0.5, max_pending_fragments=4096, history=64):
        self.max_wait_missing_s = max_wait_missing_s
        self.max_pending_fragments = int(max_pending_fragments)
        self._history = int(history)
        self._pending = {}   # prompt_id -> {seq: Fragment}
        self._records = {}   # prompt_id -> _PromptRecord, for the current and recent prompts
        self._current = None
        self._segment_start = 0
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.missing = 0
        self.overflow = 0
        self.superseded_fragments = 0

    @property
    def max_wait_missing_s(self):
        return self._max_wait

    @max_wait_missing_s.setter
    def max_wait_missing_s(self, value):
        if not value >= 0:
            raise ValueError(f'max_wait_missing_s is {value!r}; expected seconds >= 0')
        self._max_wait = float(value)

    @property
    def current_prompt(self):
        return self._current

    @property
    def pending_fragments(self):
        return sum(len(frags) for frags in self._pending.values())

    def pending_seconds(self, prompt_id=None):
        prompts = self._pending if prompt_id is None else [prompt_id]
        return sum(f.duration_s for p in prompts for f in self._pending.get(p, {}).values())

    def push(self, fragment, now):
        """Store a fragment; return the events of dropping it (empty when it was stored)."""
        if not isinstance(fragment, Fragment):
            raise FragmentError(f'expected a Fragment, got {type(fragment).__name__}')
        fragment.arrival = now
        self.received += 1
        prompt, seq = fragment.prompt_id, fragment.seq
        record = self._records.get(prompt)
        if self._current is not None and prompt < self._current:
            played_before = record is not None and seq < record.next_seq \
                and not record.was_skipped(seq)
            return [self._dropped(fragment, duplicate=played_before)]
        if record is not None and seq < record.next_seq:
            return [self._dropped(fragment, duplicate=not record.was_skipped(seq))]
        frags = self._pending.setdefault(prompt, {})
        if seq in frags:
            return [self._dropped(fragment, duplicate=True)]
        if self.pending_fragments >= self.max_pending_fragments:
            self.overflow += 1
            if not frags:
                del self._pending[prompt]
            return []
        frags[seq] = fragment
        return []

    def _dropped(self, fragment, duplicate):
        if duplicate:
            self.duplicates += 1
            kind = EventKind.FRAGMENT_DUPLICATE
        else:
            self.late += 1
            kind = EventKind.FRAGMENT_LATE
        return PlayerEvent(kind, fragment.prompt_id, fragment.seq)

    def candidate(self, now):
        """The newest stream start other than the playing segment, or None."""
        best = None
        for prompt, frags in self._pending.items():
            if not frags:
                continue
            if prompt == self._current:
                starts = [s for s, f in frags.items()
                          if f.is_first and s > self._segment_start]
                if not starts:
                    continue
                found = Candidate(StreamKey(prompt, max(starts)))
            else:
                found = self._new_prompt_start(prompt, frags, now)
            if best is None or found.key > best.key:
                best = found
        if best is not None and not best.waiting:
            best.ready_s, best.complete = self.contiguous(best.key)
        return best

    def _new_prompt_start(self, prompt, frags, now):
        starts = [s for s, f in frags.items() if f.is_first]
        if starts:
            return Candidate(StreamKey(prompt, max(starts)))
        if 0 in frags:
            return Candidate(StreamKey(prompt, 0), continues=True)
        # Its first fragment is missing: wait for it as for any other gap, then start later.
        first_arrival = min(f.arrival for f in frags.values())
        if now - first_arrival >= self._max_wait:
            return Candidate(StreamKey(prompt, min(frags)))
        return Candidate(StreamKey(prompt, 0), waiting=True)

    def continuation(self):
        """The start of the next prompt if it continues the playing one (its first fragment,
        not ``is_first``, has arrived), else None."""
        newer = [p for p in self._pending if self._current is not None and p > self._current
                 and self._pending[p]]
        if not newer:
            return None
        prompt = min(newer)
        frags = self._pending[prompt]
        first = min(frags)
        if frags[first].is_first or first != 0:
            return None
        return StreamKey(prompt, first)

    def fragment(self, key):
        """The pending fragment at ``key`` (KeyError if it is not there)."""
        return self._pending[key.prompt_id][key.seq]

    def contiguous(self, key):
        """Seconds of gap-free audio from ``key`` on, and whether that run ends the stream."""
        frags = self._pending.get(key.prompt_id, {})
        seq, total = key.seq, 0.0
        while seq in frags:
            fragment = frags[seq]
            if fragment.is_first and seq != key.seq:
                break
            total += fragment.duration_s
            if fragment.is_last:
                return total, True
            seq += 1
        return total, False

    def start(self, key, now):
        """Make ``key`` the playing stream. Everything older is dropped; seqs jumped over are
        reported missing (never received) and remembered as skipped."""
        events = []
        for prompt in sorted(self._pending):
            if prompt >= key.prompt_id:
                break
            dropped = self._pending.pop(prompt)
            self.superseded_fragments += len(dropped)
            if prompt != self._current and prompt not in self._records:
                events.append(PlayerEvent(EventKind.PROMPT_SUPERSEDED, prompt))
        record = self._records.setdefault(key.prompt_id, _PromptRecord())
        frags = self._pending.get(key.prompt_id, {})
        received = [s for s in frags if record.next_seq <= s < key.seq]
        for seq in received:
            del frags[seq]
        self.superseded_fragments += len(received)
        events += self._skip(key.prompt_id, record, key.seq, set(received))
        self._current = key.prompt_id
        self._segment_start = key.seq
        self._forget_old_prompts()
        return events

    def pop(self, now, allow_skip=True):
        """The next fragment of the playing stream, or None (not there yet, or the stream
        ends at a restart that :meth:`candidate` offers). With ``allow_skip`` a missing seq
        whose wait is over is skipped. Returns ``(fragment or None, events)``."""
        if self._current is None:
            return None, []
        frags = self._pending.get(self._current)
        if not frags:
            return None, []
        record = self._records[self._current]
        events = []
        seq = record.next_seq
        if seq not in frags:
            if not allow_skip:
                return None, []
            # Everything pending lies behind the gap; the gap is known since the first arrived.
            if now - min(f.arrival for f in frags.values()) < self._max_wait:
                return None, []
            seq = min(frags)
            events = self._skip(self._current, record, seq, set())
        fragment = frags[seq]
        if fragment.is_first and seq != self._segment_start:
            return None, events
        del frags[seq]
        if not frags:
            del self._pending[self._current]
        record.next_seq = seq + 1
        return fragment, events

    def _skip(self, prompt, record, to_seq, received):
        first = record.next_seq
        if to_seq <= first:
            return []
        record.skip(first, to_seq)
        record.next_seq = to_seq
        self.missing += (to_seq - first) - len(received)
        events = []
        for seq in range(first, to_seq):
            if len(events) == MAX_MISSING_EVENTS_PER_GAP:
                break
            if seq not in received:
                events.append(PlayerEvent(EventKind.FRAGMENT_MISSING, prompt, seq))
        return events

    def _forget_old_prompts(self):
        if len(self._records) > self._history:
            for prompt in sorted(self._records)[:len(self._records) - self._history]:
                del self._records[prompt]

    def stats(self):
        return {
            'received': self.received, 'duplicates': self.duplicates, 'late': self.late,
            'missing': self.missing, 'overflow': self.overflow,
            'superseded_fragments': self.superseded_fragments,
            'pending_fragments': self.pending_fragments,
        }
